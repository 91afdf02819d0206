"""bench/accuracy.py end to end on the embedded corpus in --quick mode."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import accuracy  # noqa: E402

MODELS = ["tfidf_lr", "lstm", "transformer"]


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plot_with_every_column(tmp_path):
  out, runs = tmp_path / "results", tmp_path / "runs"
  proc = subprocess.run(
      [sys.executable, "-m", "bench.accuracy", "--dataset=embedded", "--quick",
       f"--models={','.join(MODELS)}", f"--out_dir={out}", f"--runs_dir={runs}"],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "embedded_quick.json") as f:
    result = json.load(f)
  assert [row["model"] for row in result["rows"]] == MODELS
  for row in result["rows"]:
    for key, _, _ in accuracy.COLUMNS:
      assert row[key] is not None, (row["model"], key)
    assert 0.5 < row["accuracy"] <= 1.0, row  # Two balanced-ish classes: above chance.
    assert row["test_examples"] == 1704  # The whole embedded test split, every row.
    assert row["train_examples"] == 2000  # --quick caps training identically.
    assert row["train_seconds"] > 0 and row["peak_rss_mb"] > 100 and row["model_size_mb"] > 0
  table = (out / "embedded_quick.md").read_text()
  header = next(line for line in table.splitlines() if line.startswith("| model"))
  assert header.count("|") == len(accuracy.COLUMNS) + 1
  for model in MODELS:
    assert sum(line.startswith(f"| {model} |") for line in table.splitlines()) == 1
  assert (out / "embedded_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flagfiles_follow_the_dataset():
  assert accuracy.flagfile_for("imdb", "lstm") == "configs/imdb_lstm.flags"
  assert accuracy.flagfile_for("embedded", "tfidf_lr") == "configs/lstm.flags"
  cmd = accuracy.row_command("csv:x.csv", "lstm", "/r", quick=True, extra="--seed=3")
  assert "--dataset=csv:x.csv" in cmd and cmd[-1] == "--seed=3"
  assert "--max_train_examples=2000" in cmd
  assert accuracy.flagfile_for("embedded", "bert") == "configs/bert_quickstart.flags"
  for model in accuracy.MODELS:
    for dataset in ("embedded", "imdb"):
      assert os.path.isfile(os.path.join(ROOT, accuracy.flagfile_for(dataset, model)))
