"""bench/accuracy.py: rows, peers, folds and paired differences (end to end in --quick mode)."""

import json
import math
import os
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import accuracy  # noqa: E402
from conftest import write_corpus  # noqa: E402
from tfagent import config, data  # noqa: E402


def run_bench(tmp_path, *args):
  out, runs = tmp_path / "results", tmp_path / "runs"
  proc = subprocess.run(
      [sys.executable, "-m", "bench.accuracy", "--dataset=embedded", "--quick",
       f"--out_dir={out}", f"--runs_dir={runs}", *args],  # A later --dataset wins.
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, proc.stderr


MODELS = ["tfidf_lr", "nblr", "lstm"]
WIDE = "--extra_flags=--wide_ngrams=2 --explain_steps=0"  # Explanations are not measured here.


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  """One --quick run of three rows, shared by the tests below: its directories, the corpus's
  split sizes, and its outputs as they were right after it (later tests run it again).

  A 1,200-text corpus in the embedded layout: the point is the rows, not the figures."""
  tmp_path = tmp_path_factory.mktemp("bench")
  corpus = write_corpus(tmp_path / "corpus", n_per_class=600)
  dataset = f"--dataset=embedded:{corpus}"
  out, _ = run_bench(tmp_path, f"--models={','.join(MODELS)}", WIDE, dataset)
  (table,) = out.glob("*_quick.json")
  _, info = data.load_splits(config.DataConfig(dataset=f"embedded:{corpus}"))
  return types.SimpleNamespace(
      tmp_path=tmp_path, dataset=dataset, name=table.stem, sizes=info.split_sizes,
      files={suffix: table.with_suffix(suffix).read_bytes() for suffix in (".json", ".md", ".png")})


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plot_with_peers_and_path_ablations(quick_run):
  files = quick_run.files
  result = json.loads(files[".json"])
  names = [row["model"] for row in result["rows"]]
  assert names == MODELS + ["lstm: wide path alone", "lstm: deep path alone"]
  for row in result["rows"]:
    assert 0.5 < row["accuracy"] <= 1.0, row  # Two balanced classes: above chance.
    # The whole test split, every row.
    assert row["test_examples"] == quick_run.sizes["test"] > 0
    if "ablation_of" in row:
      continue
    for key, _, _ in accuracy.COLUMNS:
      assert row[key] is not None, (row["model"], key)
    assert row["train_examples"] == quick_run.sizes["train"]  # Every row, the same texts.
    assert row["train_seconds"] > 0 and row["peak_rss_mb"] > 100 and row["model_size_mb"] > 0
  nblr = result["rows"][1]["peer"]
  assert nblr["chosen"] in nblr["tried"] and len(nblr["tried"]) == 16  # 2 x 2 x 4 settings.
  assert nblr["tried"][nblr["chosen"]]["validation_loss"] == min(
      t["validation_loss"] for t in nblr["tried"].values())
  table = files[".md"].decode("utf-8")
  header = next(line for line in table.splitlines() if line.startswith("| model"))
  assert header.count("|") == len(accuracy.COLUMNS) + 1
  for name in names:
    assert sum(line.startswith(f"| {name} |") for line in table.splitlines()) == 1
  assert files[".png"][:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_reuse_takes_a_finished_row_and_runs_a_changed_command_again(quick_run):
  tmp_path, dataset = quick_run.tmp_path, quick_run.dataset
  first = json.loads(quick_run.files[".json"])["rows"]
  out, log = run_bench(tmp_path, f"--models={','.join(MODELS)}", WIDE, dataset, "--reuse")
  assert log.count("reused the finished run") == len(MODELS)
  table = out / f"{quick_run.name}.json"
  assert json.loads(table.read_text())["rows"] == first  # Costs too.
  _, log = run_bench(tmp_path, "--models=tfidf_lr", "--extra_flags=--wide_ngrams=2 --seed=3",
                     dataset, "--reuse")
  assert "holds another command's run" in log and "reused" not in log
  again = json.loads(table.read_text())["rows"]
  assert again[0]["command"].endswith("--seed=3") and again[0]["wall_seconds"] != first[0][
      "wall_seconds"]


@pytest.mark.slow
def test_quick_folds_run_every_row_on_the_same_folds(tmp_path):
  # A small corpus in the embedded layout: the point is the folds, not the figures.
  corpus = write_corpus(tmp_path / "corpus", n_per_class=150)
  out, _ = run_bench(tmp_path, "--models=nblr,lstm", "--folds=2", f"--dataset=embedded:{corpus}",
                     "--extra_flags=--explain_steps=0")
  (path,) = out.glob("*_folds2_quick.json")
  result = json.loads(path.read_text())
  rows = {row["model"]: row for row in result["rows"]}
  # configs/lstm.flags has a wide path: each path alone is a row of its own.
  assert set(rows) == {"nblr", "lstm", "lstm: wide path alone", "lstm: deep path alone"}
  # The same folds: the same held-out texts, so the same test sizes fold by fold.
  assert rows["nblr"]["test_examples"] == rows["lstm"]["test_examples"]
  assert sum(rows["lstm"]["test_examples"]) == 300  # Two folds test every text once.
  diffs = {(d["model"], d["peer"]): d for d in result["paired_differences"]}
  assert set(diffs) == {(m, "nblr") for m in rows if m != "nblr"}
  diff = diffs[("lstm", "nblr")]
  expected = [a - b for a, b in zip(rows["lstm"]["per_fold"], rows["nblr"]["per_fold"])]
  assert diff["per_fold"] == pytest.approx(expected)
  assert "| lstm | nblr |" in path.with_suffix(".md").read_text()


def test_paired_differences_and_their_standard_error():
  rows = [{"model": "nblr", "per_fold": [0.80, 0.82, 0.81]},
          {"model": "lstm", "per_fold": [0.83, 0.84, 0.85]}]
  (d,) = accuracy.paired_differences(rows)
  assert d["per_fold"] == pytest.approx([0.03, 0.02, 0.04])
  assert d["mean"] == pytest.approx(0.03)
  assert d["se"] == pytest.approx(0.01 / math.sqrt(3))  # Sample std of the diffs is 0.01.
  assert d["above_2_se"] and d["mean_over_se"] == pytest.approx(0.03 / (0.01 / math.sqrt(3)))
  rows[1]["per_fold"] = [0.81, 0.81, 0.82]  # +0.01, -0.01, +0.01: within noise.
  assert not accuracy.paired_differences(rows)[0]["above_2_se"]


def test_a_tie_has_no_ratio_and_the_same_lead_in_every_fold_an_infinite_one():
  """A tie in every fold read "mean/SE inf"; the same lead or deficit every fold (float noise
  gave SE 4e-17 and a ratio of -5e14) is +/- inf."""
  peer = {"model": "nblr", "per_fold": [0.80, 0.82, 0.81]}
  tie = accuracy.paired_differences([peer, {"model": "lstm", "per_fold": peer["per_fold"]}])[0]
  assert math.isnan(tie["mean_over_se"]) and not tie["above_2_se"]
  behind = accuracy.paired_differences([peer, {"model": "lstm",
                                               "per_fold": [0.78, 0.80, 0.79]}])[0]
  assert behind["se"] == 0.0 and behind["mean_over_se"] == -math.inf
  assert not behind["above_2_se"]
  ahead = accuracy.paired_differences([peer, {"model": "lstm",
                                              "per_fold": [0.82, 0.84, 0.83]}])[0]
  assert ahead["mean_over_se"] == math.inf and ahead["above_2_se"]


def test_rows_read_the_users_configs_and_imdb_comes_from_the_local_copy():
  assert accuracy.flagfile_for("imdb", "lstm") == "configs/imdb_lstm.flags"
  assert accuracy.flagfile_for("embedded", "nblr") == "configs/lstm.flags"
  assert accuracy.flagfile_for("embedded", "bert") == "configs/bert_quickstart.flags"
  cmd = accuracy.row_command("csv:x.csv", "lstm", "/r", quick=True, extra="--seed=3")
  assert "--dataset=csv:x.csv" in cmd and cmd[-1] == "--seed=3"
  assert "--max_train_examples=2000" in cmd and "tfagent.train" in cmd
  folds = accuracy.row_command("embedded", "quickstart", "/r", False, "", folds=5)
  assert "tfagent.cross_validate" in folds and "--folds=5" in folds
  assert accuracy.row_command("embedded", "nblr", "/r", False, "", folds=5)[2] == "bench.nblr"
  imdb = accuracy.row_command("imdb", "lstm", "/r", False, "")
  assert f"--test_path={accuracy.imdb.TEST}" in imdb  # Overrides the config's tfds source.
  assert not any(c.startswith("--unlabeled") for c in imdb)
  semi = accuracy.row_command("imdb", "semi", "/r", False, "--group_field=movie")
  assert "--flagfile=configs/imdb_semi.flags" in semi and semi[-1] == "--group_field=movie"
  assert f"--unlabeled=csv:{accuracy.imdb.UNSUP}" in semi  # Not the config's tfds split.
  for model in accuracy.MODELS:
    for dataset in ("embedded", "imdb"):
      if (dataset == "embedded" and model not in accuracy.UNLABELED_ROWS
          or dataset == "imdb" and model not in ("quickstart", "best_accuracy")):
        assert os.path.isfile(os.path.join(ROOT, accuracy.flagfile_for(dataset, model)))
  for folder, _, names in os.walk(os.path.join(ROOT, "configs")):  # configs/search/ too.
    for name in names:
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        assert "../shared" not in f.read(), os.path.join(folder, name)
