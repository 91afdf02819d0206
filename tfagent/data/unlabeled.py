"""Unlabelled texts: `--unlabeled` and `--distill_unlabeled` sources, read as texts only.

A source is `KIND:ARG` of any --dataset kind (csv, tsv, jsonl, dir, tfds, tfrecord,
embedded); labels, if the source has them, are not used. csv/tsv/jsonl need only
--text_field; dir:PATH reads every file under PATH, one text a file; embedded and tfrecord
give all their records (every split); TFDS its unlabelled split where it has one
(imdb_reviews: `unsupervised`), else its train split. Never transductive: a text that is
also a validation or test text is dropped (training on it would flatter their figures), and
counted.
"""

import dataclasses
import functools

import tensorflow as tf

from tfagent import fileio
from tfagent.data import records, sources, tfds_source
from tfagent.errors import ConfigError, DataError, TfagentError

FILE_KINDS = ("csv", "tsv", "jsonl")


def read_file_texts(kind: str, path: str, data_cfg) -> list:
  """The texts of a csv/tsv/jsonl file (the text field only: a label, if any, is not read)."""
  if kind == "jsonl":
    return records.read_jsonl(path, (data_cfg.text_field,))
  return records.read_delimited(path, "," if kind == "csv" else "\t", (data_cfg.text_field,))


def unlabeled_records(source: str, data_cfg):
  """Yields the texts (or BadRecords) of an unlabelled source `KIND:ARG`."""
  kind, _, arg = source.partition(":")
  if kind in FILE_KINDS + ("dir",) and not tf.io.gfile.exists(arg):
    raise ConfigError(f"{arg} does not exist")
  if kind in FILE_KINDS:
    yield from (r if isinstance(r, records.BadRecord) else r.text
                for r in read_file_texts(kind, arg, data_cfg))
  elif kind == "dir":  # Every file under the folder, at any depth, one text a file.
    yield from (r if isinstance(r, records.BadRecord) else r.text
                for r in records.read_class_files({"": records.files_under(arg)}))
  elif kind == "tfds":  # Its unlabelled split (imdb_reviews: unsupervised), else train.
    yield from (r if isinstance(r, records.BadRecord) else r.text
                for r in tfds_source.unlabeled_records(arg, data_cfg))
  elif kind in sources.SOURCES:  # Every split (its own, not this run's); labels ignored.
    own = dataclasses.replace(data_cfg, dataset=source, class_names="", test_path="", folds=0,
                              max_train_examples=0, group_field="")
    splits, _, _ = sources.SOURCES[kind](arg, own)
    for split in sources.SPLITS:
      for text, _ in sources.as_dataset(splits[split]).as_numpy_iterator():
        yield text.decode("utf-8")
  else:
    raise ConfigError(f"unknown source kind {kind!r}; valid kinds: "
                      f"{', '.join(sorted(sources.SOURCES))} (as KIND:ARG)")


def comparable(text: str) -> str:
  """A text as held-out texts are compared: whitespace runs made one space
  (sources.normalize_whitespace, as dedup compares texts) and case folded (the models
  lowercase what they read, so an upper-cased copy is the same text to them)."""
  return sources.normalize_whitespace(text).casefold()


def held_out_texts(splits, data_cfg) -> set:
  """The validation and test texts, which no unlabelled text may be, as `comparable` gives
  them: a copy ending in a newline (a `dir:` file), spaced or cased otherwise is caught too.

  With --noread_test (tfagent tune's trials) the test texts are read here all the same,
  for this alone: a trial's export is scored on test in the end, so it must not have
  learned from them either.
  """
  test = splits["test"]
  if not data_cfg.read_test:
    test = sources.load_splits(dataclasses.replace(data_cfg, read_test=True))[0]["test"]
  return {comparable(t.decode("utf-8"))
          for split in (splits["validation"], test) for t, _ in split.as_numpy_iterator()}


def held_out_once(splits, data_cfg):
  """held_out_texts as a call that reads them at its first call only: --unlabeled and
  --distill_unlabeled share one read (under --noread_test, one read of the test file)."""
  return functools.cache(lambda: held_out_texts(splits, data_cfg))


def unlabeled_texts(flag: str, source: str, data_cfg, held_out: set) -> tuple:
  """`(texts, report)` of the source given as `--FLAG=SOURCE`, without `held_out` texts.

  Any error (a missing file, a missing --text_field, no text left) is one ConfigError
  naming the flag and the source.
  """
  given = f"--{flag}={source}"
  texts, bad, dropped = [], 0, 0
  try:
    for record in unlabeled_records(source, data_cfg):
      if isinstance(record, records.BadRecord):
        if data_cfg.on_bad_record != "skip":
          raise DataError(f"{record} (--on_bad_record=skip skips such records)")
        bad += 1
      elif comparable(record) in held_out:
        dropped += 1
      else:
        texts.append(record)
  except TfagentError as e:
    raise ConfigError(f"{given}: {e}") from None
  if not texts:
    raise ConfigError(f"{given}: no texts to learn from ({bad} bad records, {dropped} also "
                      "in validation or test); give a source of unlabelled texts as KIND:ARG.")
  return texts, {"source": source, "count": len(texts), "bad_records_skipped": bad,
                 "dropped_in_validation_or_test": dropped, "sha256": fileio.digest(texts)}
