"""Validation and splitting of record streams, in two passes that never hold the text.

Pass 1 (`scan`, here) reads every record once: bad records raise or are counted
by reason, duplicates and train/test overlap are counted (and marked for removal
under `--dedup`), class balance and split sizes are tallied. Only an 8-byte key a
text is kept, so a corpus far larger than memory can be checked. Pass 2
(`tfagent.data.splits`) reads the records again and yields each split's clean
`(text, label_id)`; small sources are held in memory, large ones stream. Classes
are read from the labels by `tfagent.data.labels`.
"""

import collections
import dataclasses

from absl import logging

from tfagent.data import multilabel
from tfagent.data.fields import REASONS, BadRecord, Raw
from tfagent.data.labels import MAX_EXAMPLES_SHOWN, READINGS, LabelMap, check_spellings, fold
from tfagent.data.pairs import content
from tfagent.data.sources import SPLITS, no_examples
from tfagent.data.splits import Plan, build_splits, record_digest, text_key
from tfagent.errors import ConfigError, DataError

LOG_EVERY = 100_000  # Records between progress lines on long scans.


@dataclasses.dataclass(frozen=True)
class Part:
  """One input of a source (a file, a folder tree, a TFDS split) and its role."""
  name: str  # "train" (split into train/validation[/test]) or "test".
  records: object  # Callable returning a fresh iterator of Raw/BadRecord.


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
    self.first = {"train": {}, "test": {}}  # key -> {split: First}
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
    split, by = plan.split(part, record, norm, key, cfg)
    for label in record.label if isinstance(record.label, tuple) else (record.label,):
      plan.spellings[label] += 1
      plan.firsts.setdefault(label, record.where)
    # Split by group, copies of a text may land in several splits: a copy in test and one in
    # train or validation is overlap (--dedup keeps the test copy), not a duplicate.
    copies = self.first[part].setdefault(key, {})  # split -> the first copy there
    earlier = next(iter(copies.values()), None)
    held = copies.get("test") if split != "test" else None  # A test copy of this text.
    if split in copies:
      plan.stats[f"duplicates_{split}"] += 1
    elif (held or split == "test" and copies) and self._overlaps(key):
      plan.stats["train_test_overlap"] += 1
    conflict = earlier is not None and not self.same_class(earlier.label, record.label)
    plan.stats["conflicting_labels"] += conflict
    if cfg.dedup and (conflict or split in copies or held):
      plan.drop.add((part, ordinal))
      plan.stats["removed_overlap"] += bool(held and not conflict and split not in copies)
      for first in copies.values() if conflict else ():  # Which label would be right?
        self._drop(part, key, first, "removed_conflicting")
      copies.setdefault(split, First(ordinal, split, record.label, dropped=True))
      return
    for first in list(copies.values()) if cfg.dedup and split == "test" else ():
      self._drop(part, key, first, "removed_overlap")  # Test stays intact: figures are its.
    copies.setdefault(split, First(ordinal, split, record.label))
    if part == "test" and self.first["train"].get(key) and self._overlaps(key):
      plan.stats["train_test_overlap"] += 1
      for first in list(self.first["train"][key].values()) if cfg.dedup else ():
        self._drop("train", key, first, "removed_overlap")
    plan.groups.add(split, record, by[1])
    self._count(split, record.label, len(content(record).encode("utf-8")), +1, key)

  def _overlaps(self, key: int) -> bool:
    """True the first time a text is found in test and in train or validation."""
    first = key not in self.overlapping
    self.overlapping.add(key)
    return first

  def _drop(self, part: str, key: int, first: First, stat: str) -> None:
    """Removes the kept copy `first` of a text in `part` (once), counting it under `stat`."""
    if first.dropped:
      return
    first.dropped = True
    self.plan.drop.add((part, first.ordinal))
    self.plan.stats[stat] += 1
    self._count(first.split, first.label, 0, -1, key)

  def _count(self, split: str, label: str, nbytes: int, sign: int, key: int) -> None:
    self.plan.sizes[split] += sign
    self.plan.digests[split] = (self.plan.digests[split]
                                + sign * record_digest(key, label)) % (1 << 64)
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
  if multilabel.is_multilabel(data_cfg):
    multilabel.check_joined(counts, data_cfg, f"{source}: field {data_cfg.label_field!r}")
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
  # Which texts and labels each split holds, in any order: tfagent evaluate checks that a
  # run's test split is the one it trained with.
  report["split_digests"] = {s: f"{plan.digests[s]:016x}" for s in SPLITS}
  report.update(label_report(plan, data_cfg))
  logging.info("%s: duplicates %s, texts in both train and test %d, conflicting "
               "labels %d, dedup %s.", source, report["duplicates"],
               report["train_test_overlap"], report["conflicting_labels"], data_cfg.dedup)
  return report


def load_parts(parts: list, labels, data_cfg, source: str) -> tuple:
  """Validates and splits `parts`; returns `(splits, class_names, report)`.

  Under cross-validation (`folds` > 1) an official test part is not read: the
  folds cover the rest, and test stays untouched for the final figures. Without
  `read_test` (tfagent tune's trials) it is not read either, but the other splits stay as
  they are with it: under `--dedup`, which removes the training copies of test texts, its
  records are checked (pass 1) for that, and never held or scored.
  """
  has_test = any(p.name == "test" for p in parts)
  if data_cfg.folds > 1 or not (data_cfg.read_test or data_cfg.dedup):
    parts = [p for p in parts if p.name != "test"]
  plan, report = scan(parts, labels, data_cfg, source, has_test and data_cfg.folds <= 1)
  if data_cfg.folds > 1:
    report["cross_validation"] = {"folds": data_cfg.folds, "fold": data_cfg.fold}
  if data_cfg.group_field:
    report["groups"] = plan.groups.report(data_cfg.group_field, plan.has_test)
  held = [p for p in parts if p.name != "test" or data_cfg.read_test]
  return build_splits(held, plan, data_cfg), plan.labels.class_names, report
