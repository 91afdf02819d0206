"""Entry points run as users run them: clear errors, JSON predictions, evaluation."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args, stdin=None, cwd=None):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        input=stdin, env=ENV, timeout=300, cwd=cwd)


def assert_clean_error(proc, pattern):
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert pattern in proc.stderr, proc.stderr[-2000:]


def test_unknown_model_flag():
  assert_clean_error(run("tfagent.train", "--model=cnn"),
                     "flag --model=cnn: value should be one of <lstm|transformer|bert>")


def test_missing_bert_preset_names_the_flag_before_reading_data(tmp_path):
  assert_clean_error(run("tfagent.train", "--model=bert", f"--preset={tmp_path}/nowhere",
                         f"--model_dir={tmp_path}/run"), f"--preset={tmp_path}/nowhere: no such directory")


def test_bad_truncation_flag():
  assert_clean_error(run("tfagent.train", "--model=bert", "--truncation=middle"),
                     "--truncation=middle: value should be one of <head|tail|head_tail>")


def test_missing_flagfile():
  assert_clean_error(run("tfagent.train", "--flagfile=configs/nope.flags"),
                     "configs/nope.flags")


def test_empty_dataset(tmp_path):
  (tmp_path / "pos.txt").write_text("\n", encoding="utf-8")
  (tmp_path / "neg.txt").write_text("", encoding="utf-8")
  assert_clean_error(run("tfagent.train", f"--dataset=embedded:{tmp_path}",
                         f"--model_dir={tmp_path}/run"), "split has no examples")


def test_unwritable_model_dir(tmp_path):
  (tmp_path / "f").write_text("x")
  assert_clean_error(run("tfagent.train", f"--model_dir={tmp_path}/f/run"),
                     "cannot write there")


def test_predict_reads_args_and_stdin(trained_run):
  _, result = trained_run
  base = os.path.dirname(result["saved_model"])
  by_args = run("tfagent.predict", f"--saved_model={base}", "great movie loved it", "很差 讨厌")
  assert by_args.returncode == 0, by_args.stderr[-2000:]
  rows = [json.loads(line) for line in by_args.stdout.splitlines()]
  assert [r["class"] for r in rows] == ["positive", "negative"]
  assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)
  by_stdin = run("tfagent.predict", f"--saved_model={base}",
                 stdin="great movie loved it\n\n很差 讨厌\n")
  assert [json.loads(l)["class"] for l in by_stdin.stdout.splitlines()] == ["positive", "negative"]


def test_predict_on_a_missing_model_is_clear(tmp_path):
  assert_clean_error(run("tfagent.predict", f"--saved_model={tmp_path}", "x"),
                     "no SavedModel here")


def test_evaluate_cli_on_the_best_checkpoint(trained_run, tmp_path):
  """Without --saved_model it loads checkpoints/best.keras, saved with its optimizer."""
  cfg, result = trained_run
  proc = run("tfagent.evaluate", f"--model_dir={cfg.train.model_dir}", f"--output_dir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(tmp_path / "metrics.json") as f:
    assert json.load(f)["accuracy"] == pytest.approx(result["accuracy"], abs=1e-6)


def test_evaluate_cli_on_the_export(trained_run, tmp_path):
  cfg, result = trained_run
  proc = run("tfagent.evaluate", f"--model_dir={cfg.train.model_dir}",
             f"--saved_model={result['saved_model']}", f"--output_dir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(tmp_path / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["accuracy"] == pytest.approx(result["accuracy"])
  assert os.path.getsize(tmp_path / "confusion_matrix.png") > 0
