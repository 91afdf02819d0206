"""Multi-label records (`--task=multilabel`): a list of labels a record, a multi-hot vector a label.

A csv/tsv label field holds the labels joined by `--label_delimiter` ("sports|politics");
a jsonl label is a JSON list (["sports", "politics"]) or such a joined string. Each
record's labels become a tuple of names (`Raw.label`), checked here for an empty list
and for a label given twice; the LabelMap then checks each name. Through tf.data the
label is `<float32>[C]`: 1.0 for every label of the record, 0.0 for the others.
"""

import dataclasses

import numpy as np

from tfagent.data.records import BadRecord, canonical_label
from tfagent.errors import ConfigError, DataError

# Sources whose records carry label lists; dir: and embedded: have one class a folder/file.
LIST_SOURCES = ("csv", "tsv", "jsonl", "tfrecord", "tfds")  # tfds: a Sequence(ClassLabel).


def is_multilabel(data_cfg) -> bool:
  return getattr(data_cfg, "task", "multiclass") == "multilabel"


@dataclasses.dataclass(frozen=True)
class LabelList:
  """Reads a record's label field as a tuple of labels (records.read_label calls `parse`)."""
  delimiter: str = "|"
  allow_empty: bool = False

  def parse(self, where: str, field: str, value):
    """`value` (a joined string or a JSON list) as a tuple of labels, or a BadRecord."""
    if value is None:
      return BadRecord("missing_field", where, f"missing field {field!r}; expected a "
                       "list of labels in every record (an empty one with "
                       "--allow_empty_labels).")
    if isinstance(value, str):
      items = [] if not value.strip() else value.split(self.delimiter)
    elif isinstance(value, list):
      items = value
    else:
      return BadRecord("malformed", where, f"label field {field!r} is {value!r}; expected "
                       f"labels joined by {self.delimiter!r} or a JSON list of them.")
    labels = []
    for item in items:
      label = canonical_label(where, field, item)
      if isinstance(label, BadRecord):
        return BadRecord(label.reason, where, f"in the label list {value!r}: {label.message}")
      labels.append(label)
    return self.check(where, field, value, tuple(labels))

  def check(self, where: str, field: str, value, labels: tuple):
    """An empty list (unless allowed) or a label given twice is a BadRecord."""
    if not labels and not self.allow_empty:
      return BadRecord("empty_label_list", where, f"empty label list in field {field!r}; "
                       "expected one label at least (pass --allow_empty_labels to keep "
                       "records that no label applies to).")
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
      return BadRecord("duplicate_label", where, f"label {twice[0]!r} appears more than once "
                       f"in the label list {value!r} of field {field!r}; give each label once.")
    return labels


JOINERS = (",", ";", "|", "/", "\t")  # Delimiters a file may have used instead.


def check_joined(labels, data_cfg, where: str) -> None:
  """Fails when a learned label is other labels joined by another delimiter than
  --label_delimiter ('sports,health' beside 'sports' and 'health'): a class of its own,
  silently, where each of its parts was meant."""
  names = set(labels)
  for label in sorted(names):
    for joiner in JOINERS:
      parts = [p.strip() for p in label.split(joiner)]
      if joiner != data_cfg.label_delimiter and len(parts) > 1 and all(p in names
                                                                       for p in parts):
        raise DataError(f"{where}: label {label!r} is the labels {parts} joined by {joiner!r}, "
                        f"but --label_delimiter={data_cfg.label_delimiter!r}: it would train "
                        f"as a class of its own. Pass --label_delimiter={joiner!r} if the "
                        "file joins labels so.")


def label_list(data_cfg):
  """The LabelList of the configured task; None for multiclass (one label a record)."""
  if not is_multilabel(data_cfg):
    return None
  if not data_cfg.label_delimiter:
    raise ConfigError("--label_delimiter is empty; give the character that separates the "
                      "labels in a field, e.g. '|'.")
  return LabelList(data_cfg.label_delimiter, data_cfg.allow_empty_labels)


def check_source(kind: str, data_cfg) -> None:
  """Fails when a multilabel task is given a source whose records hold one label each."""
  if is_multilabel(data_cfg) and kind not in LIST_SOURCES:
    raise ConfigError(f"--task=multilabel: --dataset={data_cfg.dataset} gives one label a "
                      f"record; label lists come from {', '.join(k + ':' for k in LIST_SOURCES)}"
                      " (tfds: a Sequence(ClassLabel) feature).")


def multi_hot(ids, num_classes: int) -> list:
  """`<float32>[C]` as a list: 1.0 at each id."""
  out = [0.0] * num_classes
  for i in ids:
    out[i] = 1.0
  return out


def label_counts(labels) -> dict:
  """Examples per label id of multi-hot `labels` `[n, C]`."""
  sums = np.asarray(labels, np.float32).sum(axis=0) if len(labels) else []
  return {i: int(n) for i, n in enumerate(sums)}
