"""Quantized exports beside float32, in one run: export size, test accuracy, in-process examples/s.

  python -m tfagent.train --flagfile=configs/transformer.flags --quantize=int8
  python bench/quantize_bench.py --model_dir=runs/transformer \
      --output=bench/results/quantize_transformer.json
  python bench/quantize_bench.py --model_dir=runs/transformer --split=validation \
      --modes=int8,int8:2,int8:3,int4      # variants, chosen on validation

Every export is written from the run's checkpoints/best.keras (the weights its export
holds) into --work_dir the way training writes it: float32 with export.export_model,
each --modes entry with quantize.quantized_copy then export.export_model. Each is
loaded as a SavedModel and scored on the run's own test split (--split) through
serving_default. Examples/s: those texts (at most --max_examples) in batches of
--batch_size after one warm-up batch, the best of --repeats passes; the exports take
turns pass by pass, so load on the shared cores falls on all of them alike.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("model_dir", None, "Run directory of tfagent.train (config.json, "
                      "checkpoints/best.keras).")
  flags.DEFINE_list("modes", ["int8"], "Quantized exports measured beside float32: a mode "
                    "(int8, int4), or MODE:STEP to keep only the wide path's n-grams with an "
                    "|int8 weight| >= STEP (--quantize_wide_min_step; 1 without).")
  flags.DEFINE_enum("split", "test", ["test", "validation"], "The run's split every export "
                    "is scored on: choose among variants on validation, then score the chosen "
                    "one on test.")
  flags.DEFINE_string("work_dir", "", "Where the exports are written; empty: a temporary "
                      "folder, removed at the end.")
  flags.DEFINE_integer("batch_size", 64, "Texts a serving call while timing.")
  flags.DEFINE_integer("repeats", 3, "Timed passes an export; the best counts (least load).")
  flags.DEFINE_integer("max_examples", 0, "Test texts scored and timed; 0: all.")
  flags.DEFINE_string("output", "bench/results/quantize_bench.json", "Where the JSON goes.")


def write_exports(model_dir: str, modes: list, work_dir: str) -> dict:
  """mode -> export path: float32 and each quantized mode, from the run's best checkpoint."""
  from tfagent import config, evaluate, export, quantize
  cfg = config.load_json(os.path.join(model_dir, "config.json"))
  best = os.path.join(model_dir, "checkpoints", "best.keras")
  model = evaluate.load_checkpoint(best)
  paths = {}
  for name in modes:  # Copied before the float export: an exported model no longer saves.
    mode, _, step = name.partition(":")
    copy = quantize.quantized_copy(model, mode, int(step or 1))
    paths[name] = export.export_model(copy, class_names(cfg), config.ExportConfig(
        export_dir=work_dir, model_name=name.replace(":", "_step"),
        explain_steps=cfg.export.explain_steps))
  paths["float32"] = export.export_model(model, class_names(cfg), config.ExportConfig(
      export_dir=work_dir, model_name="float32", explain_steps=cfg.export.explain_steps))
  return {"float32": paths.pop("float32"), **paths}


def class_names(cfg) -> list:
  """The run's class names, from its data report (what its export serves)."""
  with open(os.path.join(cfg.train.model_dir, "data_report.json")) as f:
    return json.load(f)["class_names"]


def timed_pass(serve, batches: list) -> float:
  """Seconds to score every batch once."""
  import tensorflow as tf
  start = time.perf_counter()
  for batch in batches:
    serve(text=tf.constant(batch))["probabilities"].numpy()
  return time.perf_counter() - start


def measure(paths: dict, texts: list, labels: np.ndarray) -> dict:
  """mode -> size, accuracy on --split, largest probability change and examples/s of its export."""
  import tensorflow as tf
  from tfagent import quantize, signatures
  serves = {mode: signatures.load_signature(path) for mode, path in paths.items()}
  batches = [texts[i:i + FLAGS.batch_size] for i in range(0, len(texts), FLAGS.batch_size)]
  probs = {mode: np.concatenate([serve(text=tf.constant(b))["probabilities"].numpy()
                                 for b in batches])  # Also the warm-up.
           for mode, serve in serves.items()}
  seconds = {mode: [] for mode in serves}
  for _ in range(FLAGS.repeats):
    for mode, serve in serves.items():
      seconds[mode].append(timed_pass(serve, batches))
  out = {mode: {"path": path, **quantize.sizes(path),
                f"{FLAGS.split}_accuracy": float((probs[mode].argmax(-1) == labels).mean()),
                "max_probability_difference": float(np.abs(probs[mode]
                                                           - probs["float32"]).max()),
                "examples_per_second": len(texts) / min(seconds[mode])}
         for mode, path in paths.items()}
  reference = out["float32"]
  for row in out.values():
    row["size_ratio"] = row["export"] / reference["export"]
    row["variables_ratio"] = row["variables"] / reference["variables"]
    key = f"{FLAGS.split}_accuracy"
    row["accuracy_drop_points"] = 100 * (reference[key] - row[key])
    row["speed_ratio"] = row["examples_per_second"] / reference["examples_per_second"]
  return out


def scored_split(model_dir: str) -> tuple:
  """`(texts, labels)` of the run's own --split, at most --max_examples."""
  from tfagent import config, data
  cfg = config.load_json(os.path.join(model_dir, "config.json"))
  split = data.load_splits(cfg.data)[0][FLAGS.split]
  if FLAGS.max_examples:
    split = split.take(FLAGS.max_examples)
  texts, labels = [], []
  for text, label in split.as_numpy_iterator():
    texts.append(text.decode("utf-8"))
    labels.append(int(label))
  return texts, np.array(labels)


def table(result: dict) -> str:
  """The side-by-side rows as Markdown."""
  lines = ["| export | export bytes | x float | variables/ bytes | x float | "
           f"{FLAGS.split} accuracy | "
           "drop (points) | examples/s | x float |", "|" + " --- |" * 9]
  for mode, r in result["exports"].items():
    lines.append(f"| {mode} | {r['export']} | {r['size_ratio']:.3f} | {r['variables']} | "
                 f"{r['variables_ratio']:.3f} | {r[FLAGS.split + '_accuracy']:.4f} | "
                 f"{r['accuracy_drop_points']:.2f} | {r['examples_per_second']:.1f} | "
                 f"{r['speed_ratio']:.2f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="quantize_bench_")
  texts, labels = scored_split(FLAGS.model_dir)
  paths = write_exports(FLAGS.model_dir, FLAGS.modes, work_dir)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "model_dir": FLAGS.model_dir, "split": FLAGS.split,
            f"{FLAGS.split}_examples": len(texts),
            "batch_size": FLAGS.batch_size, "repeats": FLAGS.repeats,
            "exports": measure(paths, texts, labels)}
  os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
  logging.info("Written %s", FLAGS.output)
  print(table(result))
  if not FLAGS.work_dir:
    import shutil
    shutil.rmtree(work_dir)


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("model_dir")
  app.run(main)
