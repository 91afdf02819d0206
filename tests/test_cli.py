"""Entry points run as users run them: clear errors, JSON predictions, evaluation."""

import json
import os
import subprocess
import sys

import pytest

from conftest import run_command
from tfagent.errors import TfagentError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args, stdin=None, cwd=None):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        input=stdin, env=ENV, timeout=300, cwd=cwd)


def assert_clean_error(proc, pattern):
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert pattern in proc.stderr, proc.stderr[-2000:]


def train_error(flagfile=None, **overrides) -> str:
  """The TfagentError message of `tfagent.train` in-process (the command's own path).

  `train.run` parses flags exactly as `python -m tfagent.train` does (absl, the
  same definitions) and raises where the command logs one line and exits 1;
  `test_command_line_errors_are_one_line_without_a_traceback` checks that last
  step in real processes.
  """
  from tfagent import train
  with pytest.raises(TfagentError) as raised:
    train.run(flagfile, **overrides)
  return str(raised.value)


def test_unknown_model_flag():
  assert "flag --model=cnn: value should be one of <lstm|transformer|bert>" in train_error(
      model="cnn")


def test_missing_bert_preset_names_the_flag_before_reading_data(tmp_path):
  assert f"--preset={tmp_path}/nowhere: no such directory" in train_error(
      model="bert", preset=f"{tmp_path}/nowhere", model_dir=f"{tmp_path}/run")
  assert not os.path.exists(tmp_path / "run")  # Failed before any work.


def test_bad_truncation_flag():
  assert "--truncation=middle: value should be one of <head|tail|head_tail>" in train_error(
      model="bert", truncation="middle")


def test_missing_flagfile():
  assert "configs/nope.flags" in train_error("configs/nope.flags")


def test_empty_dataset(tmp_path):
  (tmp_path / "pos.txt").write_text("\n", encoding="utf-8")
  (tmp_path / "neg.txt").write_text("", encoding="utf-8")
  assert "split has no examples" in train_error(dataset=f"embedded:{tmp_path}",
                                                model_dir=f"{tmp_path}/run")


def test_unwritable_model_dir(tmp_path):
  (tmp_path / "f").write_text("x")
  assert "cannot write there" in train_error(model_dir=f"{tmp_path}/f/run")


@pytest.mark.parametrize("args, pattern", [
    # absl's flag error, then a TfagentError through cli.run_main; both before TensorFlow
    # loads. (A TfagentError after it, in a real process: test_data_bad_inputs.py.)
    (["--model=cnn"], "flag --model=cnn: value should be one of <lstm|transformer|bert>"),
    (["--flagfile=configs/nope.flags"], "configs/nope.flags"),
])
def test_command_line_errors_are_one_line_without_a_traceback(args, pattern):
  assert_clean_error(run("tfagent.train", *args), pattern)


@pytest.mark.parametrize("args", [["--model=cnn"], ["--help"]])
def test_train_answers_help_and_flag_errors_without_importing_tensorflow(args):
  """A flag error or `--help` must not wait the ~10 s TensorFlow takes to import."""
  code = ("import runpy, sys\n"
          "sys.argv = ['tfagent.train', *sys.argv[1:]]\n"
          "try:\n  runpy.run_module('tfagent.train', run_name='__main__')\n"
          "except SystemExit as e:\n  code = e.code\n"
          "print('EXIT', code, 'tensorflow' in sys.modules, file=sys.stderr)\n")
  proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        env=ENV, timeout=120)
  assert f"EXIT {1 if args != ['--help'] else 0} False" in proc.stderr, proc.stderr[-2000:]


def test_predict_reads_args(trained_run, monkeypatch, capfd):
  """Texts as arguments, one JSON row each on standard output: the export's own answers.
  (Standard input and CSV files: test_predict.py; the real process:
  test_predict_on_a_missing_model_is_clear.)"""
  from tfagent import signatures
  _, result = trained_run
  base = os.path.dirname(result["saved_model"])
  texts = ["great movie loved it", "很差 讨厌"]
  capfd.readouterr()
  assert run_command(monkeypatch, "predict", f"--saved_model={base}", *texts) == 0
  rows = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
  assert [r["class"] for r in rows] == ["positive", "negative"]
  import tensorflow as tf
  expected = signatures.probabilities_fn(result["saved_model"])(tf.constant(texts)).numpy()
  # Rounded to 6 decimals in the JSON rows.
  assert [p for r in rows for p in r["probabilities"]] == pytest.approx(expected.ravel(), abs=1e-6)


@pytest.mark.slow
def test_predict_on_a_missing_model_is_clear(tmp_path):
  assert_clean_error(run("tfagent.predict", f"--saved_model={tmp_path}", "x"),
                     "no SavedModel here")


def test_evaluate_scores_the_runs_test_split_with_the_checkpoint_or_the_export(
    trained_run, tmp_path, monkeypatch):
  """`tfagent evaluate --model_dir [--saved_model] --output_dir` in-process: without
  --saved_model it loads checkpoints/best.keras, saved with its optimizer. (Its exit
  status and one-line error in a real process: test_evaluate.py, test_data_bad_inputs.py.)"""
  cfg, result = trained_run
  run_dir = f"--model_dir={cfg.train.model_dir}"
  assert run_command(monkeypatch, "evaluate", run_dir, f"--output_dir={tmp_path}/ckpt") == 0
  assert run_command(monkeypatch, "evaluate", run_dir, f"--saved_model={result['saved_model']}",
                     f"--output_dir={tmp_path}/export") == 0
  with open(tmp_path / "ckpt" / "metrics.json") as f:
    assert json.load(f)["accuracy"] == pytest.approx(result["accuracy"], abs=1e-6)
  with open(tmp_path / "export" / "metrics.json") as f:
    assert json.load(f)["accuracy"] == pytest.approx(result["accuracy"])
  assert os.path.getsize(tmp_path / "export" / "confusion_matrix.png") > 0


def test_client_names_a_text_that_is_not_utf8_before_any_request():
  """An argument of Latin-1 bytes reaches Python as surrogates; the client crashed with a
  UnicodeEncodeError traceback. One line naming the text, before connecting (no server here)."""
  proc = subprocess.run([sys.executable.encode(), b"-m", b"tfagent.client",
                         b"--server=127.0.0.1:9", b"--model_name=m", b"fine", b"caf\xe9 good"],
                        capture_output=True, text=True, env=ENV, timeout=300)
  assert_clean_error(proc, "text 2 ('caf\\udce9 good') holds bytes that are not UTF-8 (at "
                           "character 3)")
  assert proc.returncode == 1


def test_client_with_no_texts_is_an_error_not_an_empty_answer():
  proc = subprocess.run([sys.executable, "-m", "tfagent.client", "--server=127.0.0.1:1"],
                        input="\n  \n", capture_output=True, text=True, timeout=60)
  assert proc.returncode == 1 and proc.stdout == ""
  assert "no texts to send: give them as arguments, in --input" in proc.stderr
