"""Validation and splitting of record streams, in two passes that never hold the text.

Pass 1 (`scan`) reads every record once: bad records raise or are counted by
reason, duplicates and train/test overlap are counted (and marked for removal
under `--dedup`), class balance and split sizes are tallied. Only an 8-byte
key a text is kept, so a corpus far larger than memory can be checked. Pass 2
(`split_examples`) reads the records again and yields each split's clean
`(text, label_id)`; small sources are held in memory, large ones stream.
"""

import collections
import dataclasses
import hashlib
import re

from absl import logging
import tensorflow as tf

from tfagent.data.groups import GroupTally
from tfagent.data.multilabel import is_multilabel, multi_hot
from tfagent.data.pairs import content, features, is_pair, text_of, text_spec
from tfagent.data.records import REASONS, BadRecord, Raw
from tfagent.data.sources import (SPLITS, Examples, Streamed, no_examples, normalize_whitespace,
                                  split_of)
from tfagent.errors import ConfigError, DataError

MAX_EXAMPLES_SHOWN = 5  # Bad-record messages kept in the report per reason.
LOG_EVERY = 100_000  # Records between progress lines on long scans.


INT_ID = re.compile(r"0|[1-9][0-9]*")  # An id as written: ASCII digits, no sign, no leading 0.
INTEGER = re.compile(r"-?[0-9]+")  # ASCII only, so int() accepts it ("²" is no number).
# How classes were read from the labels, as data_report.json names it.
READINGS = {
    "ids": "integer ids, exactly 0..C-1",
    "numeric_names": "integers that are not exactly 0..C-1, read as class names "
                     "sorted numerically",
    "names": "class names, sorted",
    "fixed": "class names fixed by the source or --class_names, in that order",
}


@dataclasses.dataclass(frozen=True)
class Part:
  """One input of a source (a file, a folder tree, a TFDS split) and its role."""
  name: str  # "train" (split into train/validation[/test]) or "test".
  records: object  # Callable returning a fresh iterator of Raw/BadRecord.


def fold(label: str) -> str:
  """The form `--normalize_labels` compares: spacing collapsed, case folded."""
  return " ".join(label.split()).casefold()


class LabelMap:
  """Maps labels as written (class names or integer ids) to ids 0..C-1."""

  def __init__(self, class_names, reading: str = "fixed", normalize: bool = False):
    self.class_names = tuple(class_names)
    self.reading, self.normalize = reading, normalize
    self._index = {}
    for i, name in enumerate(self.class_names):
      if self._key(name) in self._index:
        raise ConfigError(f"class names {self.class_names[self._index[self._key(name)]]!r} "
                          f"and {name!r} are one class under --normalize_labels; give it once.")
      self._index[self._key(name)] = i
    # Fixed names also accept ids 0..C-1, unless a name is itself an integer.
    self.takes_ids = reading == "fixed" and not any(INTEGER.fullmatch(n) for n in class_names)

  def _key(self, label: str) -> str:
    return fold(label) if self.normalize else label

  @classmethod
  def learn(cls, labels, normalize: bool = False) -> "LabelMap":
    """Classes from training labels: ids if exactly 0..C-1, else names (integers numerically)."""
    labels = sorted({fold(label) if normalize else label for label in labels})
    if labels and all(INTEGER.fullmatch(label) for label in labels):
      labels.sort(key=int)
      ids = all(INT_ID.fullmatch(label) for label in labels) and \
          [int(label) for label in labels] == list(range(len(labels)))
      return cls(labels, "ids" if ids else "numeric_names", normalize)
    return cls(labels, "names", normalize)

  def id_of(self, label: str):
    """Returns the class id of `label` (a tuple of ids for a tuple of labels: multilabel),
    or None if it is (or holds) no known class."""
    if isinstance(label, tuple):
      ids = tuple(self.id_of(one) for one in label)
      return None if None in ids else ids
    label_id = self._index.get(self._key(label))
    if label_id is None and self.takes_ids and INT_ID.fullmatch(label) \
        and int(label) < len(self.class_names):
      return int(label)
    return label_id

  def unknown(self, record: Raw, field: str) -> BadRecord:
    """The bad record for a label that is no class; names a near spelling if one exists."""
    if isinstance(record.label, tuple):  # Multilabel: the first unknown label of the list.
      bad = next(one for one in record.label if self.id_of(one) is None)
      one = self.unknown(dataclasses.replace(record, label=bad), field)
      return BadRecord(one.reason, one.where, f"in the label list {list(record.label)}: "
                       f"{one.message}")
    names = ", ".join(self.class_names)
    ids = f" (or an id 0..{len(self.class_names) - 1})" if self.takes_ids else ""
    near = [n for n in self.class_names if fold(n) == fold(record.label)]
    hint = (f" It differs from {near[0]!r} only in case or spacing: pass "
            "--normalize_labels to merge such spellings." if near else "")
    return BadRecord("unknown_label", record.where, f"unknown label {record.label!r} "
                     f"in field {field!r}; expected one of {names}{ids}.{hint}")


def fixed_labels(data_cfg):
  """A LabelMap from `--class_names`, or None to learn the classes from train."""
  names = [n.strip() for n in data_cfg.class_names.split(",") if n.strip()]
  return LabelMap(names, "fixed", data_cfg.normalize_labels) if names else None


def check_spellings(counts: dict, what: str, unit: str = "records", firsts: dict = None):
  """Raises when labels differ only in case or spacing ("POS", "pos"): two classes by accident.

  Args:
    counts: label as written -> how many records (or files) carry it.
    what: where the labels come from, for the message (source and field).
    unit: what `counts` counts.
    firsts: label -> where it first occurs, shown when given.
  """
  groups = collections.defaultdict(list)
  for label in counts:
    groups[fold(label)].append(label)
  clashes = [sorted(g) for g in groups.values() if len(g) > 1]
  if not clashes:
    return

  def one(label):
    first = f", first at {firsts[label]}" if firsts and label in firsts else ""
    n = counts[label]
    return f"{label!r} ({n} {unit if n != 1 else unit[:-1]}{first})"
  shown = "; ".join(" and ".join(map(one, g)) for g in clashes[:MAX_EXAMPLES_SHOWN])
  raise DataError(f"{what}: labels {shown} differ only in case or spacing, so they would "
                  "train as separate classes. Write each class one way, or pass "
                  "--normalize_labels to merge them (spacing collapsed, case folded).")


class Tally:
  """Applies `--on_bad_record`: raise on the first bad record, or count it by reason."""

  def __init__(self, policy: str):
    if policy not in ("error", "skip"):
      raise ConfigError(f"--on_bad_record={policy!r} is unknown; valid: error, skip.")
    self.policy = policy
    self.counts = collections.Counter()
    self.examples = collections.defaultdict(list)

  def bad(self, record: BadRecord) -> None:
    if self.policy == "error":
      raise DataError(f"{record} Pass --on_bad_record=skip to skip such records "
                      "(they are counted in data_report.json).")
    self.counts[record.reason] += 1
    if len(self.examples[record.reason]) < MAX_EXAMPLES_SHOWN:
      self.examples[record.reason].append(str(record))

  def report(self) -> dict:
    skipped = {reason: self.counts.get(reason, 0) for reason in REASONS}
    if self.counts:
      logging.warning("Skipped %d bad records: %s. First: %s", sum(self.counts.values()),
                      skipped, dict(self.examples))
    return {"on_bad_record": self.policy, "skipped": skipped,
            "skipped_total": sum(self.counts.values()),
            "skipped_examples": dict(self.examples)}


def text_key(text: str, seed: int) -> tuple:
  """Returns `(normalized text, 8-byte key)`; copies differing in spacing share a key."""
  norm = normalize_whitespace(text)
  digest = hashlib.sha256(f"{seed}\0{norm}".encode("utf-8")).digest()
  return norm, int.from_bytes(digest[:8], "big")


def split_key(record: Raw, norm: str, key: int, seed: int) -> tuple:
  """What picks a record's split: its group's `text_key` with --group_field, else its text's."""
  return (norm, key) if record.group is None else text_key(record.group, seed)


def fold_split(key: int, data_cfg) -> str:
  """Split of a text under cross-validation: its fold is held out as test.

  The key's position in [0, folds) names the fold (copies of a text share it);
  its fraction within the fold carves validation from the other folds.
  """
  position = key / 2.0**64 * data_cfg.folds
  fold_id = int(position)
  if fold_id == data_cfg.fold:
    return "test"
  return "validation" if position - fold_id < data_cfg.validation_fraction else "train"


def assign(part: str, norm: str, key: int, has_test: bool, data_cfg) -> str:
  """Split of a text: seeded hash, so copies of a text always share a split."""
  if data_cfg.folds > 1:
    return fold_split(key, data_cfg)
  if not has_test:
    return split_of(norm, data_cfg.seed)  # 80/10/10, as the embedded corpus.
  if part == "test":
    return "test"
  return "validation" if key / 2.0**64 < data_cfg.validation_fraction else "train"


@dataclasses.dataclass
class Plan:
  """What pass 1 learned: class ids, records to drop, sizes and the report."""
  labels: LabelMap
  has_test: bool
  drop: set = dataclasses.field(default_factory=set)  # (part, ordinal)
  sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  balance: dict = dataclasses.field(
      default_factory=lambda: {s: collections.Counter() for s in SPLITS})
  text_bytes: int = 0
  stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  spellings: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)  # Label as written -> usable records.
  firsts: dict = dataclasses.field(default_factory=dict)  # Label as written -> where first.
  groups: GroupTally = dataclasses.field(default_factory=GroupTally)


def accept(item, labels: LabelMap, tally: Tally, field: str):
  """Returns `(Raw, label_id)` for a usable record; a bad one goes to the tally."""
  if isinstance(item, BadRecord):
    tally.bad(item)
    return None
  if labels is None:
    return item, None  # Labels learned after the training part is read.
  label_id = labels.id_of(item.label)
  if label_id is None:
    tally.bad(labels.unknown(item, field))
    return None
  return item, label_id


@dataclasses.dataclass
class First:
  """The first copy of a text in a part: where it went, and whether dedup removed it."""
  ordinal: int
  split: str
  label: str  # As written.
  dropped: bool = False


class _Scanner:
  """Pass 1 state: the first occurrence of each text key per part."""

  def __init__(self, plan: Plan, data_cfg):
    self.plan, self.cfg = plan, data_cfg
    self.first = {"train": {}, "test": {}}  # key -> First
    self.overlapping = set()

  def same_class(self, a: str, b: str) -> bool:
    """Whether two labels as written name one class (ids and spellings resolved)."""
    labels = self.plan.labels
    if labels is not None:
      a, b = labels.id_of(a), labels.id_of(b)
    elif self.cfg.normalize_labels:
      a, b = (tuple(map(fold, x)) if isinstance(x, tuple) else fold(x) for x in (a, b))
    # Label lists (multilabel) are one class set in any order.
    return set(a) == set(b) if isinstance(a, tuple) and isinstance(b, tuple) else a == b

  def add(self, part: str, ordinal: int, record: Raw) -> None:
    """Counts one usable record; marks it for removal if it repeats a text."""
    plan, cfg = self.plan, self.cfg
    norm, key = text_key(content(record), cfg.seed)
    by = split_key(record, norm, key, cfg.seed)
    split = assign(part, *by, plan.has_test, cfg)
    for label in record.label if isinstance(record.label, tuple) else (record.label,):
      plan.spellings[label] += 1
      plan.firsts.setdefault(label, record.where)
    seen = self.first[part].get(key)
    if seen is not None:
      plan.stats[f"duplicates_{split}"] += 1
      conflict = not self.same_class(seen.label, record.label)
      plan.stats["conflicting_labels"] += conflict
      if cfg.dedup:
        plan.drop.add((part, ordinal))
        if conflict:  # No copy of a text under two labels is kept: which would be right?
          self._drop_first(part, key, "removed_conflicting")
        return
    else:
      self.first[part][key] = First(ordinal, split, record.label)
    if part == "test" and key in self.first["train"] and key not in self.overlapping:
      self.overlapping.add(key)
      plan.stats["train_test_overlap"] += 1
      if cfg.dedup:  # Test stays intact: it is what every figure is measured on.
        self._drop_first("train", key, "removed_overlap")
    plan.groups.add(split, record, by[1])
    self._count(split, record.label, len(content(record).encode("utf-8")), +1)

  def _drop_first(self, part: str, key: int, stat: str) -> None:
    first = self.first[part][key]
    if first.dropped:
      return
    first.dropped = True
    self.plan.drop.add((part, first.ordinal))
    self.plan.stats[stat] += 1
    self._count(first.split, first.label, 0, -1)

  def _count(self, split: str, label: str, nbytes: int, sign: int) -> None:
    self.plan.sizes[split] += sign
    for one in label if isinstance(label, tuple) else (label,):  # Multilabel: each label.
      self.plan.balance[split][one] += sign
    self.plan.text_bytes += nbytes


def scan(parts: list, labels, data_cfg, source: str, has_test: bool = None) -> tuple:
  """Pass 1 over every part: validates, counts and plans the splits.

  Args:
    parts: `Part`s, the training part first.
    labels: a LabelMap with fixed class names, or None to learn them from train.
    data_cfg: DataConfig (seed, dedup, on_bad_record, validation_fraction, ...).
    source: name for the log.
    has_test: whether the source has a test part (default: one is in `parts`).

  Returns:
    `(plan, report)`: a Plan for `split_examples` and the data report dict.
  """
  tally = Tally(data_cfg.on_bad_record)
  has_test = any(p.name == "test" for p in parts) if has_test is None else has_test
  plan = Plan(labels, has_test=has_test)
  scanner = _Scanner(plan, data_cfg)
  for part in parts:
    if plan.labels is None and part.name == "test":
      plan.labels = learn_labels(plan, tally, data_cfg, source)
    for ordinal, item in enumerate(part.records()):
      if ordinal and ordinal % LOG_EVERY == 0:
        logging.info("%s: checked %d %s records...", source, ordinal, part.name)
      ok = accept(item, plan.labels, tally, data_cfg.label_field)
      if ok:
        scanner.add(part.name, ordinal, ok[0])
  if plan.labels is None:
    plan.labels = learn_labels(plan, tally, data_cfg, source)
  return plan, make_report(plan, tally, data_cfg, source)


def learn_labels(plan: Plan, tally: Tally, data_cfg, source: str) -> LabelMap:
  """Class names from the labels seen in the training part."""
  counts = collections.Counter()
  for split in SPLITS:
    counts.update({label: n for label, n in plan.balance[split].items() if n > 0})
  if not counts:
    raise DataError(no_examples(data_cfg.dataset, "train", tally.counts))
  if not data_cfg.normalize_labels:
    check_spellings(counts, f"{source}: field {data_cfg.label_field!r}", "records",
                    plan.firsts)
  return LabelMap.learn(counts, data_cfg.normalize_labels)


def label_report(plan: Plan, data_cfg) -> dict:
  """How labels became classes: the reading taken and, normalized, the spellings merged."""
  labels = plan.labels
  merged = collections.defaultdict(dict)
  if data_cfg.normalize_labels:
    for label, n in sorted(plan.spellings.items()):
      merged[fold(label)][label] = n
  merged = {k: v for k, v in merged.items() if len(v) > 1}
  logging.info("Labels read as %s%s.", READINGS[labels.reading],
               f"; merged spellings {merged}" if merged else "")
  return {"label_reading": labels.reading, "label_reading_means": READINGS[labels.reading],
          "normalize_labels": data_cfg.normalize_labels, "merged_labels": merged}


def make_report(plan: Plan, tally: Tally, data_cfg, source: str) -> dict:
  """The validation part of data_report.json; also logged."""
  stats = plan.stats
  report = tally.report()
  report["duplicates"] = {s: stats.get(f"duplicates_{s}", 0) for s in SPLITS}
  report["train_test_overlap"] = stats.get("train_test_overlap", 0)
  report["conflicting_labels"] = stats.get("conflicting_labels", 0)
  report["dedup"] = data_cfg.dedup
  report["removed"] = {"duplicates": sum(report["duplicates"].values()) if data_cfg.dedup else 0,
                       "train_test_overlap": stats.get("removed_overlap", 0),
                       "conflicting_texts": stats.get("removed_conflicting", 0)}
  report["text_bytes"] = plan.text_bytes
  report.update(label_report(plan, data_cfg))
  logging.info("%s: duplicates %s, texts in both train and test %d, conflicting "
               "labels %d, dedup %s.", source, report["duplicates"],
               report["train_test_overlap"], report["conflicting_labels"], data_cfg.dedup)
  return report


def split_examples(parts: list, plan: Plan, data_cfg, only: str = None):
  """Pass 2: yields `(text, label_id, split)` for every kept record (of split `only`); a
  sentence pair's text is `(text, text_pair)`."""
  for part in parts:
    for ordinal, item in enumerate(part.records()):
      if isinstance(item, BadRecord) or (part.name, ordinal) in plan.drop:
        continue  # Already counted (or raised) in pass 1.
      label_id = plan.labels.id_of(item.label)
      if label_id is None:
        continue
      if isinstance(label_id, tuple):  # Multilabel: <float32>[C], 1 at each label.
        label_id = multi_hot(label_id, len(plan.labels.class_names))
      norm, key = text_key(content(item), data_cfg.seed)
      split = assign(part.name, *split_key(item, norm, key, data_cfg.seed), plan.has_test,
                     data_cfg)
      if split == "test" and not data_cfg.read_test:
        continue  # Carved from the training file, but never held or scored.
      if only is None or split == only:
        yield text_of(item), label_id, split


def build_splits(parts: list, plan: Plan, data_cfg) -> dict:
  """Holds the splits in memory when the text fits `--cache_max_mb`, else streams them."""
  if plan.text_bytes <= data_cfg.cache_max_mb * 2**20:
    width = len(plan.labels.class_names) if is_multilabel(data_cfg) else 0
    splits = {name: Examples([], [], width, is_pair(data_cfg)) for name in SPLITS}
    for text, label_id, split in split_examples(parts, plan, data_cfg):
      splits[split].texts.append(text)
      splits[split].labels.append(label_id)
    return splits
  logging.info("%.0f MB of text > --cache_max_mb=%d: streaming from disk each epoch.",
               plan.text_bytes / 2**20, data_cfg.cache_max_mb)
  return {name: stream_split(parts, plan, data_cfg, name) for name in SPLITS}


def stream_split(parts: list, plan: Plan, data_cfg, name: str) -> Streamed:
  """A split as a dataset that re-reads the source on every pass."""
  def generate():
    for text, label_id, _ in split_examples(parts, plan, data_cfg, only=name):
      yield features(text), label_id
  ds = tf.data.Dataset.from_generator(generate, output_signature=(
      text_spec(is_pair(data_cfg)), label_spec(data_cfg, len(plan.labels.class_names))))
  # Cardinality stays unknown on purpose: make_input_fn caches only splits
  # held in memory (known cardinality), never a stream.
  return Streamed(ds, plan.sizes[name], _balance_ids(plan, name))


def load_parts(parts: list, labels, data_cfg, source: str) -> tuple:
  """Validates and splits `parts`; returns `(splits, class_names, report)`.

  Under cross-validation (`folds` > 1) an official test part is not read: the
  folds cover the rest, and test stays untouched for the final figures. Without
  `read_test` it is not read either, but the other splits stay as they were with it.
  """
  has_test = any(p.name == "test" for p in parts)
  if data_cfg.folds > 1 or not data_cfg.read_test:
    parts = [p for p in parts if p.name != "test"]
  plan, report = scan(parts, labels, data_cfg, source, has_test and data_cfg.folds <= 1)
  if data_cfg.folds > 1:
    report["cross_validation"] = {"folds": data_cfg.folds, "fold": data_cfg.fold}
  if data_cfg.group_field:
    report["groups"] = plan.groups.report(data_cfg.group_field, plan.has_test)
  return build_splits(parts, plan, data_cfg), plan.labels.class_names, report


def label_spec(data_cfg, num_classes: int) -> tf.TensorSpec:
  """A label's spec: `<int32>[]` (multiclass) or multi-hot `<float32>[C]` (multilabel)."""
  if is_multilabel(data_cfg):
    return tf.TensorSpec([num_classes], tf.float32)
  return tf.TensorSpec([], tf.int32)


def _balance_ids(plan: Plan, split: str) -> collections.Counter:
  """Examples per label id in a split, from the pass-1 counts."""
  counts = collections.Counter()
  for label, n in plan.balance[split].items():
    label_id = plan.labels.id_of(label)
    if label_id is not None:
      counts[label_id] += n
  return counts
