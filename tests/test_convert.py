"""convert: any source to sharded TFRecords, read back with tfrecord:GLOB."""

import json
import os

import pytest

from conftest import run_command
from tfagent import config, data
from tfagent.data import convert
from tfagent.errors import ConfigError, DataError


def write_jsonl(path, n=60):
  with open(path, "w", encoding="utf-8") as f:
    for i in range(n):
      f.write(json.dumps({"body": f"text {i} is {'good' if i % 3 else 'bad'}",
                          "y": "pos" if i % 3 else "neg"}) + "\n")
    f.write(json.dumps({"body": "", "y": "pos"}) + "\n")
  return str(path)


def examples(splits):
  return {s: sorted((t.decode(), int(l)) for t, l in ds.as_numpy_iterator())
          for s, ds in splits.items()}


def test_convert_round_trips_splits_class_names_and_report(tmp_path):
  src = write_jsonl(tmp_path / "d.jsonl")
  cfg = config.DataConfig(dataset=f"jsonl:{src}", text_field="body", label_field="y",
                          on_bad_record="skip")
  meta = convert.convert(cfg, str(tmp_path / "out"), num_shards=3)
  assert sorted(os.listdir(tmp_path / "out")) == sorted(
      ["dataset_info.json"] + [f"{s}-{i:05d}-of-00003.tfrecord"
                               for s in ("train", "validation", "test") for i in range(3)])
  assert meta["report"]["skipped"]["empty_text"] == 1
  original, info = data.load_splits(cfg)
  back, back_info = data.load_splits(config.DataConfig(
      dataset=f"tfrecord:{tmp_path}/out/*.tfrecord"))
  assert examples(back) == examples(original)
  assert back_info.class_names == ("neg", "pos") == info.class_names
  assert back_info.split_sizes == info.split_sizes
  assert back_info.report["class_balance"] == info.report["class_balance"]
  # The conversion's findings stand in the run's report, as on the source itself: the model
  # card's warnings read them, tfagent evaluate compares the test split's digest.
  for key in ("skipped", "skipped_total", "duplicates", "conflicting_labels", "split_digests",
              "label_reading"):
    assert back_info.report[key] == info.report[key], key
  assert back_info.report["skipped_total"] == 1


def test_tfrecord_without_info_needs_class_names_and_counts_by_streaming(tmp_path):
  src = write_jsonl(tmp_path / "d.jsonl")
  cfg = config.DataConfig(dataset=f"jsonl:{src}", text_field="body", label_field="y",
                          on_bad_record="skip")
  convert.convert(cfg, str(tmp_path / "out"), num_shards=2)
  os.remove(tmp_path / "out" / "dataset_info.json")
  glob = f"tfrecord:{tmp_path}/out/*.tfrecord"
  with pytest.raises(DataError, match="no dataset_info.json beside the files and no "
                     "--class_names"):
    data.load_splits(config.DataConfig(dataset=glob))
  splits, info = data.load_splits(config.DataConfig(dataset=glob, class_names="neg,pos"))
  assert info.split_sizes is None  # Unknown without a pass; train.py counts.
  assert sum(data.count_examples(ds) for ds in splits.values()) == 60


def test_tfrecord_missing_split_files_are_named(tmp_path):
  (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"")
  with pytest.raises(DataError, match=r"no files for split\(s\) validation, test among 1 "
                     r"matched; expected names like train-00000-of-00008\.tfrecord"):
    data.load_splits(config.DataConfig(dataset=f"tfrecord:{tmp_path}/*.tfrecord"))


def test_a_bad_record_stops_convert_naming_the_line_and_writes_nothing(tmp_path):
  """What `python -m tfagent.data.convert` runs; its exit 1 without a traceback on a data
  error is checked with the other entry points' in test_data_bad_inputs.py."""
  src = write_jsonl(tmp_path / "d.jsonl")
  with pytest.raises(DataError, match=f"{src}:61: empty text in field 'body'; expected "
                     "non-blank text."):
    convert.convert(config.DataConfig(dataset=f"jsonl:{src}", text_field="body",
                                      label_field="y"), str(tmp_path / "out"), 1)
  assert not os.path.exists(tmp_path / "out")


def test_convert_command_skips_bad_records_into_shards(tmp_path, monkeypatch):
  """`tfagent convert` in-process through its own flags. (Its exit status and one-line
  error in a real process: test_data_bad_inputs.py.)"""
  src = write_jsonl(tmp_path / "d.jsonl")
  assert run_command(monkeypatch, "convert", f"--dataset=jsonl:{src}", "--text_field=body",
                     "--label_field=y", f"--output_dir={tmp_path}/out", "--on_bad_record=skip",
                     "--num_shards=2") == 0
  info = json.load(open(tmp_path / "out" / "dataset_info.json"))
  assert sum(info["split_sizes"].values()) == 60
  assert len([f for f in os.listdir(tmp_path / "out") if f.startswith("train-")]) == 2


def skipping_cfg(tmp_path):
  """The DataConfig of write_jsonl's file, its one bad record skipped."""
  src = write_jsonl(tmp_path / "d.jsonl")
  return config.DataConfig(dataset=f"jsonl:{src}", text_field="body", label_field="y",
                           on_bad_record="skip")


def converted(tmp_path, num_shards):
  """Converts skipping_cfg's file into tmp_path/out; returns its tfrecord:GLOB."""
  convert.convert(skipping_cfg(tmp_path), str(tmp_path / "out"), num_shards)
  return f"tfrecord:{tmp_path}/out/*.tfrecord"


def test_tfrecord_class_names_in_another_order_remap_the_stored_labels_by_name(tmp_path):
  glob = converted(tmp_path, num_shards=2)
  stored, _ = data.load_splits(config.DataConfig(dataset=glob))
  splits, info = data.load_splits(config.DataConfig(dataset=glob, class_names="pos,neg"))
  assert info.class_names == ("pos", "neg")
  flipped = {s: sorted((t, 1 - l) for t, l in ex) for s, ex in examples(stored).items()}
  assert examples(splits) == flipped  # "bad" texts are neg: id 0 stored, id 1 asked for.
  assert info.report["class_balance"]["train"]["neg"] == sum(
      1 for t, _ in examples(stored)["train"] if "bad" in t)


def test_tfrecord_class_names_that_differ_from_the_stored_ones_are_refused(tmp_path):
  glob = converted(tmp_path, num_shards=1)
  with pytest.raises(ConfigError) as e:
    data.load_splits(config.DataConfig(dataset=glob, class_names="negative,pos"))
  assert str(e.value) == (
      f"--class_names=negative,pos: --dataset={glob} stores the classes neg, pos "
      f"(in {tmp_path}/out/dataset_info.json); --class_names must name the same classes "
      "(in any order: labels are remapped by name) or be left out. Not stored: negative; "
      "left out: neg.")


def test_convert_refuses_a_folder_that_holds_files_so_no_stale_shard_is_read(tmp_path):
  out = tmp_path / "out"
  converted(tmp_path, num_shards=3)
  before = sorted(os.listdir(out))
  with pytest.raises(ConfigError) as e:
    convert.convert(skipping_cfg(tmp_path), str(out), num_shards=2)  # Would leave the 3-shard files beside.
  assert str(e.value) == (
      f"--output_dir={out}: holds 10 files already (dataset_info.json, "
      "test-00000-of-00003.tfrecord, ...); tfrecord:GLOB would read the files of an earlier "
      "convert with the new ones. Give an empty or new folder, or delete this one first.")
  assert sorted(os.listdir(out)) == before
