"""Bad and odd training files (issue 17): one clear error, or an honest count, every time.

Each case runs `tfagent.train.main` in-process on parsed flags, as
`python -m tfagent.train` does, and stops it where the model would be built: by
then the data has been read and checked and `data_report.json` written. The
last tests run the real command lines of train, convert and evaluate on some of
the same files and check they exit and word it the same way.
"""

import collections
import dataclasses
import json
import logging
import os
import subprocess
import sys

from absl import flags
import pytest

from conftest import run_command, write_csv
from tfagent import config, data
from tfagent.data.fields import REASONS

FLAGS = flags.FLAGS
TINY = ("--model=lstm", "--vocab_size=200", "--sequence_length=16", "--epochs=1",
        "--embedding_dim=8", "--hidden_dim=4", "--verbose=0")
SKIP_HINT = "Pass --on_bad_record=skip to skip such records"
# 40 distinct texts, both classes: enough that the hash split leaves both in train.
GOOD = [(f"review {i} was {'great' if i % 2 else 'awful'}", "pos" if i % 2 else "neg")
        for i in range(40)]


class ModelWouldBeBuilt(Exception):
  """train.main got past the data stage to where it builds the model."""


@dataclasses.dataclass
class Outcome:
  """What a user of `python -m tfagent.train` sees, and what the data stage kept."""
  code: int  # 1: stopped with an error; 0: the data stage passed.
  message: str  # The ERROR lines logged.
  report: dict  # MODEL_DIR/data_report.json, or None when none was written.
  examples: dict  # split -> sorted [(text, label name)], when the data stage passed.
  class_names: tuple = ()

  def kept(self) -> list:
    """Every kept (text, label name), all splits together, sorted."""
    return sorted(e for split in self.examples.values() for e in split)


@pytest.fixture(scope="module")
def train_module():
  from tfagent import train
  if "model_dir" not in FLAGS:  # Defined once per process, as the CLI does.
    train.define_flags()
  return train


@pytest.fixture
def run_train(train_module, tmp_path, monkeypatch, caplog):
  """Returns `run(*flags) -> Outcome`: train.main on those flags, stopped before the model."""
  real_load = data.load_splits
  loaded = {}

  def load_splits(data_cfg):
    loaded["splits"], loaded["info"] = real_load(data_cfg)
    return loaded["splits"], loaded["info"]

  def stop(*args, **kwargs):
    raise ModelWouldBeBuilt()
  monkeypatch.setattr(data, "load_splits", load_splits)
  from tfagent import training  # The library main runs; stop it before the model.
  monkeypatch.setattr(training, "build_and_compile", stop)

  def run(*args) -> Outcome:
    loaded.clear()
    caplog.clear()
    run_dir = tmp_path / f"run{len(os.listdir(tmp_path))}"
    FLAGS.unparse_flags()
    FLAGS(["tfagent.train", *TINY, f"--model_dir={run_dir}",
           f"--export_dir={run_dir}/export", *args])
    with caplog.at_level(logging.INFO):
      try:
        train_module.main(["tfagent.train"])
        code = 0
      except ModelWouldBeBuilt:
        code = 0
      except SystemExit as e:  # Any other exception fails the test: a traceback.
        code = e.code
    message = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    report_path = run_dir / "data_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return outcome(code, message, report, loaded)
  yield run
  FLAGS.unparse_flags()


def outcome(code, message, report, loaded) -> Outcome:
  """An Outcome; the splits are read back as (text, class name) pairs."""
  if "info" not in loaded or code:
    return Outcome(code, message, report, {})
  names = loaded["info"].class_names
  examples = {s: sorted((t.decode(), names[int(l)]) for t, l in ds.as_numpy_iterator())
              for s, ds in loaded["splits"].items()}
  return Outcome(code, message, report, examples, tuple(names))


def failed(result: Outcome, *parts: str) -> None:
  """Asserts a clean exit 1 whose message names every one of `parts`."""
  assert result.code == 1, result
  assert "Traceback" not in result.message
  for part in parts:
    assert part in result.message, (part, result.message)


def passed(result: Outcome) -> None:
  assert result.code == 0, result.message
  assert result.report is not None


def write_lines(path, lines: list, prefix: bytes = b"") -> str:
  """A file of lines given as str (UTF-8) or bytes, joined by newlines."""
  raw = [l if isinstance(l, bytes) else l.encode("utf-8") for l in lines]
  with open(path, "wb") as f:
    f.write(prefix + b"\n".join(raw) + b"\n")
  return str(path)


def jsonl(rows) -> list:
  return [json.dumps({"text": t, "label": l}) for t, l in rows]


# --- 1. Byte-order mark ------------------------------------------------------------------

def test_utf8_bom_csv_and_jsonl_read_as_utf8_sig(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", GOOD, encoding="utf-8-sig")
  assert open(path, "rb").read(3) == b"\xef\xbb\xbf"
  result = run_train(f"--dataset=csv:{path}")
  passed(result)
  assert result.kept() == sorted(GOOD)
  path = write_lines(tmp_path / "d.jsonl", jsonl(GOOD), prefix=b"\xef\xbb\xbf")
  result = run_train(f"--dataset=jsonl:{path}")
  passed(result)
  assert result.kept() == sorted(GOOD) and result.report["skipped_total"] == 0


def test_utf8_bom_in_a_dir_file_is_not_text(tmp_path):
  for label, i in (("neg", 0), ("pos", 1)):
    os.makedirs(tmp_path / "train" / label)
    for j in range(12):
      (tmp_path / "train" / label / f"{j}.txt").write_bytes(
          b"\xef\xbb\xbf" + f"text {label} {j}".encode())
  splits, _ = data.load_splits(config.DataConfig(dataset=f"dir:{tmp_path}"))
  texts = {t.decode() for ds in splits.values() for t, _ in ds.as_numpy_iterator()}
  assert texts == {f"text {label} {j}" for label in ("neg", "pos") for j in range(12)}


# --- 2. Labels that differ in case or spacing --------------------------------------------

CASED = GOOD + [("shouted great", "POS"), ("shouted awful", "Neg"), ("more shouting", "POS")]


def test_labels_differing_in_case_are_an_error_naming_both_spellings(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", CASED)
  result = run_train(f"--dataset=csv:{path}")
  failed(result, f"csv:{path}: field 'label': labels",
         f"'Neg' (1 record, first at {path}:43)", f"'neg' (20 records, first at {path}:2)",
         f"'POS' (2 records, first at {path}:42)", "'pos' (20 records",
         "differ only in case or spacing", "--normalize_labels")
  assert result.report is None


def test_normalize_labels_merges_spellings_and_reports_it(run_train, tmp_path):
  rows = CASED + [("spaced label", "very  good"), ("spaced again", "Very good")]
  path = write_csv(tmp_path / "d.csv", rows + [(f"filler {i}", "very good") for i in range(8)])
  failed(run_train(f"--dataset=csv:{path}"), "'Very good' (1 record,", "'very  good' (1 record,")
  result = run_train(f"--dataset=csv:{path}", "--normalize_labels")
  passed(result)
  assert result.class_names == ("neg", "pos", "very good")
  assert result.report["normalize_labels"] is True
  assert result.report["merged_labels"] == {
      "neg": {"Neg": 1, "neg": 20}, "pos": {"POS": 2, "pos": 20},
      "very good": {"Very good": 1, "very  good": 1, "very good": 8}}
  assert ("shouted awful", "neg") in result.kept() and ("more shouting", "pos") in result.kept()


def test_fixed_class_names_hint_at_a_near_spelling(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", CASED)
  failed(run_train(f"--dataset=csv:{path}", "--class_names=neg,pos"),
         f"{path}:42: unknown label 'POS' in field 'label'; expected one of neg, pos (or an "
         "id 0..1). It differs from 'pos' only in case or spacing: pass --normalize_labels",
         SKIP_HINT)
  result = run_train(f"--dataset=csv:{path}", "--class_names=neg,pos", "--normalize_labels")
  passed(result)
  assert result.class_names == ("neg", "pos") and len(result.kept()) == 43


# --- 3. Integer labels: ids only when exactly 0..C-1 -------------------------------------

@pytest.mark.parametrize("labels,classes,reading", [
    (["1", "2", "3", "4"], ("1", "2", "3", "4"), "numeric_names"),  # Star ratings.
    (["0", "1", "1000000"], ("0", "1", "1000000"), "numeric_names"),  # Not a million classes.
    (["2", "10"], ("2", "10"), "numeric_names"),  # Numerically, not as text ("10" < "2").
    (["-1", "1"], ("-1", "1"), "numeric_names"),
    (["2", "0", "1"], ("0", "1", "2"), "ids"),
    (["1", "²"], ("1", "²"), "names"),  # "²".isdigit(), but no number: a name, no ValueError.
])
def test_integer_labels_are_ids_only_when_exactly_0_to_c_minus_1(run_train, tmp_path, labels,
                                                                  classes, reading):
  rows = [(f"text {i}", labels[i % len(labels)]) for i in range(60)]
  result = run_train(f"--dataset=csv:{write_csv(tmp_path / 'd.csv', rows)}")
  passed(result)
  assert result.class_names == classes and result.report["class_names"] == list(classes)
  assert result.report["label_reading"] == reading
  assert result.kept() == sorted(rows)  # Each text keeps the class it was written with.


@pytest.mark.parametrize("one,other", [("1", "1.0"), ("1", "01"), ("1", "+1"),
                                       ("caf\u00e9", "cafe\u0301"), ("pos", "pos\u200b")])
def test_labels_written_two_ways_are_an_error_or_merged_when_asked(run_train, tmp_path, one,
                                                                   other):
  """A number written two ways, a composed and a decomposed accent, a zero-width space: two
  spellings of one label that would train as two classes (`cat` of two exports, an
  editor's invisible character). One error naming both; --normalize_labels merges them."""
  rows = [(t, one if l == "pos" else "neg") for t, l in GOOD]
  rows += [(f"more {t}", other) for t, l in GOOD if l == "pos"][:5]
  path = write_csv(tmp_path / "d.csv", rows)
  failed(run_train(f"--dataset=csv:{path}"), f"{other!r} (5 records, first at {path}:42)",
         "differ only in case or spacing (or Unicode form, invisible characters, or how a "
         "number is written)")
  passed(result := run_train(f"--dataset=csv:{path}", "--normalize_labels"))
  assert len(result.class_names) == 2 and len(result.kept()) == len(rows)


def test_superscript_digit_is_an_unknown_label_not_a_crash(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", GOOD[:20] + [("odd one", "²")] + GOOD[20:])
  failed(run_train(f"--dataset=csv:{path}", "--class_names=neg,pos"),
         f"{path}:22: unknown label '²' in field 'label'; expected one of neg, pos")


# --- 4. A quote that is never closed -------------------------------------------------------

def quoted_file(tmp_path, bad: str) -> str:
  lines = ["text,label"] + [f"{t},{l}" for t, l in GOOD[:10]] + [bad]
  return write_lines(tmp_path / "d.csv", lines + [f"{t},{l}" for t, l in GOOD[10:]])


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_unterminated_quote_is_an_error_in_every_mode_naming_its_line(run_train, tmp_path, mode):
  path = quoted_file(tmp_path, '"never closed,pos')
  failed(run_train(f"--dataset=csv:{path}", f"--on_bad_record={mode}"),
         f"{path}:12: a quoted field opens on this line and is not closed properly before "
         "the end of the file", "even with --on_bad_record=skip")


def test_quote_closed_lines_later_is_an_error_too(run_train, tmp_path):
  path = quoted_file(tmp_path, '"opens here,pos')
  with open(path, "a") as f:
    f.write('"closes" here,neg\n' + "".join(f"{t} again,{l}\n" for t, l in GOOD[:5]))
  failed(run_train(f"--dataset=csv:{path}", "--on_bad_record=skip"),
         f"{path}:12: a quoted field opens on this line and is not closed properly before "
         "line 43")


def test_quoted_newlines_doubled_quotes_and_stray_quote_on_one_line(run_train, tmp_path):
  rows = GOOD + [('line one\nline "two", with comma', "pos")]
  path = write_csv(tmp_path / "d.csv", rows)
  passed(result := run_train(f"--dataset=csv:{path}"))
  assert result.kept() == sorted(rows)
  with open(path, "a") as f:
    f.write('"closed"stray,neg\n')  # One bad line, nothing after it lost: skippable.
  failed(run_train(f"--dataset=csv:{path}"), f"{path}:44: malformed line", SKIP_HINT)
  result = run_train(f"--dataset=csv:{path}", "--on_bad_record=skip")
  passed(result)
  assert result.report["skipped"]["malformed"] == 1 and result.kept() == sorted(rows)


@pytest.mark.parametrize("bom", [False, True])
def test_a_header_repeated_mid_file_is_a_bad_record_not_a_class(run_train, tmp_path, bom):
  """`cat a.csv b.csv` (each with its header, each maybe starting with a BOM): the second
  header is a bad record naming its line; it never becomes a class "label"."""
  first = write_csv(tmp_path / "a.csv", GOOD[:20])
  second = write_csv(tmp_path / "b.csv", GOOD[20:], encoding="utf-8-sig" if bom else "utf-8")
  path = tmp_path / "joined.csv"
  path.write_bytes(open(first, "rb").read() + open(second, "rb").read())
  failed(run_train(f"--dataset=csv:{path}"), f"{path}:22: the header row again", SKIP_HINT)
  result = run_train(f"--dataset=csv:{path}", "--on_bad_record=skip")
  passed(result)
  assert result.class_names == ("neg", "pos") and result.kept() == sorted(GOOD)
  assert result.report["skipped"]["malformed"] == 1


def test_a_used_column_named_twice_in_the_header_is_an_error(run_train, tmp_path):
  """Two `label` columns that disagree: which is meant? One error naming the column; a
  repeated column that is not read is harmless."""
  path = write_csv(tmp_path / "d.csv", [(t, l, "neg") for t, l in GOOD],
                   header=("text", "label", "label"))
  failed(run_train(f"--dataset=csv:{path}"),
         f"{path}:1: the header names column 'label' (--label_field) 2 times")
  path = write_csv(tmp_path / "e.csv", [(t, l, "x", "y") for t, l in GOOD],
                   header=("text", "label", "note", "note"))
  passed(result := run_train(f"--dataset=csv:{path}"))
  assert result.kept() == sorted(GOOD)


def test_a_header_that_cannot_be_parsed_names_the_file_and_blank_lines_before_it_are_skipped(
    run_train, tmp_path):
  bad = write_lines(tmp_path / "bad.csv", ['"text"x,label', *[f"{t},{l}" for t, l in GOOD]])
  failed(run_train(f"--dataset=csv:{bad}"), f"{bad}:1: the header row cannot be read")
  blank = write_lines(tmp_path / "blank.csv", ["", "", "text,label",
                                                *[f"{t},{l}" for t, l in GOOD]])
  passed(result := run_train(f"--dataset=csv:{blank}"))
  assert result.kept() == sorted(GOOD)


@pytest.mark.parametrize("dataset", ["embedded:", "dir:{tmp}", "tfrecord:{tmp}/*.tfrecord",
                                     "tfds:imdb_reviews"])
def test_a_test_path_that_the_source_would_not_read_is_an_error(run_train, tmp_path, dataset):
  """--test_path is read by csv/tsv/jsonl only; given to another source it used to be ignored,
  and the test figures were of texts the user never chose."""
  test = write_csv(tmp_path / "test.csv", GOOD)
  dataset = dataset.format(tmp=tmp_path)
  failed(run_train(f"--dataset={dataset}", f"--test_path={test}"),
         f"--test_path={test}: --dataset={dataset} does not read it")


# --- 5. Compressed input -------------------------------------------------------------------

def test_truncated_gz_is_one_line_naming_the_file(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv.gz", GOOD * 5 + [(f"more {i}", "pos") for i in range(500)])
  raw = open(path, "rb").read()
  open(path, "wb").write(raw[:len(raw) // 2])  # An interrupted download.
  for mode in ("error", "skip"):
    result = run_train(f"--dataset=csv:{path}", f"--on_bad_record={mode}")
    failed(result, f"{path}: the gzip data ends early (a truncated or interrupted download?)")
    assert "\n" not in result.message


def test_gz_that_is_not_gzip_is_one_line_naming_the_file(run_train, tmp_path):
  plain = write_lines(tmp_path / "d.jsonl.gz", jsonl(GOOD))
  result = run_train(f"--dataset=jsonl:{plain}")
  failed(result, f"{plain}: not valid gzip data (Not a gzipped file", "drop .gz from its name")
  assert "\n" not in result.message


# --- 6. dir: reads class folders recursively ------------------------------------------------

def write_tree(root, counts: dict) -> None:
  """root/REL/i.txt for REL -> number of files; each text unique."""
  for rel, n in counts.items():
    os.makedirs(root / rel, exist_ok=True)
    for i in range(n):
      (root / rel / f"{i}.txt").write_text(f"{rel} text {i}", encoding="utf-8")


def test_dir_reads_nested_subfolders_and_reports_counts_per_class(run_train, tmp_path):
  write_tree(tmp_path / "d", {"train/neg": 10, "train/pos": 8, "train/pos/more": 4,
                              "train/pos/more/deeper": 2, "train/.hidden": 3})
  result = run_train(f"--dataset=dir:{tmp_path / 'd'}")
  passed(result)
  assert result.report["class_files"] == {"train": {"neg": 10, "pos": 14}}
  assert result.report["class_files_in_subfolders"] == {"train": {"neg": 0, "pos": 6}}
  assert sum(1 for _, l in result.kept() if l == "pos") == 14
  assert ("train/pos/more/deeper text 1", "pos") in result.kept()


def test_dir_test_folder_that_is_no_class_holds_unknown_labels(run_train, tmp_path):
  """Also a folder named like a class id (test/0): folder names are names, not ids."""
  write_tree(tmp_path / "d", {"train/neg": 10, "train/pos": 10, "test/neg": 3, "test/pos": 3,
                              "test/neutral": 2, "test/0": 2})
  failed(run_train(f"--dataset=dir:{tmp_path / 'd'}"),
         f"{tmp_path}/d/test/0/0.txt: unknown label '0'", "expected one of neg, pos.")
  result = run_train(f"--dataset=dir:{tmp_path / 'd'}", "--on_bad_record=skip")
  passed(result)
  assert result.report["skipped"]["unknown_label"] == 4 and len(result.examples["test"]) == 6


# --- 7. Classes with no training example; fewer than two classes ---------------------------

def test_empty_class_folder_is_an_error_naming_the_class(run_train, tmp_path):
  write_tree(tmp_path / "d", {"train/neg": 10, "train/pos": 10})
  os.makedirs(tmp_path / "d" / "train" / "neutral")
  failed(run_train(f"--dataset=dir:{tmp_path / 'd'}"),
         f"--dataset=dir:{tmp_path / 'd'}: class 'neutral' has no example in the train split")


def test_class_name_never_in_train_is_an_error_naming_it(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", GOOD)
  failed(run_train(f"--dataset=csv:{path}", "--class_names=neg,pos,neutral"),
         "class 'neutral' has no example in the train split", "leave it out of --class_names")


def test_single_class_is_an_error(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", [(t, "pos") for t, _ in GOOD])
  failed(run_train(f"--dataset=csv:{path}"), f"--dataset=csv:{path}: the train split has "
         "only class 'pos' ({'pos': ", "a classifier needs two classes at least")
  failed(run_train(f"--dataset=csv:{path}", "--class_names=pos"), "only class 'pos'")


def test_class_only_in_test(run_train, tmp_path):
  train = write_csv(tmp_path / "train.csv", GOOD)
  test = write_csv(tmp_path / "test.csv", [("fine", "pos"), ("so so", "neutral"), ("bad", "neg")])
  failed(run_train(f"--dataset=csv:{train}", f"--test_path={test}"),
         f"{test}:3: unknown label 'neutral' in field 'label'; expected one of neg, pos.")
  result = run_train(f"--dataset=csv:{train}", f"--test_path={test}", "--on_bad_record=skip")
  passed(result)
  assert result.report["skipped"]["unknown_label"] == 1
  assert result.examples["test"] == [("bad", "neg"), ("fine", "pos")]
  failed(run_train(f"--dataset=csv:{train}", f"--test_path={test}",
                   "--class_names=neg,pos,neutral"), "class 'neutral' has no example in the train")


# --- 8. Header-only or fully skipped train with --test_path --------------------------------

def test_header_only_train_with_test_path_is_the_plain_empty_split_error(run_train, tmp_path):
  train = write_csv(tmp_path / "train.csv", [])
  test = write_csv(tmp_path / "test.csv", GOOD[:4])
  failed(run_train(f"--dataset=csv:{train}", f"--test_path={test}"),
         f"--dataset=csv:{train}: the train split has no examples; a data set needs")


def test_fully_skipped_train_with_test_path_says_what_was_skipped(run_train, tmp_path):
  train = write_lines(tmp_path / "train.jsonl", ['{"text": " ", "label": "pos"}', "[1]"])
  test = write_lines(tmp_path / "test.jsonl", jsonl(GOOD[:4]))
  failed(run_train(f"--dataset=jsonl:{train}", f"--test_path={test}", "--on_bad_record=skip"),
         f"--dataset=jsonl:{train}: the train split has no examples (2 bad records were "
         "skipped: empty_text 1, malformed 1)")


# --- 10 and the rest: one bad record of each kind ------------------------------------------

def good_lines(kind: str) -> list:
  """GOOD as lines of a csv (header first) or jsonl file."""
  if kind == "csv":
    return [b"text,label"] + [f"{t},{l}".encode() for t, l in GOOD]
  return [line.encode() for line in jsonl(GOOD)]


# Bad lines of each file kind, by the reason they are skipped under: (id, line, what the
# message says after "PATH:LINE: ").
BAD = {
    "csv": {
        "malformed": [
            ("too_many_fields", b"good,pos,extra", "malformed line: 3 fields where the header "
             "has 2"),
            ("too_few_fields", b"lonely", "malformed line: 1 fields where the header has 2"),
            ("nul", b"nul \x00 inside,pos", "field 'text' holds a NUL character (at 4)")],
        "invalid_utf8": [
            ("invalid_utf8", b"bad \xff\xfe byte,neg", "not valid UTF-8 (byte 0xff in field "
             "'text')"),
            ("latin1", "café crème,pos".encode("latin-1"), "not valid UTF-8 (byte 0xe9 in field "
             "'text')")],
        "empty_text": [("whitespace_text", b" \t ,pos", "empty text in field 'text'; expected "
                        "non-blank text")],
        "missing_field": [("missing_label", b"no label,", "missing field 'label'")],
    },
    "jsonl": {
        "malformed": [
            ("array", b'["x", "pos"]', "malformed line: a JSON list, not an object"),
            ("number", b"42", "malformed line: a JSON int, not an object"),
            ("numeric_text", b'{"text": 5, "label": "pos"}', "field 'text' is an int; expected "
             "a string"),
            ("float_text", b'{"text": 0.5, "label": "pos"}', "field 'text' is a float"),
            ("nul", b'{"text": "a\\u0000b", "label": "pos"}', "field 'text' holds a NUL character "
             "(at 1)"),
            ("bad_json", b'{"text": "x", "label": ', "malformed line (Expecting value")],
        "missing_field": [
            ("null_text", b'{"text": null, "label": "pos"}', "field 'text' is null; expected a "
             "text in every record"),
            ("null_label", b'{"text": "x", "label": null}', "field 'label' is null"),
            ("missing_text", b'{"label": "pos"}', "missing field 'text'")],
    },
}


def bad_lines(kind: str) -> list:
  """BAD's lines of one file kind as `(id, line, reason, says)`."""
  return [(name, line, reason, says) for reason, cases in BAD[kind].items()
          for name, line, says in cases]


@pytest.mark.parametrize("kind,name,line,reason,says",
                         [(kind, *c) for kind in BAD for c in bad_lines(kind)],
                         ids=[f"{kind}-{c[0]}" for kind in BAD for c in bad_lines(kind)])
def test_each_bad_line_errors_naming_file_line_field(run_train, tmp_path, kind, name, line,
                                                    reason, says):
  good = good_lines(kind)
  at = 5 + (kind == "csv")  # After the header, if any, and five good lines.
  path = write_lines(tmp_path / f"d.{kind}", good[:at] + [line] + good[at:])
  failed(run_train(f"--dataset={kind}:{path}"), f"{path}:{at + 1}: {says}", SKIP_HINT)


@pytest.mark.parametrize("kind", BAD)
def test_skip_counts_every_bad_line_and_keeps_exactly_the_good_ones(run_train, tmp_path, kind):
  good, cases = good_lines(kind), bad_lines(kind)
  lines = good[:1] if kind == "csv" else []
  rows = good[len(lines):]
  for i, case in enumerate(cases):  # Four good lines, then one bad, and so on.
    lines += rows[4 * i:4 * i + 4] + [case[1]]
  path = write_lines(tmp_path / f"d.{kind}", lines + rows[4 * len(cases):])
  result = run_train(f"--dataset={kind}:{path}", "--on_bad_record=skip")
  passed(result)
  skipped = collections.Counter(case[2] for case in cases)  # Each under its own reason.
  assert result.report["skipped"] == {reason: skipped.get(reason, 0) for reason in REASONS}
  assert result.report["skipped_total"] == len(cases)
  assert result.kept() == sorted(GOOD)
  assert sum(result.report["split_sizes"].values()) == len(GOOD)


def test_crlf_line_ends_leave_no_carriage_return(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", GOOD, newline="\r\n")
  assert b"\r\n" in open(path, "rb").read()
  passed(result := run_train(f"--dataset=csv:{path}"))
  assert result.kept() == sorted(GOOD)
  path = tmp_path / "d.jsonl"
  path.write_bytes("\r\n".join(jsonl(GOOD)).encode() + b"\r\n")
  passed(result := run_train(f"--dataset=jsonl:{path}"))
  assert result.kept() == sorted(GOOD)


# --- Duplicates, headers, paths ---------------------------------------------------------------

def test_conflicting_duplicates_are_counted_and_dedup_drops_every_copy(run_train, tmp_path):
  rows = GOOD + [("same words", "pos"), ("same  words", "neg"), ("same words", "pos"),
                 (GOOD[0][0], GOOD[0][1])]
  path = write_csv(tmp_path / "d.csv", rows)
  result = run_train(f"--dataset=csv:{path}")
  passed(result)
  assert result.report["conflicting_labels"] == 1
  assert sum(result.report["duplicates"].values()) == 3 and len(result.kept()) == 44
  result = run_train(f"--dataset=csv:{path}", "--dedup")
  passed(result)
  assert result.report["removed"] == {"duplicates": 3, "train_test_overlap": 0,
                                      "conflicting_texts": 1}
  assert result.kept() == sorted(GOOD)  # Neither label of "same words" is kept.


def test_test_file_with_a_different_header(run_train, tmp_path):
  train = write_csv(tmp_path / "train.csv", GOOD)
  test = write_csv(tmp_path / "test.csv", [("pos", "fine text")], header=("label", "text"))
  passed(result := run_train(f"--dataset=csv:{train}", f"--test_path={test}"))
  assert result.examples["test"] == [("fine text", "pos")]  # Columns found by name.
  test = write_csv(tmp_path / "test2.csv", [("fine", "pos")], header=("review", "label"))
  failed(run_train(f"--dataset=csv:{train}", f"--test_path={test}"),
         f"{test}:1: no column 'text' (--text_field); the header has 'review', 'label'.")


def test_missing_paths_are_named(run_train, tmp_path):
  missing = tmp_path / "nope.csv"
  failed(run_train(f"--dataset=csv:{missing}"), f"--dataset: {missing} does not exist")
  train = write_csv(tmp_path / "d.csv", GOOD)
  failed(run_train(f"--dataset=csv:{train}", f"--test_path={missing}"),
         f"--test_path: {missing} does not exist")
  failed(run_train(f"--dataset=dir:{tmp_path}/nodir"), f"{tmp_path}/nodir/train: not a folder")
  failed(run_train(f"--dataset=embedded:{tmp_path}/nodir"), f"{tmp_path}/nodir/neg.txt")
  failed(run_train(f"--dataset=tfrecord:{tmp_path}/none/*.tfrecord"),
         f"tfrecord:{tmp_path}/none/*.tfrecord: matches no file")


def test_utf16_csv_is_named_as_such(run_train, tmp_path):
  path = write_csv(tmp_path / "d.csv", GOOD, encoding="utf-16")
  failed(run_train(f"--dataset=csv:{path}"), f"{path}:1: the header holds NUL bytes: the "
         "file looks like UTF-16")


def test_a_folder_given_as_a_csv_file(run_train, tmp_path):
  failed(run_train(f"--dataset=csv:{tmp_path}"),
         f"--dataset: {tmp_path} is a folder; csv:PATH takes one file")


# --- The real command lines ----------------------------------------------------------------

def cli(*args) -> subprocess.Popen:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_command_lines_exit_1_with_the_same_message_and_no_traceback(run_train, tmp_path):
  """One real process per command: exit status 1, the in-process message, no traceback.

  (The truncated-gzip train case ran here too; its message is checked in-process by
  test_truncated_gz_is_one_line_naming_the_file, and the train process by the case below.
  evaluate's real process: test_evaluate.py; its data error, in-process below.)
  """
  quote = quoted_file(tmp_path, '"never closed,pos')
  cases = {  # command line -> the same flags in-process.
      ("tfagent.train", f"--dataset=csv:{quote}", "--on_bad_record=skip", *TINY,
       f"--model_dir={tmp_path}/cli"): (f"--dataset=csv:{quote}", "--on_bad_record=skip"),
      ("tfagent.data.convert", f"--dataset=csv:{quote}", "--on_bad_record=skip",
       f"--output_dir={tmp_path}/out"): (f"--dataset=csv:{quote}", "--on_bad_record=skip"),
  }
  procs = {args: cli(*args) for args in cases}  # In parallel: each spends seconds importing TF.
  for args, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    expected = run_train(*cases[args])
    assert expected.code == 1 and expected.message
    assert proc.returncode == 1, (args, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-2000:]
    assert expected.message in stderr, (args, expected.message, stderr[-2000:])


def test_evaluate_of_a_run_with_a_bad_record_says_what_train_says(run_train, tmp_path,
                                                                   monkeypatch, caplog):
  """`tfagent evaluate --model_dir` in-process reads the run's data as train does: exit 1
  and train's message."""
  quote = quoted_file(tmp_path, '"never closed,pos')
  run_dir = tmp_path / "evalrun"
  config.save_json(config.Config(data=config.DataConfig(dataset=f"csv:{quote}",
                                                         on_bad_record="skip")),
                   str(run_dir / "config.json"))
  expected = run_train(f"--dataset=csv:{quote}", "--on_bad_record=skip")
  assert expected.code == 1 and expected.message
  caplog.clear()
  with caplog.at_level(logging.INFO):
    assert run_command(monkeypatch, "evaluate", f"--model_dir={run_dir}") == 1
  message = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
  assert expected.message in message, (expected.message, message)
