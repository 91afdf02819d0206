"""What `tfagent tune` keeps of its trials: what it measures of a trial's export, each trial's
record, and what it writes at the end (tuning.json, tuning.md, best.flags).

Kept apart from tfagent/tune.py (the search) so each reads top to bottom.
"""

import dataclasses
import json
import os
import time

from tfagent import config, fileio, search_space

RECORD_FILE = "trial_record.json"  # In each trial's run directory.


def export_mb(path: str) -> float:
  """Size of a SavedModel version directory in MB (2**20 bytes)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  # files_under: ram:// lists a sibling's files by prefix (assets.extra/w as assets/.extra).
  return sum(tf.io.gfile.stat(os.path.join(path, f)).length
             for f in fileio.files_under(path)) / 2**20


def budget_problem(record: dict, options) -> str:
  """Why a trial breaks --max_export_mb or --max_latency_ms (`options`: tune.TuneOptions),
  or empty."""
  if options.max_export_mb and record["export_mb"] > options.max_export_mb:
    return f"export {record['export_mb']:.2f} MB > --max_export_mb={options.max_export_mb:g}"
  if options.max_latency_ms and record["latency_ms"] > options.max_latency_ms:
    return (f"latency {record['latency_ms']:.2f} ms > "
            f"--max_latency_ms={options.max_latency_ms:g}")
  return ""


class TooLarge(Exception):
  """Raised before a trial's first step when its export cannot fit --max_export_mb."""


def size_check(options, cfg: config.Config):
  """training's `before_fit` that refuses a model whose float export breaks
  --max_export_mb whatever it learns; None without that budget or when the export may be
  quantized (then smaller than its float weights)."""
  if not options.max_export_mb or cfg.export.quantize != "none":
    return None

  def check(model):
    at_least = export_mb_at_least(model)
    if at_least > options.max_export_mb:
      raise TooLarge(f"export at least {at_least:.2f} MB > --max_export_mb="
                     f"{options.max_export_mb:g}, known before training")
  return check


def export_mb_at_least(model) -> float:
  """What a float export of `model` (a TextClassifier) holds at least, in MB, known before
  training: every weight's bytes and each vocabulary's tokens (assets, one a line). The
  graph, its signatures and the model card come on top."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  total = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
  for layer in (model.tokenizer, model.wide):
    if layer is not None and hasattr(layer, "vocabulary"):
      total += sum(len(str(token).encode("utf-8")) + 1 for token in layer.vocabulary())
  return total / 2**20


def latency_ms(path: str, text, calls: int = 30) -> float:
  """Median milliseconds of one-text requests to the export, in-process, after warm-up
  (`text`: a string, or a sentence pair's `(text, text_pair)`)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tfagent import evaluate, signatures  # pylint: disable=import-outside-toplevel
  predict, request = evaluate.saved_model_predict_fn(path), signatures.text_columns([text])
  for _ in range(3):
    predict(request)
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    predict(request)
    times.append((time.perf_counter() - start) * 1000)
  return float(np.median(times))


def config_args(cfg: config.Config, names) -> list:
  """`--flag=value` (config.to_flag_args' form) of the fields of `cfg` whose flag is in `names`."""
  order = [config.flag_name(section, field) for section in config.SECTIONS.values()
           for field in dataclasses.fields(section)]
  return [arg for name, arg in zip(order, config.to_flag_args(cfg)) if name in names]


def best_flags(cfg: config.Config, present: set, summary: dict) -> str:
  """best.flags: the flags tune was given, then each chosen value under its validation score."""
  space, best, objective = summary["search_space"], summary["best"], summary["objective"]
  chosen = {name: best["values"][name] for name in space}
  if "tuner/epochs" in best["values"]:
    chosen["epochs"] = best["epochs"]
  score = (f"{objective} {best[objective]:.4f} on validation (trial "
           f"{best['trial']}; accuracy {best['val_accuracy']:.4f}, macro F1 "
           f"{best['val_macro_f1']:.4f}, loss {best['val_loss']:.4f})")
  where = f"{summary['tuner']}, {summary['options']['tune_dir']}"
  lines = [f"# tfagent tune ({where}): the best trial, "
           f"{score}.", "# The flags tfagent tune was given:"]
  lines += config_args(cfg, present - set(chosen))
  lines.append("# Chosen by the search:")
  for name, value in chosen.items():
    searched = search_space.describe(space[name]) if name in space else "Hyperband's budget"
    lines += [f"# {name}: {score}; searched {searched}", f"--{name}={value}"]
  return "\n".join(lines) + "\n"


def tuning_markdown(summary: dict) -> str:
  """tuning.md: every trial in a table, the best one first named."""
  best, test = summary["best"], summary.get("test") or {}
  objective = summary["objective"]
  lines = [f"# tfagent tune: {summary['tuner']}, objective {objective}", "",
           f"Search space: `{json.dumps(summary['search_space'])}`", ""]
  if best:
    lines += [f"Best: trial {best['trial']}, {objective} {best[objective]:.4f}, values "
              f"`{json.dumps(best['values'])}`; test (scored once, at the end): accuracy "
              f"{test.get('accuracy', float('nan')):.4f}, macro F1 "
              f"{test.get('macro_f1', float('nan')):.4f}.", ""]
  lines += ["| trial | status | values | val accuracy | val macro F1 | val loss | seconds | "
            "export MB | latency ms | note |", "| --- " * 10 + "|"]
  for r in summary["trials"]:
    cells = [r["trial"], r["status"], f"`{json.dumps(r['values'])}`"]
    for key, form in (("val_accuracy", ".4f"), ("val_macro_f1", ".4f"), ("val_loss", ".4f"),
                      ("seconds", ".0f"), ("export_mb", ".2f"), ("latency_ms", ".2f")):
      cells.append(format(r[key], form) if r.get(key) is not None else "-")
    cells.append(r.get("rejected") or r.get("error") or "")
    lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
  return "\n".join(lines) + "\n"


def record_of(trial_id: str, values: dict, cfg: config.Config, result: dict,
              seconds: float) -> dict:
  """What tuning.json keeps of a finished trial."""
  validation = result["validation"]
  return {"trial": trial_id, "values": values, "run_dir": cfg.train.model_dir,
          "saved_model": result["saved_model"], "epochs": cfg.train.epochs,
          "val_accuracy": validation["accuracy"], "val_loss": validation["loss"],
          "val_macro_f1": result["validation_metrics"]["macro_f1"],
          "seconds": seconds, "export_mb": export_mb(result["saved_model"])}


def seconds_recorded(tune_dir: str) -> float:
  """The seconds of every trial recorded in `tune_dir` (what a resumed search has spent)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  spent = 0.0
  for path in tf.io.gfile.glob(os.path.join(tune_dir, "trials", "*", RECORD_FILE)):
    with tf.io.gfile.GFile(path) as f:
      spent += float(json.load(f).get("seconds") or 0.0)
  return spent


def trial_records(oracle, tune_dir: str) -> list:
  """Every trial of the oracle, in order: status, values and, when it ran, its record."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  records = []
  for trial_id in sorted(oracle.trials):
    trial = oracle.trials[trial_id]
    path = os.path.join(tune_dir, "trials", f"trial_{trial_id}", RECORD_FILE)
    record = {"trial": trial_id, "values": dict(trial.hyperparameters.values)}
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        record = json.load(f)
    status = {"COMPLETED": "completed", "RUNNING": "interrupted"}.get(trial.status, "failed")
    record["status"] = "rejected" if record.get("rejected") else status
    if status == "failed" and not record.get("rejected"):
      lines = (trial.message or "").strip().splitlines()
      record["error"] = lines[-1] if lines else ""  # The exception, below its traceback.
    records.append(record)
  return records


def best_record(oracle, records: list):
  """The record of the best completed trial (rejected ones never are), or None; of trials
  that tie, the first run (KerasTuner's order of ties changes when a search resumes)."""
  done = [t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
  sign = -1 if oracle.objective.direction == "max" else 1
  best = min(done, key=lambda t: (sign * t.score, t.trial_id), default=None)
  return next((r for r in records if best and r["trial"] == best.trial_id), None)


def write_summary(tune_dir: str, summary: dict, flags_text: str = None) -> None:
  """tuning.json, tuning.md and, once the best trial is scored, best.flags."""
  write_json(os.path.join(tune_dir, "tuning.json"), summary)
  fileio.write_text_atomically(os.path.join(tune_dir, "tuning.md"),
                               tuning_markdown(summary))
  if flags_text:
    fileio.write_text_atomically(os.path.join(tune_dir, "best.flags"), flags_text)


def write_json(path: str, content) -> None:
  """Writes `content` as indented JSON, atomically."""
  fileio.write_text_atomically(path, json.dumps(content, indent=2, sort_keys=True))
