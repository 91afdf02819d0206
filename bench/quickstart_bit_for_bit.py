"""Same checkpoint, same answers: re-export an older run's checkpoint with this code and compare.

  python bench/quickstart_bit_for_bit.py --old=/work/runs/qs_old --new=/work/runs/qs_new \
      --out=/tmp/qs_bit_for_bit

--old and --new are run directories of `tfagent.train` (the same flagfile, the old one trained at
an earlier commit, the new one at this code). Prints JSON: the eval/metrics.json fields that differ
between the two runs (timings left out), and, on every test text of the old run's data split, the
old export beside the old checkpoint (checkpoints/best.keras, its deep weight included) exported
here: serving_default probabilities and classify scores, equal bit for bit (np.array_equal) or not,
with the largest difference.
"""

import json
import os
import sys

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("old", None, "Run directory trained at the older commit.")
flags.DEFINE_string("new", None, "Run directory trained at this code (optional).")
flags.DEFINE_string("out", "/tmp/qs_bit_for_bit", "Where the old checkpoint is exported again.")
flags.DEFINE_integer("batch", 256, "Texts per call, the same for both exports.")
FLAGS = flags.FLAGS
TIMINGS = ("inference_examples_per_second", "train_seconds", "train_examples_per_second",
           "examples_per_second", "saved_model", "seconds")  # Speeds and paths: not answers.


def differences(a, b, where="") -> list:
  """`(field, a, b)` for each leaf that differs between two metrics.json trees."""
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b)) if k not in TIMINGS
            for d in differences(a.get(k), b.get(k), f"{where}.{k}".lstrip("."))]
  return [] if a == b else [(where, a, b)]


def answers(path: str, texts: list) -> dict:
  """serving_default probabilities and classify scores of the export at `path`, in batches."""
  import tensorflow as tf
  from tfagent import signatures
  loaded = signatures.load_saved_model(path)  # TF Text's ops registered.
  serve, classify = loaded.signatures["serving_default"], loaded.signatures["classify"]
  out = {"probabilities": [], "scores": []}
  for i in range(0, len(texts), FLAGS.batch):
    batch = texts[i:i + FLAGS.batch]
    out["probabilities"].append(serve(text=tf.constant(batch))["probabilities"].numpy())
    examples = [tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[t.encode("utf-8")]))})).SerializeToString()
                for t in batch]
    out["scores"].append(classify(inputs=tf.constant(examples))["scores"].numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def compare(old: dict, new: dict) -> dict:
  """Per output: equal bit for bit, and the largest absolute difference."""
  return {key: {"array_equal": bool(np.array_equal(old[key], new[key])),
                "max_abs_difference": float(np.max(np.abs(old[key] - new[key]))),
                "shape": list(old[key].shape)} for key in old}


def reexport(run: str, folder: str, class_names) -> str:
  """The run's best checkpoint exported by this code (no warm-up file, explain as configured)."""
  import dataclasses
  from tfagent import config, evaluate, export
  cfg = config.load_json(os.path.join(run, "config.json"))
  model = evaluate.load_checkpoint(os.path.join(run, "checkpoints", "best.keras"))
  export_cfg = dataclasses.replace(cfg.export, export_dir=folder, version=0)
  return export.export_model(model, class_names, export_cfg)


def main(argv):
  del argv
  from tfagent import config, data
  old_metrics = json.load(open(os.path.join(FLAGS.old, "eval", "metrics.json")))
  report = {}
  if FLAGS.new:
    new_metrics = json.load(open(os.path.join(FLAGS.new, "eval", "metrics.json")))
    report["metrics_differ"] = [{"field": f, "old": a, "new": b}
                                for f, a, b in differences(old_metrics, new_metrics)]
  cfg = config.load_json(os.path.join(FLAGS.old, "config.json"))
  splits, info = data.load_splits(cfg.data)
  test = list(splits["test"].batch(1024).as_numpy_iterator())
  texts = [t for batch, _ in test for t in data.pairs.rows(batch)]
  labels = np.concatenate([label for _, label in test])
  old = answers(old_metrics["saved_model"], texts)
  again = reexport(FLAGS.old, FLAGS.out, info.class_names)
  new = answers(again, texts)
  report["reexport"], report["test_texts"] = again, len(texts)
  report["old_checkpoint_reexported"] = compare(old, new)
  if FLAGS.new:  # The new run's own export: the same answers only if training repeats exactly.
    report["new_run_export"] = compare(old, answers(new_metrics["saved_model"], texts))
  report["accuracy_old_export"] = float(np.mean(old["probabilities"].argmax(-1)
                                                == labels))
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  flags.mark_flag_as_required("old")
  app.run(main)
