"""Data sources: csv/tsv/jsonl/dir/tfds files written here, validation errors and reports."""

import io
import json
import os
import re
import tarfile

import pytest
import tensorflow as tf

from conftest import write_csv
from tfagent import config, data
from tfagent.errors import ConfigError, DataError

HINT = (" Pass --on_bad_record=skip to skip such records (they are counted in "
        "data_report.json).")


def reviews(n=60):
  """n distinct labelled texts, alternating pos/neg."""
  return [(f"review number {i} was {'great' if i % 2 else 'awful'}", "pos" if i % 2 else "neg")
          for i in range(n)]


def write_jsonl(path, objs):
  with open(path, "w", encoding="utf-8") as f:
    for o in objs:
      f.write((o if isinstance(o, str) else json.dumps(o)) + "\n")
  return str(path)


def load(dataset, **kw):
  return data.load_splits(config.DataConfig(dataset=dataset, **kw))


def all_examples(splits):
  return {name: [(t.decode(), int(l)) for t, l in ds.as_numpy_iterator()]
          for name, ds in splits.items()}


def test_csv_string_labels_sorted_and_split_by_hash(tmp_path):
  path = write_csv(tmp_path / "d.csv", reviews())
  splits, info = load(f"csv:{path}")
  assert info.class_names == ("neg", "pos")
  assert sum(info.split_sizes.values()) == 60
  got = all_examples(splits)
  texts = [t for s in got.values() for t, _ in s]
  assert len(set(texts)) == 60
  for text, label in got["train"]:
    assert label == (1 if "great" in text else 0)
  assert info.report["skipped_total"] == 0
  assert info.report["class_balance"]["train"]["neg"] + info.report["class_balance"]["train"]["pos"] \
      == info.split_sizes["train"]


def test_csv_multiline_quoted_text_and_custom_fields_and_gzip(tmp_path):
  rows = [(str(i), f'line one {i}\nline "two", {i}', str(i % 3)) for i in range(40)]
  path = write_csv(tmp_path / "d.csv.gz", rows, header=("id", "body", "y"))
  splits, info = load(f"csv:{path}", text_field="body", label_field="y")
  assert info.class_names == ("0", "1", "2")  # Integer ids: classes 0..max.
  texts = {t for s in all_examples(splits).values() for t, _ in s}
  assert 'line one 7\nline "two", 7' in texts


def test_class_names_fix_order_and_accept_ids(tmp_path):
  rows = [("good one", "pos"), ("bad one", "0")] + reviews(40)
  path = write_csv(tmp_path / "d.csv", rows)
  splits, info = load(f"csv:{path}", class_names="pos,neg")
  assert info.class_names == ("pos", "neg")
  got = dict(t for s in all_examples(splits).values() for t in s)
  assert got["good one"] == 0 and got["bad one"] == 0  # "0" is the id of "pos".
  assert got["review number 1 was great"] == 0


def test_tsv_and_test_path_carve_validation_from_train_only(tmp_path):
  train = write_csv(tmp_path / "train.tsv", reviews(100), delimiter="\t")
  test = write_csv(tmp_path / "test.tsv", [(f"test text {i}", "pos" if i % 2 else "neg")
                                           for i in range(10)], delimiter="\t")
  splits, info = load(f"tsv:{train}", test_path=test, validation_fraction=0.2)
  got = all_examples(splits)
  assert sorted(t for t, _ in got["test"]) == sorted(f"test text {i}" for i in range(10))
  assert info.split_sizes["train"] + info.split_sizes["validation"] == 100
  assert 8 <= info.split_sizes["validation"] <= 35
  again, _ = load(f"tsv:{train}", test_path=test, validation_fraction=0.2)
  assert all_examples(again)["validation"] == got["validation"]  # Seeded, stable.


def test_duplicates_and_overlap_are_counted_and_dedup_removes_them(tmp_path):
  rows = reviews(40) + [("review number 3 was great", "pos"),
                        ("review  number 3 was great ", "pos"),  # Spacing differs.
                        ("shared text", "pos")]
  train = write_csv(tmp_path / "train.csv", rows)
  test = write_csv(tmp_path / "test.csv", [("shared text", "pos"), ("only test", "neg"),
                                           ("only test", "neg")])
  _, info = load(f"csv:{train}", test_path=test)
  rep = info.report
  assert sum(rep["duplicates"].values()) == 3 and rep["duplicates"]["test"] == 1
  assert rep["train_test_overlap"] == 1 and rep["removed"]["duplicates"] == 0
  assert sum(info.split_sizes.values()) == 46
  splits, info = load(f"csv:{train}", test_path=test, dedup=True)
  got = all_examples(splits)
  assert sum(info.split_sizes.values()) == 46 - 3 - 1
  assert info.report["removed"] == {"duplicates": 3, "train_test_overlap": 1,
                                    "conflicting_texts": 0}
  train_texts = [t for s in ("train", "validation") for t, _ in got[s]]
  assert "shared text" not in train_texts and ("shared text", 1) in got["test"]
  assert len(train_texts) == len(set(train_texts)) == 40


BAD_CSV = [
    (b'text,label\n   ,pos\n', "d.csv:2: empty text in field 'text'; expected non-blank text."),
    (b'text,label\ngood,\n', "d.csv:2: missing field 'label'; expected a label in every record."),
    (b'text,label\ngood,maybe\n', "d.csv:2: unknown label 'maybe' in field 'label'; expected "
     "one of neg, pos (or an id 0..1)."),
    (b'text,label\ngood,pos,extra\n', "d.csv:2: malformed line: 3 fields where the header "
     "has 2; quote fields that contain the delimiter."),
    (b'text,label\ngo\xffod,pos\n', "d.csv:2: not valid UTF-8 (byte 0xff in field 'text'); "
     "re-encode the file as UTF-8."),
]


@pytest.mark.parametrize("content,message", BAD_CSV)
def test_each_bad_csv_record_is_an_error_naming_file_and_line(tmp_path, content, message):
  path = tmp_path / "d.csv"
  path.write_bytes(content)
  with pytest.raises(DataError) as e:
    load(f"csv:{path}", class_names="neg,pos")
  assert str(e.value) == f"{tmp_path}/{message}{HINT}"


BAD_JSONL = [
    ('{"text": " ", "label": 1}', "empty_text", "d.jsonl:2: empty text in field 'text'; "
     "expected non-blank text."),
    ('{"label": 1}', "missing_field", "d.jsonl:2: missing field 'text'; expected a text "
     "in every record."),
    ('{"text": "x"}', "missing_field", "d.jsonl:2: missing field 'label'; expected a label "
     "in every record."),
    ('{"text": "x", "label": 7}', "unknown_label", "d.jsonl:2: unknown label '7' in field "
     "'label'; expected one of neg, pos (or an id 0..1)."),
    ('{"text": "x", "label": 1.5}', "unknown_label", "d.jsonl:2: label 1.5 in field 'label' "
     "is neither a class name nor an integer id."),
    ('{"text": "x", "label": 1', "malformed", "d.jsonl:2: malformed line (Expecting ',' "
     "delimiter at column 25); expected one JSON object per line."),
    ('["x", 1]', "malformed", "d.jsonl:2: malformed line: a JSON list, not an object; "
     "expected one JSON object per line."),
    ('{"text": 5, "label": 1}', "malformed", "d.jsonl:2: field 'text' is an int; expected "
     "a string."),
    (b'{"text": "\xc3(", "label": 1}', "invalid_utf8", "d.jsonl:2: not valid UTF-8 (byte "
     "0xc3); re-encode the file as UTF-8."),
]


@pytest.mark.parametrize("line,reason,message", BAD_JSONL)
def test_each_bad_jsonl_record_errors_or_is_skipped_and_counted(tmp_path, line, reason, message):
  line = line if isinstance(line, bytes) else line.encode()
  good = [json.dumps({"text": t, "label": int(l == "pos")}).encode() for t, l in reviews(40)]
  path = tmp_path / "d.jsonl"
  path.write_bytes(b"\n".join(good[:1] + [line] + good[1:]) + b"\n")
  with pytest.raises(DataError) as e:
    load(f"jsonl:{path}", class_names="neg,pos")
  assert str(e.value) == f"{tmp_path}/{message}{HINT}"
  _, info = load(f"jsonl:{path}", class_names="neg,pos", on_bad_record="skip")
  assert info.report["skipped"][reason] == 1 and info.report["skipped_total"] == 1
  assert info.report["skipped_examples"][reason] == [f"{tmp_path}/{message}"]
  assert sum(info.split_sizes.values()) == 40  # Every good record kept.


def test_learned_classes_make_unseen_test_labels_unknown(tmp_path):
  train = write_csv(tmp_path / "train.csv", reviews(30))
  test = write_csv(tmp_path / "test.csv", [("fine", "pos"), ("odd", "meh")])
  with pytest.raises(DataError, match=r"test\.csv:3: unknown label 'meh' in field 'label'; "
                     r"expected one of neg, pos\. Pass"):
    load(f"csv:{train}", test_path=test)


def test_missing_column_and_missing_file_are_named(tmp_path):
  path = write_csv(tmp_path / "d.csv", [("a", "b")], header=("review", "label"))
  with pytest.raises(DataError, match=r"d\.csv:1: no column 'text' \(--text_field\); the "
                     r"header has 'review', 'label'\."):
    load(f"csv:{path}")
  with pytest.raises(DataError, match=r"--test_path: .*nope\.csv does not exist"):
    load(f"csv:{path}", test_path=str(tmp_path / "nope.csv"))


def test_skips_are_written_to_data_report_json(tmp_path):
  path = tmp_path / "d.csv"
  rows = "".join(f"{t},{l}\n" for t, l in reviews(40))
  path.write_text("text,label\n" + rows + " ,pos\nx,\n", encoding="utf-8")
  _, info = load(f"csv:{path}", on_bad_record="skip")
  data.write_report(info, str(tmp_path / "run" / "data_report.json"))
  report = json.loads((tmp_path / "run" / "data_report.json").read_text())
  assert report["skipped"]["empty_text"] == 1 and report["skipped"]["missing_field"] == 1
  assert report["class_names"] == ["neg", "pos"] and sum(report["split_sizes"].values()) == 40
  assert set(report["class_balance"]) == {"train", "validation", "test"}


def test_streamed_source_matches_in_memory(tmp_path):
  path = write_csv(tmp_path / "d.csv", reviews(50))
  mem, info_mem = load(f"csv:{path}")
  streamed, info_st = load(f"csv:{path}", cache_max_mb=0)
  assert tf.get_static_value(streamed["train"].cardinality()) < 0  # A real stream.
  assert all_examples(mem) == all_examples(streamed)
  assert info_mem.split_sizes == info_st.split_sizes
  assert info_mem.report["class_balance"] == info_st.report["class_balance"]


def write_class_dirs(root, splits=("train", "test"), n=20, extra=()):
  for split in splits:
    for label in ("neg", "pos") + tuple(extra):
      os.makedirs(root / split / label, exist_ok=True)
      for i in range(n):
        (root / split / label / f"{i}_7.txt").write_text(f"{split} {label} text {i}",
                                                        encoding="utf-8")


def test_dir_source_reads_imdb_layout_and_leaves_out_unsup(tmp_path):
  write_class_dirs(tmp_path, extra=("unsup",))
  splits, info = load(f"dir:{tmp_path}", class_names="neg,pos")
  got = all_examples(splits)
  assert info.class_names == ("neg", "pos") and info.report["ignored_folders"] == ["unsup"]
  assert sorted(got["test"]) == sorted([(f"test neg text {i}", 0) for i in range(20)]
                                       + [(f"test pos text {i}", 1) for i in range(20)])
  assert info.split_sizes["train"] + info.split_sizes["validation"] == 40
  _, all_classes = load(f"dir:{tmp_path}")
  assert all_classes.class_names == ("neg", "pos", "unsup")


def test_dir_source_bad_files_name_the_file(tmp_path):
  write_class_dirs(tmp_path, splits=("train",))
  (tmp_path / "train" / "pos" / "blank.txt").write_text("  \n", encoding="utf-8")
  (tmp_path / "train" / "neg" / "bad.txt").write_bytes(b"ab\xfe")
  with pytest.raises(DataError) as e:
    load(f"dir:{tmp_path}")
  assert str(e.value) == (f"{tmp_path}/train/neg/bad.txt: not valid UTF-8 (byte 0xfe at "
                          f"offset 2); re-encode the file as UTF-8.{HINT}")
  _, info = load(f"dir:{tmp_path}", on_bad_record="skip")
  assert info.report["skipped"]["invalid_utf8"] == 1
  assert info.report["skipped"]["empty_text"] == 1
  assert sum(info.split_sizes.values()) == 40


def test_unknown_kind_lists_new_kinds():
  with pytest.raises(ConfigError, match="valid kinds: csv, dir, embedded, jsonl, tfds, "
                     "tfrecord, tsv"):
    load("parquet:x")


# --- TFDS, offline -----------------------------------------------------------------------

def build_aclimdb_archive(path, n=6, extra=()):
  """A tiny aclImdb_v1.tar.gz in the layout of the original (train|test)/(neg|pos|unsup).

  `extra`: more (member name, text) pairs, e.g. a bad review.
  """
  def add(tar, name, text):
    raw = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    tar.addfile(info, io.BytesIO(raw))
  with tarfile.open(path, "w:gz") as tar:
    for split in ("train", "test"):
      for label in ("neg", "pos"):
        for i in range(n):
          add(tar, f"aclImdb/{split}/{label}/{i}_{3 if label == 'neg' else 8}.txt",
              f"{split} {label} review {i}: {'awful' if label == 'neg' else 'great'} film")
    add(tar, "aclImdb/train/unsup/0_0.txt", "an unlabelled review")
    for name, text in extra:
      add(tar, name, text)
  return str(path)


@pytest.fixture
def offline_imdb(tmp_path, monkeypatch):
  """Registers the tiny archive's checksum for imdb_reviews, in this process only.

  TFDS takes a hand-placed archive from the manual dir but checks it against the
  checksum it ships for the URL (the real 80 MB archive). A test cannot ship
  that file, so we register our archive's checksum the way TFDS loads them (the
  builder's `url_infos` table); download manager, manual-dir lookup, the real
  imdb_reviews example generator and preparation all run unchanged.
  """
  return place_imdb_archive(tmp_path, monkeypatch)


def place_imdb_archive(tmp_path, monkeypatch, extra=()):
  """Writes the tiny archive into tmp_path/manual and registers its checksum (see above)."""
  from etils import epath
  from tensorflow_datasets.core.download import checksums
  from tensorflow_datasets.datasets.imdb_reviews import imdb_reviews_dataset_builder as imdb
  manual = tmp_path / "manual"
  manual.mkdir()
  archive = build_aclimdb_archive(manual / "aclImdb_v1.tar.gz", extra=extra)
  info = checksums.compute_url_info(epath.Path(archive))
  monkeypatch.setattr(imdb.Builder, "url_infos", {imdb._DOWNLOAD_URL: info})
  return tmp_path


def offline_cfg(root, **kw):
  """DataConfig fields for imdb_reviews prepared from the archive under `root`."""
  return dict(tfds_data_dir=str(root / "tfds"), tfds_manual_dir=str(root / "manual"),
              validation_fraction=0.3, **kw)


def test_tfds_imdb_reviews_prepared_offline_from_a_hand_placed_archive(offline_imdb):
  cfg = dict(tfds_data_dir=str(offline_imdb / "tfds"),
             tfds_manual_dir=str(offline_imdb / "manual"), validation_fraction=0.3)
  splits, info = load("tfds:imdb_reviews", **cfg)
  assert info.class_names == ("neg", "pos")
  got = all_examples(splits)
  assert sorted(got["test"]) == sorted([(f"test neg review {i}: awful film", 0) for i in range(6)]
                                       + [(f"test pos review {i}: great film", 1) for i in range(6)])
  train = got["train"] + got["validation"]
  assert len(train) == 12 and all(("great" in t) == bool(l) for t, l in train)
  again, _ = load("tfds:imdb_reviews", **cfg)  # Prepared once; reused.
  assert all_examples(again) == got


def test_tfds_offline_without_the_archive_names_the_file_to_place(tmp_path, monkeypatch):
  from tfagent.data import tfds_source
  monkeypatch.setattr(tfds_source, "_reachable", lambda url: False)
  with pytest.raises(DataError) as e:
    load("tfds:imdb_reviews", tfds_data_dir=str(tmp_path / "tfds"),
         tfds_manual_dir=str(tmp_path / "manual"))
  assert str(e.value) == (
      "tfds:imdb_reviews: cannot reach http://ai.stanford.edu/~amaas/data/sentiment/"
      f"aclImdb_v1.tar.gz and {tmp_path}/tfds/imdb_reviews/plain_text/1.0.0 is not prepared. "
      f"Download that URL elsewhere and place it as {tmp_path}/manual/aclImdb_v1.tar.gz "
      "(or pass --tfds_manual_dir=FOLDER holding it), then run again.")


def test_tfds_unknown_name_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="--dataset=tfds:no_such_set: .*give a TFDS name"):
    load("tfds:no_such_set", tfds_data_dir=str(tmp_path))


def test_tfds_unlabelled_examples_are_unknown_labels(offline_imdb):
  cfg = dict(tfds_data_dir=str(offline_imdb / "tfds"),
             tfds_manual_dir=str(offline_imdb / "manual"), tfds_test_split="unsupervised",
             validation_fraction=0.3)
  with pytest.raises(DataError) as e:
    load("tfds:imdb_reviews", **cfg)
  assert str(e.value) == ("tfds:imdb_reviews/plain_text/1.0.0 unsupervised record 0: unknown "
                          "label '-1' in field 'label'; expected one of neg, pos (or an id "
                          f"0..1).{HINT}")
  with pytest.raises(DataError, match="the test split has no examples"):
    load("tfds:imdb_reviews", on_bad_record="skip", **cfg)


def test_tfds_class_names_in_another_order_remap_labels_by_name(offline_imdb):
  splits, info = load("tfds:imdb_reviews", **offline_cfg(offline_imdb, class_names="pos,neg"))
  assert info.class_names == ("pos", "neg")
  got = all_examples(splits)
  assert len(got["test"]) == 12 and all(("great" in t) == (l == 0) for t, l in got["test"])


def test_tfds_class_names_other_than_its_own_are_refused(offline_imdb):
  with pytest.raises(ConfigError) as e:
    load("tfds:imdb_reviews", **offline_cfg(offline_imdb, class_names="bad,good"))
  assert str(e.value) == (
      "--class_names=bad,good: --dataset=tfds:imdb_reviews stores the classes neg, pos (in "
      "the ClassLabel feature 'label' of imdb_reviews/plain_text/1.0.0); --class_names must "
      "name the same classes (in any order: labels are remapped by name) or be left out. "
      "Not stored: bad, good; left out: neg, pos.")


def test_tfds_bad_record_messages_name_the_data_set(tmp_path, monkeypatch):
  empty = [(f"aclImdb/train/pos/{100 + i}_9.txt", " ") for i in range(4)]
  root = place_imdb_archive(tmp_path, monkeypatch, extra=empty)
  _, info = load("tfds:imdb_reviews", **offline_cfg(root, on_bad_record="skip"))
  shown = info.report["skipped_examples"]["empty_text"]
  assert len(shown) == 4
  for message in shown:  # Each at its own record of the train split.
    assert re.fullmatch(r"tfds:imdb_reviews/plain_text/1\.0\.0 train record \d+: empty text "
                        r"in field 'text'; expected non-blank text\.", message), message


def test_tsv_bad_records_name_the_tab_delimiter(tmp_path):
  path = tmp_path / "d.tsv"
  path.write_bytes(b"text\tlabel\ngood\tpos\textra\n")
  with pytest.raises(DataError) as e:
    load(f"tsv:{path}")
  assert str(e.value) == (f"{path}:2: malformed line: 3 fields where the header has 2; "
                          f"quote fields that contain the delimiter.{HINT}")
  path.write_bytes(b"text\tlabel\n \tpos\n")
  with pytest.raises(DataError, match=r"d\.tsv:2: empty text in field 'text'"):
    load(f"tsv:{path}")


def test_max_train_examples_samples_both_classes_of_a_sorted_file(tmp_path):
  rows = sorted(reviews(200), key=lambda r: r[1])  # All neg first, as many files are.
  path = write_csv(tmp_path / "d.csv", rows)
  splits, info = load(f"csv:{path}", max_train_examples=20)
  labels = [l for _, l in all_examples(splits)["train"]]
  assert info.split_sizes["train"] == 20 and 0 < sum(labels) < 20
  assert info.report["class_balance"]["train"] == {"neg": 20 - sum(labels), "pos": sum(labels)}


@pytest.mark.parametrize("bad", [-1, 2])
def test_a_tfrecord_label_outside_the_classes_stops_with_one_line(tmp_path, bad, caplog):
  """Shards written by other tools (no dataset_info.json, --class_names given): a label of -1
  would read as the last class in every per-class figure, one of 2 fail far from its cause;
  the stream stops at it, and the commands say so in one line."""
  from tfagent import cli  # pylint: disable=import-outside-toplevel
  from tfagent.data import tfrecord  # pylint: disable=import-outside-toplevel
  for split in data.SPLITS:
    with tf.io.TFRecordWriter(str(tmp_path / f"{split}-00000-of-00001.tfrecord")) as w:
      for i in range(20):
        w.write(tfrecord.serialize(f"text {i}".encode(), bad if i == 13 else i % 2))
  cfg = config.DataConfig(dataset=f"tfrecord:{tmp_path}/*.tfrecord", class_names="neg,pos")
  splits, _ = data.load_splits(cfg)
  with caplog.at_level("ERROR"), pytest.raises(SystemExit) as e:
    cli.run_main(lambda: list(splits["test"].as_numpy_iterator()))
  assert e.value.code == 1
  assert f"a tfrecord label outside 0..1 (2 classes) in --dataset (got {bad})" in caplog.text
  good = [int(y) for _, y in splits["train"].take(13).as_numpy_iterator()]
  assert good == [i % 2 for i in range(13)]


def test_a_tfrecord_record_without_its_label_feature_stops_with_one_line(tmp_path, caplog):
  """Shards of another tool that lack the `label` feature: TensorFlow's parse error, shown by
  the commands as one line naming the feature."""
  from tfagent import cli  # pylint: disable=import-outside-toplevel
  for split in data.SPLITS:
    with tf.io.TFRecordWriter(str(tmp_path / f"{split}-00000-of-00001.tfrecord")) as w:
      for i in range(4):
        text = tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"text {i}".encode()]))
        example = tf.train.Example(features=tf.train.Features(feature={"text": text}))
        w.write(example.SerializeToString())
  cfg = config.DataConfig(dataset=f"tfrecord:{tmp_path}/*.tfrecord", class_names="neg,pos")
  splits, _ = data.load_splits(cfg)
  with caplog.at_level("ERROR"), pytest.raises(SystemExit) as e:
    cli.run_main(lambda: list(splits["train"].as_numpy_iterator()))
  assert e.value.code == 1
  assert "a TFRecord record lacks the feature 'label' (int64) in --dataset" in caplog.text
