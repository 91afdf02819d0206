"""Errors that the entry points turn into one clear message instead of a stack trace."""

import re


class TfagentError(Exception):
  """A problem the user can fix: bad input data, a bad flag, an unusable path."""


class DataError(TfagentError):
  """Input data is missing, empty or malformed; the message names file and line."""


class ConfigError(TfagentError):
  """A flag or config value is invalid; the message names it and what is valid."""


# Begins the message of a check inside a tf.data graph (tf.debugging.Assert), which can only
# raise TensorFlow's InvalidArgumentError: cli.run_main shows such an error as one line.
DATA_ERROR_MARK = "tfagent data error:"
MISSING_FEATURE = re.compile(r"Feature: (\w+) \(data type: (\w+)\) is required but could not "
                             r"be found")


def graph_data_error(error: Exception) -> str:
  """The message of a DATA_ERROR_MARK check in `error`'s text, with the value that failed it
  (`got -1`), or "" when it holds none."""
  text = str(error)
  start = text.find(DATA_ERROR_MARK)
  missing = MISSING_FEATURE.search(text)
  if start < 0 and missing:  # tf.io.parse_example's own check, on a TFRecord of another tool.
    return (f"a TFRecord record lacks the feature {missing.group(1)!r} ({missing.group(2)}) "
            "in --dataset; tfagent reads shards written by `tfagent convert` (features text, "
            "label, and text_pair for sentence pairs).")
  if start < 0:
    return ""
  end = text.find("]", start)
  message = text[start + len(DATA_ERROR_MARK):end if end > 0 else None].strip()
  value = re.search(r"\[x \([^)]*\) = \] \[([^\]]*)\]", text[start:])
  return f"{message} (got {value.group(1)})" if value else message
