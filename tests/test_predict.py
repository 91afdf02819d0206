"""tfagent predict: texts from arguments, stdin or a csv/tsv/jsonl file; jsonl or csv out."""

import csv
import gzip
import io
import json
import os

import numpy as np
import pytest

from conftest import run_command
from tfagent import predict
from tfagent.errors import ConfigError, DataError

TEXTS = ["great movie loved it", "很差 讨厌", "a mess, truly awful"]


@pytest.fixture(scope="module")
def predictor(trained_run):
  return predict.Predictor(os.path.dirname(trained_run[1]["saved_model"]))


def test_rows_carry_class_names_probabilities_and_top_k(predictor, trained_run):
  import tensorflow as tf
  serve = tf.saved_model.load(trained_run[1]["saved_model"]).signatures["serving_default"]
  expected = serve(text=tf.constant(TEXTS))["probabilities"].numpy()
  rows = predictor.predict(TEXTS, top_k=2)
  assert predictor.class_names == ["negative", "positive"]
  assert [r["class"] for r in rows] == ["positive", "negative", "negative"]
  np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-6)
  for row, probs in zip(rows, expected):
    names = [name for name, _ in row["top_k"]]
    assert names == [predictor.class_names[i] for i in np.argsort(-probs)]
    assert row["top_k"][0][1] >= row["top_k"][1][1]


def test_file_texts_read_csv_tsv_jsonl_and_gzip(tmp_path):
  (tmp_path / "a.csv").write_text('id,text\n1,"one, two"\n2,three\n', encoding="utf-8-sig")
  (tmp_path / "a.tsv").write_text("text\tid\nfour\t1\n", encoding="utf-8")
  with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
    f.write('{"text": "five"}\n\n{"text": "六"}\n')
  assert list(predict.file_texts(str(tmp_path / "a.csv"), "text")) == ["one, two", "three"]
  assert list(predict.file_texts(str(tmp_path / "a.tsv"), "text")) == ["four"]
  assert list(predict.file_texts(str(tmp_path / "a.jsonl.gz"), "text")) == ["five", "六"]


@pytest.fixture
def fresh_csv_field_limit():
  """csv's default field limit (128 KiB), as in a new process: readers run before raise it."""
  before = csv.field_size_limit(128 * 1024)
  yield
  csv.field_size_limit(before)


def test_a_200_kib_csv_text_that_training_accepts_is_classified(
    predictor, tmp_path, fresh_csv_field_limit):
  from tfagent import config, data
  long = " ".join(["great movie loved it"] * 10_000)  # 200 KiB: over csv's 128 KiB default.
  path = tmp_path / "long.csv"
  path.write_text(f"text,label\n{long},positive\nbad,negative\n", encoding="utf-8")
  out = io.StringIO()
  texts = predict.input_texts([], str(path), "text", None)
  assert predict.predict_stream(predictor, texts, out, "jsonl", 0, 8) == 2
  rows = [json.loads(line) for line in out.getvalue().splitlines()]
  assert [r["text"] for r in rows] == [long, "bad"] and len(long) > 200 * 1024
  csv.field_size_limit(128 * 1024)  # Training's reader, from the same default, takes it too.
  examples = data.load_all(config.DataConfig(dataset=f"csv:{path}",
                                             class_names="negative,positive"))[0]
  assert long.encode() in [t for t, _ in examples.as_numpy_iterator()]


@pytest.mark.parametrize("content,name,message", [
    ("id,body\n1,x\n", "a.csv", "a.csv:1: no column 'text' (--text_field)"),
    ("text\nok\n\"\"\n", "b.csv", "b.csv:3: empty text in field 'text'"),
    ('{"text": 3}\n', "c.jsonl", "c.jsonl:1: field 'text' is an int"),
    ("[1]\n", "d.jsonl", "d.jsonl:1: malformed line: a JSON list"),
    ("text,id\nhello, world,1\n", "f.csv", "f.csv:2: malformed line: 3 fields where the "
     "header has 2; quote fields that contain the delimiter."),
    ('text\n"open\n', "g.csv", "g.csv:2: a quoted field opens on this line"),
    ("x", "e.txt", "expected a .csv, .tsv or .jsonl file")])
def test_bad_input_files_name_the_place(tmp_path, content, name, message):
  (tmp_path / name).write_text(content, encoding="utf-8")
  with pytest.raises((DataError, ConfigError), match=message.replace("(", r"\(").replace(")", r"\)")):
    list(predict.file_texts(str(tmp_path / name), "text"))


def test_batches_read_the_input_lazily():
  taken = []

  def texts():
    for i in range(10_000):
      taken.append(i)
      yield f"t{i}"
  first = next(predict.batches(texts(), 3))
  assert first == ["t0", "t1", "t2"] and len(taken) == 3  # Not the whole input.


def test_one_string_is_one_text_and_a_mix_of_texts_and_pairs_is_refused(predictor):
  """A string given alone was classified a character a row ("awful" gave 5 rows)."""
  alone, listed = predictor.predict("a mess, truly awful"), predictor.predict([TEXTS[2]])
  assert [r["text"] for r in alone] == [TEXTS[2]]
  assert alone[0]["probabilities"] == listed[0]["probabilities"]
  assert [r["text"] for r in predictor.explain("a mess")] == ["a mess"]
  with pytest.raises(TypeError, match=r"texts\[1\] is \('b', 'c'\): give texts as strings"):
    predictor.predict(["a", ("b", "c")])
  with pytest.raises(TypeError, match=r"texts\[1\] is 'c'"):
    predictor.predict([("a", "b"), "c"])


def test_csv_output_has_a_column_per_class_or_the_top_k(predictor):
  import io
  out = io.StringIO()
  assert predict.predict_stream(predictor, iter(TEXTS), out, "csv", 0, 2) == 3
  rows = list(csv.reader(io.StringIO(out.getvalue())))
  assert rows[0] == ["text", "class", "probability_negative", "probability_positive"]
  assert [r[0] for r in rows[1:]] == TEXTS and rows[1][1] == "positive"
  out = io.StringIO()
  predict.predict_stream(predictor, iter(TEXTS), out, "csv", 1, 2)
  rows = list(csv.reader(io.StringIO(out.getvalue())))
  assert rows[0] == ["text", "class", "class_1", "probability_1"] and rows[1][2] == "positive"
  out = io.StringIO()  # More than the 2 classes: the header lists the 2 each row has.
  predict.predict_stream(predictor, iter(TEXTS), out, "csv", 4, 2)
  rows = list(csv.reader(io.StringIO(out.getvalue())))
  assert rows[0] == ["text", "class", "class_1", "probability_1", "class_2", "probability_2"]
  assert {len(r) for r in rows} == {6}


def test_command_from_a_csv_file_to_a_csv_file_and_from_stdin(trained_run, tmp_path,
                                                              monkeypatch, capfd):
  """`tfagent predict` in-process: --input/--output/--top_k, then standard input. (Texts as
  arguments: test_cli.py, with the one real process of this command.)"""
  base = os.path.dirname(trained_run[1]["saved_model"])
  (tmp_path / "in.csv").write_text("text,other\n" + "".join(f'"{t}",x\n' for t in TEXTS),
                                   encoding="utf-8")
  assert run_command(monkeypatch, "predict", f"--saved_model={base}",
                     f"--input={tmp_path / 'in.csv'}", f"--output={tmp_path / 'out.csv'}",
                     "--top_k=2") == 0
  rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
  assert [r["text"] for r in rows] == TEXTS and rows[0]["class"] == "positive"
  assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
  capfd.readouterr()
  assert run_command(monkeypatch, "predict", f"--saved_model={base}",
                     stdin="great movie loved it\n\n很差 讨厌\n") == 0
  assert [json.loads(l)["class"] for l in capfd.readouterr().out.splitlines()] == [
      "positive", "negative"]


def test_output_files_are_what_their_names_say(trained_run, tmp_path, monkeypatch):
  """An output ending in .gz is gzip (it was plain text under that name); --explain with an
  output ending in .jsonl writes JSON lines (it wrote the terminal view)."""
  base = os.path.dirname(trained_run[1]["saved_model"])
  for name in ("out.csv.gz", "out.jsonl.gz"):
    assert run_command(monkeypatch, "predict", f"--saved_model={base}",
                       f"--output={tmp_path / name}", *TEXTS) == 0
    with gzip.open(tmp_path / name, "rt", encoding="utf-8", newline="") as f:
      rows = (list(csv.DictReader(f)) if name.endswith(".csv.gz")
              else [json.loads(line) for line in f])
    assert [r["text"] for r in rows] == TEXTS, name
  assert run_command(monkeypatch, "predict", f"--saved_model={base}", "--explain",
                     f"--output={tmp_path / 'why.jsonl'}", *TEXTS[:2]) == 0
  rows = [json.loads(line) for line in open(tmp_path / "why.jsonl", encoding="utf-8")]
  assert [r["text"] for r in rows] == TEXTS[:2] and all(r["tokens"] for r in rows)


def test_a_multilabel_csv_refuses_class_names_holding_its_label_delimiter():
  """`a|b` joined with `c` reads back as three labels: such names get JSON lines instead."""
  with pytest.raises(ConfigError, match=r"\['a\|b'\] hold '\|'.*--format=jsonl"):
    predict.RowWriter(io.StringIO(), "csv", ["a|b", "c"], 0, multilabel=True)
  predict.RowWriter(io.StringIO(), "jsonl", ["a|b", "c"], 0, multilabel=True)  # Lists: fine.
  predict.RowWriter(io.StringIO(), "csv", ["a|b", "c"], 0)  # One class a row: fine.
