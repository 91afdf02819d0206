"""Accuracy and cost of every model and the TF-IDF peer, on one split, side by side.

  python -m bench.accuracy --dataset=embedded --models=tfidf_lr,lstm,transformer,bert
  python -m bench.accuracy --dataset=imdb --models=tfidf_lr,lstm,transformer
  python -m bench.accuracy --dataset=csv:my.csv --models=tfidf_lr,lstm --extra_flags=--test_path=t.csv

Each row runs the command a user runs (`python -m tfagent.train
--flagfile=configs/...`; the peer `python -m bench.tfidf_lr` with the same
flagfile, hence the same split) in its own process, so wall time and peak RSS
are that process's own. Writes `OUT_DIR/<dataset>.json`, `.md` and `.png`
(test accuracy against training time).

Datasets: `embedded` (configs/<model>.flags), `imdb` (../shared/data/imdb, the
official 25k/25k split, configs/imdb_<model>.flags), or any `--dataset=KIND:ARG`
source (configs/<model>.flags with that source). `--quick` caps training
examples and epochs so that CI can run it.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time

from absl import app, flags, logging

from bench import imdb

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("tfidf_lr", "lstm", "transformer", "bert")
COLUMNS = (
    ("model", "model", "{}"),
    ("accuracy", "test accuracy", "{:.2%}"),
    ("macro_f1", "macro F1", "{:.4f}"),
    ("train_seconds", "training time (s)", "{:.1f}"),
    ("train_examples_per_second", "training ex/s", "{:.0f}"),
    ("inference_examples_per_second", "inference ex/s", "{:.0f}"),
    ("model_size_mb", "model size (MB)", "{:.1f}"),
    ("peak_rss_mb", "peak RSS (MB)", "{:.0f}"),
    ("wall_seconds", "wall time (s)", "{:.0f}"),
    ("test_examples", "test examples", "{}"),
)


def define_flags() -> None:
  flags.DEFINE_string("dataset", "embedded", "embedded, imdb, or a tfagent source KIND:ARG.")
  flags.DEFINE_list("models", "tfidf_lr,lstm,transformer", f"Rows, from {', '.join(MODELS)}.")
  flags.DEFINE_bool("quick", False, "Small and fast (CI): 2,000 training examples, 1 epoch.")
  flags.DEFINE_string("extra_flags", "", "More flags for every row, e.g. '--seed=1'.")
  flags.DEFINE_string("out_dir", os.path.join(ROOT, "bench", "results"), "Where tables go.")
  flags.DEFINE_string("runs_dir", os.path.join(ROOT, "runs", "bench"),
                      "Run directories and exports of the rows.")


def dataset_slug(dataset: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", dataset).strip("_") or "dataset"


def flagfile_for(dataset: str, model: str) -> str:
  """The config a user would run for this model on this data set."""
  if model == "tfidf_lr":  # The peer reads the data flags of the LSTM's config.
    model = "lstm"
  if dataset == "imdb":
    name = f"imdb_{model}.flags"
  elif model == "bert":  # Fine-tuning MiniLM on all of a corpus is a GPU job; a sample on CPU.
    name = "bert_quickstart.flags"
  else:
    name = f"{model}.flags"
  return os.path.join("configs", name)  # Rows run with the repository root as cwd.


def row_command(dataset: str, model: str, run_dir: str, quick: bool, extra: str) -> list:
  module = "bench.tfidf_lr" if model == "tfidf_lr" else "tfagent.train"
  cmd = [sys.executable, "-m", module, f"--flagfile={flagfile_for(dataset, model)}",
         f"--model_dir={run_dir}", f"--export_dir={os.path.join(run_dir, 'export')}",
         f"--model_name={model}", "--verbose=2"]
  if dataset not in ("embedded", "imdb"):
    cmd.append(f"--dataset={dataset}")
  if quick:
    cmd += ["--max_train_examples=2000", "--epochs=1"]
  return cmd + shlex.split(extra)


def run_measured(cmd: list, log_path: str) -> tuple:
  """Runs `cmd`; returns (exit code, wall seconds, the child's peak RSS in MB)."""
  start = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024  # kB on Linux.


def size_mb(path: str) -> float:
  if os.path.isfile(path):
    return os.path.getsize(path) / 2**20
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files) / 2**20


def run_row(dataset: str, model: str) -> dict:
  run_dir = os.path.abspath(os.path.join(FLAGS.runs_dir, dataset_slug(dataset), model))
  if not os.path.relpath(run_dir, ROOT).startswith(".."):
    run_dir = os.path.relpath(run_dir, ROOT)  # Shorter, copyable commands in the table.
  os.makedirs(os.path.join(ROOT, run_dir), exist_ok=True)
  cmd = row_command(dataset, model, run_dir, FLAGS.quick, FLAGS.extra_flags)
  logging.info("[%s] %s", model, " ".join(shlex.quote(c) for c in cmd))
  log_path = os.path.join(ROOT, run_dir, "bench.log")
  rc, wall, rss = run_measured(cmd, log_path)
  if rc != 0:
    with open(log_path, encoding="utf-8") as f:
      tail = f.read()[-2000:]
    raise RuntimeError(f"{model} failed with exit code {rc}; log {log_path}:\n{tail}")
  with open(os.path.join(ROOT, run_dir, "eval", "metrics.json"), encoding="utf-8") as f:
    m = json.load(f)
  row = {
      "model": model, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
      "train_seconds": m["train_seconds"],
      "train_examples_per_second": m["train_examples_per_second"],
      "inference_examples_per_second": m["inference_examples_per_second"],
      "model_size_mb": size_mb(os.path.join(ROOT, m["saved_model"])), "peak_rss_mb": rss, "wall_seconds": wall,
      "test_examples": m["examples"], "train_examples": m["train_examples"],
      "epochs_run": m["epochs_run"], "command": " ".join(["python"] + [shlex.quote(c) for c in cmd[1:]]),
  }
  logging.info("[%s] test accuracy %.4f, %.0f s training, peak RSS %.0f MB", model,
               row["accuracy"], row["train_seconds"], rss)
  return row


def to_markdown(dataset: str, rows: list, quick: bool) -> str:
  lines = [f"# Accuracy and cost on `{dataset}`" + (" (--quick)" if quick else ""), "",
           "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
           "|" + " --- |" * len(COLUMNS)]
  for row in rows:
    lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
  lines += ["", "Training time is Keras `fit` (with its per-epoch validation) or the peer's "
            "fit; inference ex/s is the exported model on the test split, tokenization "
            "included; peak RSS is the row's whole process.", "", "Commands:", ""]
  lines += [f"- `{row['model']}`: `{row['command']}`" for row in rows]
  return "\n".join(lines) + "\n"


def plot(rows: list, title: str, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for row in rows:
    ax.scatter(row["train_seconds"], 100 * row["accuracy"], s=40)
    ax.annotate(row["model"], (row["train_seconds"], 100 * row["accuracy"]),
                textcoords="offset points", xytext=(5, 5))
  ax.set_xscale("log")
  ax.set_xlabel("training time (s, log scale)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.models) - set(MODELS))
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}.")
  if FLAGS.dataset == "imdb" and not os.path.isdir(imdb.DIR):
    raise app.UsageError(f"--dataset=imdb needs {imdb.DIR} (see its README).")
  rows = [run_row(FLAGS.dataset, model) for model in FLAGS.models]
  slug = dataset_slug(FLAGS.dataset) + ("_quick" if FLAGS.quick else "")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  base = os.path.join(FLAGS.out_dir, slug)
  with open(base + ".json", "w", encoding="utf-8") as f:
    json.dump({"dataset": FLAGS.dataset, "quick": FLAGS.quick, "rows": rows}, f, indent=2)
  with open(base + ".md", "w", encoding="utf-8") as f:
    f.write(to_markdown(FLAGS.dataset, rows, FLAGS.quick))
  plot(rows, f"{FLAGS.dataset}: accuracy vs training time", base + ".png")
  print(to_markdown(FLAGS.dataset, rows, FLAGS.quick))
  logging.info("Wrote %s.{json,md,png}", base)


if __name__ == "__main__":
  define_flags()
  app.run(main)
