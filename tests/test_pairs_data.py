"""--text_pair_field, the data stage: sentence pairs from csv/tsv/jsonl/tfrecord/tfds, their bad
records naming file and line, and duplicates and splits that follow both texts."""

import dataclasses
import json
import os
import sys

import pytest
import tensorflow as tf

import conftest
from conftest import run_command
from tfagent import config, data
from tfagent.data import convert
from tfagent.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "examples"))
import make_pairs  # noqa: E402  pylint: disable=wrong-import-position

ROWS = [("a cat sat", "a dog ran", "no"), ("the sun", "the sun  rose", "yes"),
        ("red car", "blue car", "yes"), ("one", "two", "no")]


def data_cfg(path: str, **overrides) -> config.DataConfig:
  kind = os.path.splitext(path)[1].lstrip(".")
  fields = dict(dataset=f"{kind}:{path}", text_field="premise", text_pair_field="hypothesis")
  return config.DataConfig(**{**fields, **overrides})


def write_csv(path, rows, header=("premise", "hypothesis", "label"), delimiter=",") -> str:
  return conftest.write_csv(path, rows, header, delimiter)


def write_jsonl(path, rows, keys=("premise", "hypothesis", "label")) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(dict(zip(keys, row))) + "\n")
  return str(path)


def by_pair(ds) -> dict:
  """(text, text_pair) -> label id of a dataset's elements."""
  return {(f["text"].decode(), f["text_pair"].decode()): int(y) for f, y in
          ds.as_numpy_iterator()}


def test_pairs_read_alike_from_csv_tsv_and_jsonl(tmp_path):
  paths = [write_csv(tmp_path / "d.csv", ROWS), write_csv(tmp_path / "d.tsv", ROWS,
                                                          delimiter="\t"),
           write_jsonl(tmp_path / "d.jsonl", ROWS)]
  read = [data.load_all(data_cfg(p)) for p in paths]
  expected = {(a, b): int(y == "yes") for a, b, y in ROWS}
  for ds, info in read:
    assert info.class_names == ("no", "yes")
    assert by_pair(ds) == expected
    assert ds.element_spec[0] == {"text": tf.TensorSpec([], tf.string),
                                  "text_pair": tf.TensorSpec([], tf.string)}


@pytest.mark.parametrize("suffix, value, message", [
    (".csv", "", "d.csv:3: empty text in field 'hypothesis'; expected non-blank text."),
    (".csv", "  ", "d.csv:3: empty text in field 'hypothesis'; expected non-blank text."),
    (".jsonl", None, "d.jsonl:2: missing field 'hypothesis'; expected a text in every record."),
    (".jsonl", 7, "d.jsonl:2: field 'hypothesis' is an int; expected a string."),
])
def test_a_missing_or_empty_second_text_names_file_and_line(tmp_path, suffix, value, message):
  rows = [("x one", "y one", "a"), ("x two", value, "b"), ("x three", "y three", "a"),
          ("x four", "y four", "b")]
  if suffix == ".csv":
    path = write_csv(tmp_path / "d.csv", rows)
  else:
    path = write_jsonl(tmp_path / "d.jsonl", [r if r[1] is not None else (r[0], None, r[2])
                                              for r in rows])
    if value is None:  # The key left out, not null.
      lines = open(path, encoding="utf-8").read().splitlines()
      lines[1] = json.dumps({"premise": "x two", "label": "b"})
      open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
  with pytest.raises(DataError) as error:
    data.load_all(data_cfg(path))
  assert str(error.value) == (os.path.join(str(tmp_path), message) + " Pass "
                              "--on_bad_record=skip to skip such records (they are counted "
                              "in data_report.json).")
  _, info = data.load_all(data_cfg(path, on_bad_record="skip"))
  assert sum(info.report["skipped"].values()) == 1 and info.split_sizes == {"all": 3}


def test_a_file_without_the_pair_column_names_the_flag(tmp_path):
  path = write_csv(tmp_path / "d.csv", ROWS, header=("premise", "other", "label"))
  with pytest.raises(DataError, match=r"d.csv:1: no column 'hypothesis' \(--text_pair_field\); "
                     "the header has 'premise', 'other', 'label'"):
    data.load_all(data_cfg(path))


def test_duplicates_and_splits_follow_both_texts(tmp_path):
  """One premise with four hypotheses is four records; a pair repeated with other spacing
  is a duplicate, and --dedup removes it."""
  rows = [("same premise", f"hypothesis {i}", "no" if i % 2 else "yes") for i in range(4)]
  rows.append(("same  premise", " hypothesis 0", "yes"))
  path = write_csv(tmp_path / "d.csv", rows)
  ds, info = data.load_all(data_cfg(path))
  assert info.split_sizes == {"all": 5} and sum(info.report["duplicates"].values()) == 1
  assert info.report["conflicting_labels"] == 0
  deduped, info = data.load_all(data_cfg(path, dedup=True))
  assert info.split_sizes == {"all": 4} and len(set(by_pair(deduped))) == 4


def test_the_split_of_a_pair_hashes_both_texts(tmp_path):
  """Pairs sharing their first text spread over the splits (a hash of the first text alone
  would put all in one)."""
  rows = [("one premise", f"hypothesis {i}", "ab"[i % 2]) for i in range(200)]
  _, info = data.load_splits(data_cfg(write_csv(tmp_path / "d.csv", rows)))
  assert min(info.split_sizes.values()) > 5, info.split_sizes


def test_sources_of_one_text_a_record_refuse_a_pair_field(tmp_path, corpus_dir):
  with pytest.raises(ConfigError, match="--text_pair_field=hypothesis: --dataset=embedded:.* "
                     "holds one text a record; sentence pairs come from csv:, tsv:, jsonl:, "
                     "tfrecord:, tfds:"):
    data.load_splits(config.DataConfig(dataset=f"embedded:{corpus_dir}",
                                       text_pair_field="hypothesis"))


def test_convert_keeps_both_texts_and_tfrecord_needs_the_same_flag(tmp_path):
  path = make_pairs.write_csv(str(tmp_path / "p.csv"), 60)
  cfg = data_cfg(path)
  convert.convert(cfg, str(tmp_path / "out"), num_shards=2)
  shards = data_cfg(str(tmp_path / "out" / "*.tfrecord"), dataset=f"tfrecord:{tmp_path}/out/*")
  from_shards, info = data.load_splits(shards)
  from_csv, _ = data.load_splits(cfg)
  for split in data.SPLITS:
    assert by_pair(from_shards[split]) == by_pair(from_csv[split])
  assert info.class_names == ("disjoint", "shared")
  with pytest.raises(ConfigError, match="--text_pair_field=: tfrecord:.* was converted with "
                     "--text_pair_field=hypothesis"):
    data.load_splits(dataclasses.replace(shards, text_pair_field=""))


def test_convert_stops_at_a_missing_second_text_with_one_error(tmp_path, monkeypatch, caplog):
  """`tfagent convert` as a user runs it: exit status 1, one error line naming file and line."""
  path = write_csv(tmp_path / "d.csv", [("x one", "y one", "a"), ("x two", "", "b")])
  code = run_command(monkeypatch, "convert", f"--dataset=csv:{path}", "--text_field=premise",
                     "--text_pair_field=hypothesis", f"--output_dir={tmp_path / 'out'}")
  errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
  assert code == 1 and len(errors) == 1, errors
  assert errors[0].startswith(f"{path}:3: empty text in field 'hypothesis'"), errors[0]


def tiny_pair_builder():
  """A TFDS builder of two text features and a ClassLabel, as GLUE's (no supervised keys)."""
  import tensorflow_datasets as tfds

  class TinyPairs(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "sentence1": tfds.features.Text(), "sentence2": tfds.features.Text(),
          "label": tfds.features.ClassLabel(names=list(make_pairs.LABELS))}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(80, 0),
              "validation": self._generate_examples(20, 1)}

    def _generate_examples(self, n, seed):
      for i, (a, b, label) in enumerate(make_pairs.records(n, seed)):
        blank = (seed, i) == (0, 3)  # A bad record: train's fourth has no second text.
        yield i, {"sentence1": a, "sentence2": " " if blank else b, "label": label}
  return TinyPairs


def test_tfds_reads_two_text_features(tmp_path):
  tiny_pair_builder()  # Registers tiny_pairs.
  cfg = config.DataConfig(dataset="tfds:tiny_pairs", text_field="sentence1",
                          text_pair_field="sentence2", tfds_data_dir=str(tmp_path),
                          tfds_test_split="validation", on_bad_record="skip")
  splits, info = data.load_splits(cfg)
  expected = {(a, b): make_pairs.LABELS.index(y) for a, b, y in make_pairs.records(20, 1)}
  assert by_pair(splits["test"]) == expected
  assert info.split_sizes["train"] + info.split_sizes["validation"] == 79
  assert info.report["skipped"]["empty_text"] == 1  # Train record 3's blank second text.
  with pytest.raises(ConfigError, match="tfds:tiny_pairs: no feature 'premise' \\(--text_field\\); "
                     "its features are sentence1, sentence2, label"):
    data.load_splits(dataclasses.replace(cfg, text_field="premise"))


def test_a_streamed_split_holds_the_pairs_held_in_memory(tmp_path):
  """--cache_max_mb=0 streams each split from the file: the same pairs, the same spec."""
  cfg = data_cfg(make_pairs.write_csv(str(tmp_path / "p.csv"), 60))
  held, _ = data.load_splits(cfg)
  streamed, _ = data.load_splits(dataclasses.replace(cfg, cache_max_mb=0))
  for split in data.SPLITS:
    assert streamed[split].element_spec == held[split].element_spec
    assert by_pair(streamed[split]) == by_pair(held[split])
