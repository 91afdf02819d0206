"""Which split a text goes to, and pass 2: each split's clean examples, held or streamed.

A text's split comes from a seeded hash of the text (or of its group), so copies
of a text always share a split, on every machine and run. Pass 1
(`tfagent.data.validate.scan`) makes the Plan; pass 2 (`split_examples`) reads
the records again and yields each split's `(text, label_id)`.
"""

import collections
import dataclasses
import hashlib

from absl import logging
import tensorflow as tf

from tfagent.data.fields import BadRecord, Raw
from tfagent.data.groups import GroupTally
from tfagent.data.labels import LabelMap
from tfagent.data.multilabel import is_multilabel, multi_hot
from tfagent.data.pairs import content, features, is_pair, text_of, text_spec
from tfagent.data.sources import (SPLITS, Examples, Streamed, in_whole_file,
                                  normalize_whitespace, split_of)


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
  whole: bool = dataclasses.field(default_factory=in_whole_file)  # sources.whole_file
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
  digests: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)  # Split -> record_digest sum (mod 2**64).

  def split(self, part: str, record, norm: str, key: int, data_cfg) -> tuple:
    """`(split, split key)` of a record: `assign`'s split, or "train" in
    sources.whole_file(); the key is its group's or its text's (`split_key`)."""
    by = split_key(record, norm, key, data_cfg.seed)
    return ("train" if self.whole else assign(part, *by, self.has_test, data_cfg)), by


def record_digest(key: int, label) -> int:
  """A record's share of its split's digest: its text key and its label as written. Summed,
  not chained, so that a record dropped later is taken out again."""
  label = "\x1f".join(label) if isinstance(label, tuple) else label
  return int.from_bytes(hashlib.blake2b(f"{key}\0{label}".encode("utf-8"),
                                        digest_size=8).digest(), "big")


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
      split, _ = plan.split(part.name, item, norm, key, data_cfg)
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
