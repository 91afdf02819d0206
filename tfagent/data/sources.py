"""Data sources: each returns unbatched `(text, label)` splits plus a DatasetInfo."""

import collections
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import random

from absl import logging
import tensorflow as tf

from tfagent import fileio
from tfagent.data import multilabel, pairs
from tfagent.data.labels import given_class_names
from tfagent.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
# Share of examples per split; the embedded corpus has no official split.
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
GROUP_SOURCES = ("csv", "tsv", "jsonl")  # Kinds whose records can carry --group_field.
# Largest class / smallest class in train above which the run warns: plain cross-entropy
# then mostly predicts the large class (see --class_weight, --monitor=val_macro_f1).
IMBALANCE_WARN = 10.0


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What travels with the data into the model and the export."""
  name: str
  class_names: tuple
  split_sizes: dict  # split -> examples, or None where a source streams.
  report: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Examples:
  """An in-memory split: parallel lists of texts and integer labels."""
  texts: list  # Strings; with `pair`, (text, text_pair) tuples.
  labels: list
  multi_hot: int = 0  # Multilabel: C, each label a multi-hot list of C floats; else 0.
  pair: bool = False  # Sentence pairs (--text_pair_field).

  def to_dataset(self) -> tf.data.Dataset:
    """Returns `(text: <string>[], label: <int32>[])` elements (multilabel: `<float32>[C]`;
    sentence pairs: text is the dict `{text, text_pair}`, data/pairs.py)."""
    labels = (tf.reshape(tf.constant(self.labels, tf.float32), [-1, self.multi_hot])
              if self.multi_hot else tf.constant(self.labels, tf.int32))
    return tf.data.Dataset.from_tensor_slices((pairs.text_tensors(self.texts, self.pair),
                                               labels))


@dataclasses.dataclass
class Streamed:
  """A split read from disk on every pass: too large to hold in memory."""
  dataset: tf.data.Dataset  # `(text: <string>[], label: <int32>[])` elements.
  size: int = None  # Examples, or None when unknown without a full pass.
  label_counts: dict = None  # label id -> examples, or None when unknown.


def normalize_whitespace(text: str) -> str:
  """Collapses runs of whitespace so that trivially different copies dedupe."""
  return " ".join(text.split())


def split_of(text: str, seed: int) -> str:
  """Assigns a text to a split by a seeded hash: stable across runs and machines."""
  digest = hashlib.sha256(f"{seed}\0{text}".encode("utf-8")).digest()
  u = int.from_bytes(digest[:8], "big") / 2.0**64
  if u < SPLIT_FRACTIONS["train"]:
    return "train"
  if u < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["validation"]:
    return "validation"
  return "test"


def no_examples(dataset: str, split: str, skipped: dict = None) -> str:
  """The message for a split (None: the whole source) left empty, with the records skipped."""
  why = ""
  if skipped and sum(skipped.values()):
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()) if n)
    total = sum(skipped.values())
    why = f" ({total} bad record{'s were' if total > 1 else ' was'} skipped: {counts})"
  what = f"the {split} split has" if split else "it has"
  return (f"--dataset={dataset}: {what} no examples{why}; a data set "
          "needs labelled, non-empty texts.")


# KIND -> loader(arg, data_cfg) -> (splits, class_names, report); splits map to
# Examples (in memory) or Streamed. The kinds register on import of tfagent.data
# (embedded.py, files.py, tfds_source.py, tfrecord.py).
SOURCES = {}


def parse_dataset_flag(dataset: str) -> tuple:
  """Splits `KIND:ARG` and checks KIND; ARG may be empty."""
  kind, _, arg = dataset.partition(":")
  if kind not in SOURCES:
    raise ConfigError(f"--dataset={dataset!r}: unknown source kind {kind!r}; "
                      f"valid kinds: {', '.join(sorted(SOURCES))} (as KIND:ARG).")
  return kind, arg


def stored_class_names(stored, data_cfg, where: str) -> tuple:
  """The classes of a source that stores its own (tfrecord, tfds), `--class_names` checked.

  `--class_names` may give the stored classes in another order: the stored ids are
  then remapped by name (see `id_remap`); any other set of names is refused, as
  reading the stored ids under other names would change every label.

  Args:
    stored: the class names the source stores, in the order of its label ids.
    data_cfg: the DataConfig (its dataset and class_names).
    where: where the source stores them, for the error and the log.
  Returns:
    The class names in label order.
  """
  stored, given = tuple(stored), given_class_names(data_cfg)
  if not given or given == stored:
    return stored
  parts = [f"{what}: {', '.join(names)}" for what, names in (
      ("not stored", [n for n in given if n not in stored]),
      ("left out", [n for n in stored if n not in given]),
      ("given twice", sorted({n for n in given if given.count(n) > 1}))) if names]
  if parts:
    details = "; ".join(parts)
    raise ConfigError(f"--class_names={','.join(given)}: --dataset={data_cfg.dataset} stores "
                      f"the classes {', '.join(stored)} (in {where}); --class_names must name "
                      "the same classes (in any order: labels are remapped by name) or be "
                      f"left out. {details[0].upper()}{details[1:]}.")
  logging.info("--class_names=%s: %s stores the classes in the order %s (in %s); its labels "
               "are remapped by name to the order given.", ",".join(given), data_cfg.dataset,
               ",".join(stored), where)
  return given


def id_remap(stored, class_names) -> list:
  """`new_id = remap[stored_id]`: each stored id to the id of its name in `class_names`."""
  return [list(class_names).index(name) for name in stored]


def class_balance(labels, class_names) -> dict:
  """Examples per class name; multi-hot labels (multilabel) count each label of a record."""
  if labels and isinstance(labels[0], list):
    counts = {i: int(sum(row[i] for row in labels)) for i in range(len(class_names))}
    return {name: counts[i] for i, name in enumerate(class_names)}
  counts = collections.Counter(labels)
  return {name: counts.get(i, 0) for i, name in enumerate(class_names)}


def split_size(split):
  """Examples in an in-memory or streamed split (None if unknown)."""
  return len(split.texts) if isinstance(split, Examples) else split.size


def cap_examples(split, n: int, seed: int):
  """`n` examples of a split (`--max_train_examples`): a seeded sample in memory.

  Files are often sorted by class, so the first `n` would be one class; a
  stream cannot be sampled without a pass and keeps its first `n`.
  """
  if isinstance(split, Examples):
    if n >= len(split.texts):
      return split
    keep = sorted(random.Random(seed).sample(range(len(split.texts)), n))
    return dataclasses.replace(split, texts=[split.texts[i] for i in keep],
                               labels=[split.labels[i] for i in keep])
  size = None if split.size is None else min(n, split.size)
  return Streamed(split.dataset.take(n), size, None if size != split.size else split.label_counts)


def split_balance(split, class_names):
  """Examples per class name, or None where a stream's counts are unknown."""
  if isinstance(split, Examples):
    return class_balance(split.labels, class_names)
  if split.label_counts is None:
    return None
  return {name: split.label_counts.get(i, 0) for i, name in enumerate(class_names)}


def as_dataset(split) -> tf.data.Dataset:
  """The split as `(text: <string>[], label: <int32>[])` elements."""
  return split.to_dataset() if isinstance(split, Examples) else split.dataset


def check_classes(class_names, balance: dict, dataset: str) -> None:
  """Two classes at least, each with a training example: else the model cannot learn them."""
  train = balance["train"]
  if len(class_names) < 2:
    found = f"only class {class_names[0]!r}" if class_names else "no class"
    raise DataError(f"--dataset={dataset}: the train split has {found} ({train}); a "
                    "classifier needs two classes at least. Check --label_field and "
                    "--class_names, or add examples of another class.")
  for name in class_names:
    if train is not None and train.get(name, 0) == 0:
      elsewhere = {s: balance[s].get(name, 0) for s in SPLITS[1:] if balance[s] is not None}
      raise DataError(f"--dataset={dataset}: class {name!r} has no example in the train "
                      f"split (train {train}; {name!r} elsewhere: {elsewhere}), so the model "
                      "could never predict it. Add training examples of it, or leave it "
                      "out of --class_names.")


def imbalance_ratios(balance: dict) -> dict:
  """Split -> examples of its largest class / of its smallest (None: unknown or a class absent)."""
  ratios = {}
  for split, counts in balance.items():
    smallest = min(counts.values()) if counts else 0
    ratios[split] = max(counts.values()) / smallest if smallest else None
  return ratios


def warn_imbalance(ratios: dict, dataset: str) -> None:
  """Logs a warning when the training split's classes are far from balanced."""
  if ratios.get("train") and ratios["train"] > IMBALANCE_WARN:
    logging.warning("--dataset=%s: the largest class has %.1fx the training examples of the "
                    "smallest (above %g); consider --class_weight=balanced and "
                    "--monitor=val_macro_f1.", dataset, ratios["train"], IMBALANCE_WARN)


def write_report(info: "DatasetInfo", path: str) -> None:
  """Writes `data_report.json`: sizes, class balance, skipped records, duplicates."""
  report = dict(info.report, dataset=info.name, class_names=list(info.class_names),
                split_sizes=info.split_sizes)
  fileio.write_text_atomically(path, json.dumps(report, indent=2, sort_keys=True))


_WHOLE_FILE = contextvars.ContextVar("whole_file", default=False)


@contextlib.contextmanager
def whole_file():
  """Within: the splits planned put every kept record in "train", in the file's order (a
  streamed split keeps that after the block: its Plan holds the choice)."""
  token = _WHOLE_FILE.set(True)
  try:
    yield
  finally:
    _WHOLE_FILE.reset(token)


def in_whole_file() -> bool:
  """Whether a `whole_file()` block is open."""
  return _WHOLE_FILE.get()


def load_all(data_cfg) -> tuple:
  """Every kept record of a source as one dataset, for scoring a labelled file.

  The records are validated as for training, in the file's order: nothing is split off,
  capped or left unread, and a --test_path is not joined to them. A source stored in
  splits (tfrecord:, tfds:) gives its train, validation and test splits in turn.
  `(dataset of (text, label), info)`, info.split_sizes holding {"all": n}.
  """
  data_cfg = dataclasses.replace(data_cfg, test_path="", read_test=True, folds=0,
                                 max_train_examples=0, group_field="")
  kind, arg = parse_dataset_flag(data_cfg.dataset)
  check_task_source(kind, data_cfg)
  with whole_file():
    splits, class_names, report = SOURCES[kind](arg, data_cfg)
  sizes = [split_size(splits[name]) for name in SPLITS]
  if sizes == [0, 0, 0]:
    raise DataError(no_examples(data_cfg.dataset, None, report.get("skipped")))
  parts = [as_dataset(splits[name]) for name in SPLITS]
  total = None if None in sizes else sum(sizes)
  ds = parts[0].concatenate(parts[1]).concatenate(parts[2])
  return ds, DatasetInfo(data_cfg.dataset, tuple(class_names), {"all": total}, report)


def check_task_source(kind: str, data_cfg) -> None:
  """Fails when --task=multilabel is given a source of one label a record (data/multilabel.py),
  or --text_pair_field one of one text a record (data/pairs.py)."""
  multilabel.check_source(kind, data_cfg)
  pairs.check_source(kind, data_cfg)


def check_folds(data_cfg, kind: str) -> None:
  """Fails with what is valid when --folds/--fold cannot be used as given."""
  if data_cfg.folds in (0, 1):
    return
  if data_cfg.folds < 0:
    raise ConfigError(f"--folds={data_cfg.folds} is invalid; expected 0 (no "
                      "cross-validation) or 2 or more folds.")
  if not 0 <= data_cfg.fold < data_cfg.folds:
    raise ConfigError(f"--fold={data_cfg.fold} is invalid with --folds={data_cfg.folds}; "
                      f"expected 0..{data_cfg.folds - 1}.")
  if kind == "tfrecord":
    raise ConfigError("--folds: tfrecord: shards were split when converted; cross-validate "
                      "the source they came from (csv:, tsv:, jsonl:, dir:, tfds:, embedded:).")


TEST_FROM = {"dir": "its test/ folder, or a part of train", "tfds": "the data set's test split",
             "tfrecord": "the shards converted as test", "embedded": "a part of the corpus"}


def check_test_path(data_cfg, kind: str) -> None:
  """Fails when --test_path is given to a source that does not read it (its test split comes
  from elsewhere: figures would be of other texts than the user's test file)."""
  if data_cfg.test_path and kind not in GROUP_SOURCES:
    raise ConfigError(f"--test_path={data_cfg.test_path}: --dataset={data_cfg.dataset} does not "
                      f"read it ({kind}: test is {TEST_FROM.get(kind, 'its own')}); --test_path "
                      "is the official test file of csv:, tsv: or jsonl:. Leave it empty, or "
                      "give the training data as such a file.")


def check_groups(data_cfg, kind: str) -> None:
  """Fails, saying where groups can come from, when --group_field is set for another source."""
  if not data_cfg.group_field or kind in GROUP_SOURCES:
    return
  hint = (" tfrecord shards were split when converted: give --group_field to tfagent "
          "convert instead." if kind == "tfrecord" else "")
  raise ConfigError(f"--group_field={data_cfg.group_field}: --dataset={data_cfg.dataset} has "
                    f"no group field ({kind}: records hold a text and a label only); groups "
                    f"are read from {', '.join(k + ':' for k in GROUP_SOURCES)} files (a "
                    f"column or a key).{hint} Leave --group_field empty to split by text.")


def load_splits(data_cfg) -> tuple:
  """Loads, validates and splits the configured data set.

  Returns:
    `(splits, info)`: splits maps "train"/"validation"/"test" to datasets of
    `(text: <string>[], label: <int32>[])`; info is a DatasetInfo.
  """
  kind, arg = parse_dataset_flag(data_cfg.dataset)
  check_folds(data_cfg, kind)
  check_groups(data_cfg, kind)
  check_test_path(data_cfg, kind)
  check_task_source(kind, data_cfg)
  splits, class_names, report = SOURCES[kind](arg, data_cfg)
  if data_cfg.max_train_examples:
    splits["train"] = cap_examples(splits["train"], data_cfg.max_train_examples, data_cfg.seed)
  if not data_cfg.read_test:  # Unread (tfagent tune): empty, whatever the source holds.
    splits["test"] = Examples([], [], pair=pairs.is_pair(data_cfg))
  for name in SPLITS:
    if split_size(splits[name]) == 0 and (name != "test" or data_cfg.read_test):
      raise DataError(no_examples(data_cfg.dataset, name, report.get("skipped")))
  sizes = {name: split_size(splits[name]) for name in SPLITS}
  sizes = None if None in sizes.values() else sizes  # Unknown for some streams.
  report["class_balance"] = {name: split_balance(splits[name], class_names)
                             for name in SPLITS}
  check_classes(class_names, report["class_balance"], data_cfg.dataset)
  report["imbalance_ratio"] = imbalance_ratios(report["class_balance"])
  warn_imbalance(report["imbalance_ratio"], data_cfg.dataset)
  logging.info("Data %s: splits %s, classes %s, balance %s", data_cfg.dataset,
               sizes, list(class_names), report["class_balance"])
  info = DatasetInfo(data_cfg.dataset, tuple(class_names), sizes, report)
  return {name: as_dataset(s) for name, s in splits.items()}, info
