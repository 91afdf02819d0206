"""Issue 30's target: tune configs/lstm.flags on the embedded corpus, then 5-fold both configs.

  python -m bench.tune_study --budget=40m --size_study --small_budget=20m --folds=5
  python -m bench.tune_study --quick   # the same steps in minutes (CI-sized check)

Each step is the command a user runs, in its own process, run folders under --runs_dir:
1. the hand-made config trained once with --noread_test: its validation accuracy and
   export size (the trials' yardstick; no test figure is looked at);
2. `tfagent tune` (Bayesian, configs/search/quickstart.json) for at most --budget of wall
   time (no trial starts after it; a started one finishes, so leave one trial's time spare);
3. with --size_study, the same search under --max_export_mb = half the hand-made export;
4. `tfagent cross_validate --folds=K` of the hand-made config and of best.flags, on the same
   folds (same seed): per-fold accuracy, the paired difference and its standard error.
Writes OUT.json and OUT.md. Run again after a stop, it reuses finished steps (a search
resumes from its oracle state). Note: the folds cover the whole corpus, the search's validation
part included, so the tuned config's fold scores carry a little of its selection.
"""

import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags, logging
import numpy as np

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "configs/lstm.flags"
SPACE = "configs/search/quickstart.json"
QUICK = ["--max_train_examples=600", "--epochs=1", "--vocab_size=2000", "--wide_ngrams=2"]


def define_flags() -> None:
  flags.DEFINE_string("budget", "55m", "--tune_time_budget of the search.")
  flags.DEFINE_string("small_budget", None, "--tune_time_budget of the size study "
                      "(default: --budget).")
  flags.DEFINE_integer("max_trials", 60, "--max_trials of the search.")
  flags.DEFINE_integer("initial_trials", 6, "--initial_trials of the search: the base config "
                       "and 5 random trials, then the Gaussian process (KerasTuner's default, "
                       "3 per field, would leave a 50-minute budget random throughout).")
  flags.DEFINE_integer("folds", 5, "Folds of the comparison.")
  flags.DEFINE_bool("size_study", False, "Also search under --max_export_mb = half the "
                    "hand-made export's size.")
  flags.DEFINE_bool("quick", False, "Tiny setting: 600 training examples, 1 epoch, 2 trials, "
                    "2 folds; checks the steps, measures nothing.")
  flags.DEFINE_string("runs_dir", os.path.join(ROOT, "runs", "tune_study"), "Run folders.")
  flags.DEFINE_string("out", os.path.join(ROOT, "bench", "results", "tune_lstm"),
                      "OUT.json and OUT.md.")


def run(args: list, log: str, check: bool = True, done: str = None,
        quick: bool = True) -> float:
  """Runs `python -m ARGS` (and, with --quick and `quick`, QUICK) from the repository root;
  returns its wall seconds (0 when `done` exists: a stopped study goes on where it stopped)."""
  if done and os.path.exists(done):
    logging.info("Reusing %s.", done)
    return 0.0
  cmd = [sys.executable, "-m", *args] + (QUICK if FLAGS.quick and quick else [])
  logging.info("Running: %s (log %s)", shlex.join(cmd), log)
  start = time.perf_counter()
  with open(log, "w", encoding="utf-8") as f:
    code = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
  if code and check:
    raise SystemExit(f"{shlex.join(cmd)} failed ({code}); see {log}")
  return time.perf_counter() - start


def read_json(*parts) -> dict:
  with open(os.path.join(*parts), encoding="utf-8") as f:
    return json.load(f)


def search(name: str, extra: list, budget: str) -> dict:
  """`tfagent tune` into RUNS/NAME under `budget`; returns its tuning.json with the wall time."""
  tune_dir = os.path.join(FLAGS.runs_dir, name)
  trials, budget = (2, "") if FLAGS.quick else (FLAGS.max_trials, budget)
  timing = os.path.join(FLAGS.runs_dir, f"{name}.seconds")  # Written when the search ends:
  if os.path.exists(timing):  # run again, tune would resume and spend a second budget.
    with open(timing, encoding="utf-8") as f:
      seconds = float(f.read())
  else:
    seconds = run(["tfagent.tune", f"--flagfile={BASE}", f"--search_space={SPACE}",
                   "--tuner=bayesian", f"--max_trials={trials}", f"--tune_time_budget={budget}",
                   f"--initial_trials={FLAGS.initial_trials}", f"--tune_dir={tune_dir}",
                   f"--model_dir={tune_dir}/unused", *extra],
                  os.path.join(FLAGS.runs_dir, f"{name}.log"), check=not extra)
    with open(timing, "w", encoding="utf-8") as f:
      f.write(f"{seconds:.1f}\n")
  # Under a size budget every trial may be rejected: tune then fails, tuning.json says why.
  return {**read_json(tune_dir, "tuning.json"), "wall_seconds": seconds}


def cross_validate(name: str, flagfile: str, quick: bool = True) -> list:
  """Per-fold accuracy of `flagfile` under tfagent.cross_validate (`quick`: with QUICK after
  it; best.flags holds QUICK already, and QUICK after it would undo the chosen values)."""
  folds = 2 if FLAGS.quick else FLAGS.folds
  model_dir = os.path.join(FLAGS.runs_dir, name)
  run(["tfagent.cross_validate", f"--flagfile={flagfile}", f"--folds={folds}",
       f"--model_dir={model_dir}", f"--export_dir={model_dir}/export"],
      os.path.join(FLAGS.runs_dir, f"{name}.log"),
      done=os.path.join(model_dir, "cross_validation.json"), quick=quick)
  return [fold["accuracy"] for fold in read_json(model_dir, "cross_validation.json")["per_fold"]]


def paired(tuned: list, hand: list) -> dict:
  """Mean per-fold difference and its standard error (std over folds / sqrt(K))."""
  diff = np.asarray(tuned) - np.asarray(hand)
  return {"mean": float(diff.mean()),
          "se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0}


def markdown(out: dict) -> str:
  """OUT.md: the yardstick, the search, the folds side by side."""
  hand, best = out["hand"], out["search"]["best"]
  lines = ["# Tuning configs/lstm.flags on the embedded corpus (issue 30)", "",
           f"- Command: `{out['command']}`; quick: {out['quick']}",
           f"- Commit {out['commit']}; {out['started']} to {out['ended']} UTC; machine: "
           f"{out['machine']}", "",
           f"Validation accuracy: hand-made {hand['val_accuracy']:.2%} "
           f"(export {hand['export_mb']:.1f} MB); best of {len(out['search']['trials'])} "
           f"trials {best['val_accuracy']:.2%} (trial {best['trial']}, export "
           f"{best['export_mb']:.1f} MB, `{json.dumps(best['values'])}`); search wall time "
           f"{out['search']['wall_seconds']:.0f} s.", ""]
  if "small" in out:
    small, limit = out["small"]["best"], out["small"]["options"]["max_export_mb"]
    lines += [f"Under --max_export_mb={limit:.2f}: " + (
        f"best validation accuracy {small['val_accuracy']:.2%}, export "
        f"{small['export_mb']:.2f} MB." if small else "no trial under the budget."), ""]
  folds = out["folds"]
  lines += ["| config | " + " | ".join(f"fold {i}" for i in range(len(folds["hand"])))
            + " | mean |", "| --- " * (len(folds["hand"]) + 2) + "|"]
  for name in ("hand", "tuned"):
    lines.append(f"| {name} | " + " | ".join(f"{a:.2%}" for a in folds[name])
                 + f" | {np.mean(folds[name]):.2%} |")
  diff = out["paired_difference"]
  lines += ["", f"Tuned - hand-made, paired over folds: {diff['mean'] * 100:+.2f} points "
            f"(SE {diff['se'] * 100:.2f})."]
  from tfagent import tune_report  # pylint: disable=import-outside-toplevel
  for key, title in (("search", "Every trial of the search"),
                     ("small", "Every trial under the size budget")):
    if key in out:  # tuning.md of the search, one heading level down.
      table = tune_report.tuning_markdown(out[key]).split("\n", 1)[1]
      lines += ["", f"## {title} ({out[key]['tuner']}, {out[key]['objective']})", table]
  return "\n".join(lines) + "\n"


def first_start() -> dict:
  """Commit, start time and machine of the study's first run (kept in RUNS/study_start.json:
  a resumed study reports when and on what code its runs began)."""
  path = os.path.join(FLAGS.runs_dir, "study_start.json")
  if not os.path.exists(path):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"commit": commit, "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                 "machine": f"{os.cpu_count()} CPU cores, {memory:.0f} GiB"}, f)
  return read_json(path)


def main(argv):
  del argv
  os.makedirs(FLAGS.runs_dir, exist_ok=True)
  start = first_start()
  hand_dir = os.path.join(FLAGS.runs_dir, "hand")
  run(["tfagent.train", f"--flagfile={BASE}", "--noread_test", f"--model_dir={hand_dir}",
       f"--export_dir={hand_dir}/export"], os.path.join(FLAGS.runs_dir, "hand.log"),
      done=os.path.join(hand_dir, "eval", "metrics.json"))
  metrics = read_json(hand_dir, "eval", "metrics.json")
  from tfagent import tune_report  # pylint: disable=import-outside-toplevel
  hand = {"val_accuracy": metrics["validation"]["accuracy"],
          "export_mb": tune_report.export_mb(metrics["saved_model"])}
  out = {"command": shlex.join(["python", "-m", "bench.tune_study", *sys.argv[1:]]),
         **start,
         "quick": FLAGS.quick, "hand": hand, "search": search("tune", [], FLAGS.budget)}
  if FLAGS.size_study:
    out["small"] = search("tune_small", [f"--max_export_mb={hand['export_mb'] / 2:.3f}"],
                          FLAGS.small_budget or FLAGS.budget)
  best_flags = os.path.join(FLAGS.runs_dir, "tune", "best.flags")
  out["folds"] = {"hand": cross_validate("cv_hand", BASE),
                  "tuned": cross_validate("cv_tuned", best_flags, quick=False)}
  out["paired_difference"] = paired(out["folds"]["tuned"], out["folds"]["hand"])
  out["ended"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
  with open(FLAGS.out + ".json", "w", encoding="utf-8") as f:
    json.dump(out, f, indent=2)
  with open(FLAGS.out + ".md", "w", encoding="utf-8") as f:
    f.write(markdown(out))
  logging.info("Wrote %s.json and .md", FLAGS.out)


if __name__ == "__main__":
  define_flags()
  app.run(main)
