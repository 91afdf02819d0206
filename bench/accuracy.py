"""Accuracy and cost of every model and the scikit-learn peers, on one split, side by side.

  python -m bench.accuracy --dataset=embedded --models=tfidf_lr,nblr,lstm,transformer,bert
  python -m bench.accuracy --dataset=imdb --models=tfidf_lr,nblr,lstm,transformer
  python -m bench.accuracy --dataset=imdb --models=tfidf_lr,nblr,lstm,semi \
      --extra_flags=--group_field=movie
  python -m bench.accuracy --dataset=embedded --models=tfidf_lr,nblr,quickstart --folds=5
  python -m bench.accuracy --dataset=csv:my.csv --models=nblr,lstm --extra_flags=--test_path=t.csv

Each row runs the command a user runs (`python -m tfagent.train
--flagfile=configs/...`, or `tfagent.cross_validate` with --folds; the peers
`python -m bench.tfidf_lr` / `bench.nblr` with the same flagfile, hence the same
split) in its own process, so wall time and peak RSS are that process's own. A
model with a wide path adds two ablation rows from the same run: each path
alone. Writes `OUT_DIR/<dataset>[_folds<K>].json`, `.md` and `.png`.

Datasets: `embedded` (configs/<model>.flags), `imdb` (configs/imdb_<model>.flags,
which name tfds:imdb_reviews; the benchmark reads the official 25k/25k split
from ../shared/data/imdb instead, and a `semi` row its unlabelled reviews), or any
`--dataset=KIND:ARG` source.
`--quick` caps training examples and epochs so that CI can run it.

With --folds=K every row runs on the same K folds (tfagent.cross_validate), and
the table gives each model's mean and standard deviation over the folds and its
paired per-fold difference against each peer, with the standard error of that
difference (its standard deviation over the folds / sqrt(K)).
"""

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

from absl import app, flags, logging
import numpy as np

from bench import imdb

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ("tfidf_lr", "nblr")
MODELS = PEERS + ("lstm", "transformer", "bert", "quickstart", "best_accuracy", "semi")
UNLABELED_ROWS = ("semi",)  # Learn from unlabelled texts too: IMDB's unsup reviews only.
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
  flags.DEFINE_list("models", "tfidf_lr,nblr,lstm,transformer",
                    f"Rows, from {', '.join(MODELS)}.")
  flags.DEFINE_bool("quick", False, "Small and fast (CI): 2,000 training examples, 1 epoch.")
  flags.DEFINE_integer("folds", 0, "K > 1: every row cross-validated on the same K folds.")
  flags.DEFINE_string("extra_flags", "", "More flags for every row, e.g. '--seed=1'.")
  flags.DEFINE_string("out_dir", os.path.join(ROOT, "bench", "results"), "Where tables go.")
  flags.DEFINE_string("runs_dir", os.path.join(ROOT, "runs", "bench"),
                      "Run directories and exports of the rows.")
  flags.DEFINE_bool("reuse", False,
                    "Take a row from its run directory instead of running it again when an "
                    "earlier run of the same command finished there (row.json), e.g. to "
                    "finish a long benchmark that was stopped.")


def dataset_slug(dataset: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", dataset).strip("_") or "dataset"


def flagfile_for(dataset: str, model: str) -> str:
  """The config a user would run for this model on this data set."""
  if model in PEERS:  # The peers read the data flags of the LSTM's config.
    model = "lstm"
  if dataset == "imdb":
    name = f"imdb_{model}.flags"
  elif model == "bert":  # Fine-tuning MiniLM on all of a corpus is a GPU job; a sample on CPU.
    name = "bert_quickstart.flags"
  else:
    name = f"{model}.flags"
  return os.path.join("configs", name)  # Rows run with the repository root as cwd.


def data_overrides(dataset: str, model: str = "") -> list:
  """Flags that point a row at the data set: IMDB's local copy of the official split (and of
  its unlabelled reviews for a `semi` row)."""
  if dataset == "imdb":
    unlabeled = [f"--unlabeled=csv:{imdb.UNSUP}"] if model in UNLABELED_ROWS else []
    return [f"--dataset=csv:{imdb.TRAIN}", f"--test_path={imdb.TEST}",
            f"--class_names={imdb.CLASS_NAMES}", *unlabeled]
  if dataset != "embedded":
    return [f"--dataset={dataset}"]
  return []


def row_command(dataset: str, model: str, run_dir: str, quick: bool, extra: str,
                folds: int = 0) -> list:
  """The row's command line: a peer, tfagent.train, or tfagent.cross_validate with folds."""
  if model in PEERS:
    module = f"bench.{model}"
  else:
    module = "tfagent.cross_validate" if folds > 1 else "tfagent.train"
  cmd = [sys.executable, "-m", module, f"--flagfile={flagfile_for(dataset, model)}",
         f"--model_dir={run_dir}", f"--export_dir={os.path.join(run_dir, 'export')}",
         f"--model_name={model}", "--verbose=2", *data_overrides(dataset, model)]
  if folds > 1:
    cmd.append(f"--folds={folds}")
  if quick:
    cmd += ["--max_train_examples=2000", "--epochs=1"]
  return cmd + shlex.split(extra)


def run_measured(cmd: list, log_path: str) -> tuple:
  """Runs `cmd`; returns (exit code, wall seconds, the child's peak RSS in MB)."""
  start = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  return (os.waitstatus_to_exitcode(status), time.perf_counter() - start,
          usage.ru_maxrss / 1024)  # kB on Linux.


def size_mb(path: str) -> float:
  if os.path.isfile(path):
    return os.path.getsize(path) / 2**20
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files) / 2**20


def run_dir_of(dataset: str, model: str, folds: int) -> str:
  """The row's run directory, relative to the repository when inside it."""
  slug = dataset_slug(dataset) + (f"_folds{folds}" if folds > 1 else "")
  run_dir = os.path.abspath(os.path.join(FLAGS.runs_dir, slug, model))
  if not os.path.relpath(run_dir, ROOT).startswith(".."):
    run_dir = os.path.relpath(run_dir, ROOT)  # Shorter, copyable commands in the table.
  return run_dir


def run_row(dataset: str, model: str, folds: int) -> dict:
  """Runs one row's command; returns its metrics.json (or cross_validation.json) and costs."""
  run_dir = run_dir_of(dataset, model, folds)
  os.makedirs(os.path.join(ROOT, run_dir), exist_ok=True)
  cmd = row_command(dataset, model, run_dir, FLAGS.quick, FLAGS.extra_flags, folds)
  command = " ".join(["python"] + [shlex.quote(c) for c in cmd[1:]])
  name = "cross_validation.json" if folds > 1 else os.path.join("eval", "metrics.json")
  row_path = os.path.join(ROOT, run_dir, "row.json")
  if FLAGS.reuse and os.path.exists(row_path):
    with open(row_path, encoding="utf-8") as f:
      done = json.load(f)
    if done["command"] == command:
      logging.info("[%s] reused the finished run in %s", model, run_dir)
      with open(os.path.join(ROOT, run_dir, name), encoding="utf-8") as f:
        return {**done, "model": model, "result": json.load(f)}
    logging.info("[%s] %s holds another command's run; running it again", model, row_path)
  logging.info("[%s] %s", model, " ".join(shlex.quote(c) for c in cmd))
  log_path = os.path.join(ROOT, run_dir, "bench.log")
  rc, wall, rss = run_measured(cmd, log_path)
  if rc != 0:
    with open(log_path, encoding="utf-8") as f:
      tail = f.read()[-2000:]
    raise RuntimeError(f"{model} failed with exit code {rc}; log {log_path}:\n{tail}")
  with open(os.path.join(ROOT, run_dir, name), encoding="utf-8") as f:
    result = json.load(f)
  costs = {"command": command, "peak_rss_mb": rss, "wall_seconds": wall}
  with open(row_path, "w", encoding="utf-8") as f:
    json.dump(costs, f, indent=2)
  return {"model": model, "result": result, **costs}


def table_rows(run: dict) -> list:
  """A single-split run's table row, and one per path of a wide+deep model."""
  m, model = run["result"], run["model"]
  row = {
      "model": model, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
      "train_seconds": m["train_seconds"],
      "train_examples_per_second": m["train_examples_per_second"],
      "inference_examples_per_second": m["inference_examples_per_second"],
      "model_size_mb": size_mb(os.path.join(ROOT, m["saved_model"])),
      "peak_rss_mb": run["peak_rss_mb"], "wall_seconds": run["wall_seconds"],
      "test_examples": m["examples"], "train_examples": m["train_examples"],
      "epochs_run": m["epochs_run"], "command": run["command"],
      "validation_accuracy": m.get("validation", {}).get("accuracy"),
  }
  if "peer" in m:
    row["peer"] = m["peer"]
  if "wide" in m:
    row["deep_weight"] = m["wide"]["deep_weight"]["chosen"]
    row["wide_c"] = m["wide"]["c"]
  rows = [row]
  for path, figures in m.get("paths", {}).items():
    rows.append({**{k: None for k, _, _ in COLUMNS}, "model": f"{model}: {path} path alone",
                 "accuracy": figures["test"]["accuracy"],
                 "macro_f1": figures["test"]["macro_f1"],
                 "test_examples": figures["test"]["examples"],
                 "validation_accuracy": figures["validation"]["accuracy"],
                 "ablation_of": model})
  return rows


def fold_rows(runs: list) -> list:
  """Each cross-validated row: per-fold accuracies, mean and std; paths alone as rows."""
  rows = []
  for run in runs:
    cv = run["result"]
    accuracies = [f["accuracy"] for f in cv["per_fold"]]
    rows.append({"model": run["model"], "per_fold": accuracies, "mean": cv["accuracy"]["mean"],
                 "std": cv["accuracy"]["std"], "wall_seconds": run["wall_seconds"],
                 "peak_rss_mb": run["peak_rss_mb"], "command": run["command"],
                 "test_examples": [f["test_examples"] for f in cv["per_fold"]]})
    for path in cv["per_fold"][0].get("paths", {}):
      values = [f["paths"][path] for f in cv["per_fold"]]
      rows.append({"model": f"{run['model']}: {path} path alone", "per_fold": values,
                   "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)),
                   "ablation_of": run["model"]})
  return rows


def paired_differences(rows: list) -> list:
  """Each non-peer row against each peer: mean per-fold difference, its SE, and the ratio."""
  peers = [r for r in rows if r["model"] in PEERS]
  out = []
  for row in rows:
    if row["model"] in PEERS:
      continue
    for peer in peers:
      diff = np.array(row["per_fold"]) - np.array(peer["per_fold"])
      se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
      mean = float(diff.mean())
      # Float noise of equal differences (a tie, or the same lead in every fold) is no spread.
      se, mean = (0.0 if se < 1e-12 else se), (0.0 if abs(mean) < 1e-12 else mean)
      ratio = mean / se if se else math.copysign(math.inf, mean) if mean else math.nan
      out.append({"model": row["model"], "peer": peer["model"], "per_fold": diff.tolist(),
                  "mean": mean, "se": se, "mean_over_se": ratio,
                  "above_2_se": bool(mean > 2 * se)})
  return out


def to_markdown(dataset: str, rows: list, quick: bool) -> str:
  lines = [f"# Accuracy and cost on `{dataset}`" + (" (--quick)" if quick else ""), "",
           "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
           "|" + " --- |" * len(COLUMNS)]
  for row in rows:
    lines.append("| " + " | ".join("–" if row[key] is None else fmt.format(row[key])
                                   for key, _, fmt in COLUMNS) + " |")
  lines += ["", "Training time is Keras `fit` (with its per-epoch validation) or the peer's "
            "fit; inference ex/s is the exported model on the test split, tokenization "
            "included; peak RSS is the row's whole process. A row `M: wide path alone` or "
            "`M: deep path alone` is one path of M's model, scored in the same run.", "",
            "Commands:", ""]
  lines += [f"- `{row['model']}`: `{row['command']}`" for row in rows if "command" in row]
  return "\n".join(lines) + "\n"


def folds_markdown(dataset: str, folds: int, rows: list, diffs: list, quick: bool) -> str:
  pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
  lines = [f"# {folds}-fold cross-validation on `{dataset}`" + (" (--quick)" if quick else ""),
           "", "| model | " + " | ".join(f"fold {k}" for k in range(folds))
           + " | mean | std |", "|" + " --- |" * (folds + 3)]
  for row in rows:
    lines.append(f"| {row['model']} | " + " | ".join(pct(v) for v in row["per_fold"])
                 + f" | **{pct(row['mean'])}** | {pct(row['std'])} |")
  lines += ["", "Paired per-fold differences (model minus peer, accuracy points); SE is "
            "their standard deviation / sqrt(folds), optimistic as folds share training "
            "texts; the last column asks only whether the model is ahead:", "",
            "| model | peer | " + " | ".join(f"fold {k}" for k in range(folds))
            + " | mean | SE | mean / SE | ahead by > 2 SE |", "|" + " --- |" * (folds + 6)]
  for d in diffs:
    lines.append(f"| {d['model']} | {d['peer']} | "
                 + " | ".join(f"{100 * v:+.2f}" for v in d["per_fold"])
                 + f" | {100 * d['mean']:+.2f} | {100 * d['se']:.2f} | "
                 f"{d['mean_over_se']:.1f} | {'yes' if d['above_2_se'] else 'no'} |")
  lines += ["", "Commands:", ""]
  lines += [f"- `{row['model']}`: `{row['command']}`" for row in rows if "command" in row]
  return "\n".join(lines) + "\n"


def plot(rows: list, title: str, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for row in rows:
    if row.get("train_seconds") is None:
      continue  # An ablation row has no training of its own.
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


def write(base: str, payload: dict, markdown: str) -> None:
  with open(base + ".json", "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=2)
  with open(base + ".md", "w", encoding="utf-8") as f:
    f.write(markdown)
  print(markdown)
  logging.info("Wrote %s.{json,md}", base)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.models) - set(MODELS))
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}.")
  if FLAGS.dataset != "imdb" and set(FLAGS.models) & set(UNLABELED_ROWS):
    raise app.UsageError(f"--models: {', '.join(UNLABELED_ROWS)} learn from unlabelled texts, "
                         "which only --dataset=imdb has here.")
  if FLAGS.dataset == "imdb" and not os.path.isdir(imdb.DIR):
    raise app.UsageError(f"--dataset=imdb needs {imdb.DIR} (see its README).")
  folds = FLAGS.folds if FLAGS.folds > 1 else 0
  runs = [run_row(FLAGS.dataset, model, folds) for model in FLAGS.models]
  slug = (dataset_slug(FLAGS.dataset) + (f"_folds{folds}" if folds else "")
          + ("_quick" if FLAGS.quick else ""))
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  base = os.path.join(FLAGS.out_dir, slug)
  meta = {"dataset": FLAGS.dataset, "quick": FLAGS.quick, "date": time.strftime("%Y-%m-%d")}
  if folds:
    rows = fold_rows(runs)
    diffs = paired_differences(rows)
    write(base, {**meta, "folds": folds, "rows": rows, "paired_differences": diffs},
          folds_markdown(FLAGS.dataset, folds, rows, diffs, FLAGS.quick))
    return
  rows = [row for run in runs for row in table_rows(run)]
  write(base, {**meta, "rows": rows}, to_markdown(FLAGS.dataset, rows, FLAGS.quick))
  plot(rows, f"{FLAGS.dataset}: accuracy vs training time", base + ".png")


if __name__ == "__main__":
  define_flags()
  app.run(main)
