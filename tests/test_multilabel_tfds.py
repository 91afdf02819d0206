"""--task=multilabel from TFDS: a `Sequence(ClassLabel)` feature is a record's label list, its
names the label names; built here by a tiny DatasetBuilder into a tmp data_dir (no download)."""

import dataclasses
import functools
import os
import sys

import pytest

from tfagent import config, data
from tfagent.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "examples"))
import make_multilabel  # noqa: E402  pylint: disable=wrong-import-position

# Not sorted: the label names (and ids) must be the ClassLabel's, not learned from the data.
NAMES = ["tech", "sports", "money", "politics", "health"]
EMPTY, TWICE = 2, 5  # Train records with an empty label list and with a label given twice.


@functools.cache  # TFDS registers a builder's name once a process.
def tiny_topics_builder(supervised: bool):
  """A TFDS builder of a text and a Sequence(ClassLabel), from make_multilabel's corpus."""
  import tensorflow_datasets as tfds

  class TinyTopics(tfds.core.GeneratorBasedBuilder):
    name = "tiny_topics_keys" if supervised else "tiny_topics"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "body": tfds.features.Text(),
          "topics": tfds.features.Sequence(tfds.features.ClassLabel(names=NAMES))}),
          supervised_keys=("body", "topics") if supervised else None)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(60, 0), "test": self._generate_examples(20, 1)}

    def _generate_examples(self, n, seed):
      for i, (text, labels) in enumerate(make_multilabel.records(n, seed)):
        if seed == 0 and i == EMPTY:
          labels = []
        elif seed == 0 and i == TWICE:
          labels = labels + labels[:1]
        yield i, {"body": text, "topics": labels}
  return TinyTopics


def names_of(hot) -> list:
  return sorted(n for n, v in zip(NAMES, hot) if v)


@pytest.mark.parametrize("supervised", [True, False])
def test_a_sequence_of_class_labels_is_a_label_list(tmp_path, supervised):
  """By supervised keys, or (none) by --text_field and --label_field."""
  builder = tiny_topics_builder(supervised)
  fields = {} if supervised else dict(text_field="body", label_field="topics")
  cfg = config.DataConfig(dataset=f"tfds:{builder.name}", task="multilabel",
                          tfds_data_dir=str(tmp_path), on_bad_record="skip", **fields)
  splits, info = data.load_splits(cfg)
  assert info.class_names == tuple(NAMES)
  test = {t.decode(): names_of(y) for t, y in splits["test"].as_numpy_iterator()}
  assert test == dict(make_multilabel.records(20, 1))
  assert info.split_sizes["train"] + info.split_sizes["validation"] == 58
  skipped = {k: n for k, n in info.report["skipped"].items() if n}
  assert skipped == {"empty_label_list": 1, "duplicate_label": 1}
  written = dict(make_multilabel.records(60, 0))
  for split in ("train", "validation"):
    for text, hot in splits[split].as_numpy_iterator():
      assert names_of(hot) == written[text.decode()]


def test_a_bad_label_list_names_the_record_and_the_flags(tmp_path):
  builder = tiny_topics_builder(False)
  cfg = config.DataConfig(dataset="tfds:tiny_topics", task="multilabel", text_field="body",
                          label_field="topics", tfds_data_dir=str(tmp_path))
  # The record number is its place in the prepared split, which TFDS shuffles.
  with pytest.raises(DataError, match=r"^tfds:tiny_topics/1.0.0 train record \d+: label "
                     r"'\w+' appears more than once in the label list \['\w+', .*\] of field "
                     "'topics'; give each label once."):
    data.load_splits(dataclasses.replace(cfg, allow_empty_labels=True))
  kept, _ = data.load_splits(dataclasses.replace(cfg, allow_empty_labels=True,
                                                 on_bad_record="skip"))
  hot = {t.decode(): y.tolist() for t, y in kept["train"].concatenate(
      kept["validation"]).as_numpy_iterator()}
  assert hot[make_multilabel.records(60, 0)[EMPTY][0]] == [0.0] * 5
  with pytest.raises(ConfigError, match="feature 'body' \\(--label_field\\) is no "
                     "Sequence\\(ClassLabel\\)"):
    data.load_splits(dataclasses.replace(cfg, label_field="body"))
  keyed = tiny_topics_builder(True)
  with pytest.raises(ConfigError, match="^--dataset=tfds:tiny_topics_keys: supervised keys are "
                     r"\('body', 'topics'\); expected \(text, label\) with a ClassLabel label"):
    data.load_splits(dataclasses.replace(cfg, dataset=f"tfds:{keyed.name}", task="multiclass"))
  assert builder.name == "tiny_topics"
