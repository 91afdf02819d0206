"""Evaluation: accuracy, macro P/R/F1, ROC-AUC, confusion matrix (JSON + PNG).

  python -m tfagent.evaluate --model_dir=runs/quickstart [--saved_model=PATH]
"""

import json
import os
import sys
import time

from absl import app, flags, logging
import numpy as np
from sklearn import metrics as skm
import tensorflow as tf

from tfagent import config, data, signatures
from tfagent.errors import TfagentError
from tfagent.versions import resolve_saved_model

FLAGS = flags.FLAGS


def predict_probabilities(predict_fn, test_ds: tf.data.Dataset, batch_size: int) -> tuple:
  """Runs `predict_fn(<string>[batch]) -> <float>[batch, C]` over the test split.

  Returns:
    `(labels <int>[n], probabilities <float>[n, C], seconds)`: numpy arrays and
    the wall time spent in `predict_fn`.
  """
  labels, probs, seconds = [], [], 0.0
  for text, label in test_ds.batch(batch_size):
    start = time.perf_counter()
    probs.append(np.asarray(predict_fn(text)))
    seconds += time.perf_counter() - start
    labels.append(label.numpy())
  return np.concatenate(labels), np.concatenate(probs), seconds


def accuracy_and_loss(predict_fn, ds: tf.data.Dataset, batch_size: int = 256) -> dict:
  """Accuracy and mean cross-entropy of `predict_fn`'s probabilities on `(text, label)` pairs."""
  labels, probs, _ = predict_probabilities(predict_fn, ds, batch_size)
  picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
  return {"accuracy": float((probs.argmax(-1) == labels).mean()),
          "loss": float(-np.log(picked).mean())}


def compute_metrics(labels, probabilities, class_names) -> dict:
  """Accuracy, macro precision/recall/F1, ROC-AUC (one-vs-rest), confusion matrix."""
  pred = probabilities.argmax(-1)
  label_ids = list(range(len(class_names)))
  p, r, f1, _ = skm.precision_recall_fscore_support(
      labels, pred, labels=label_ids, average="macro", zero_division=0)
  if len(set(labels)) < 2:
    auc = float("nan")  # Undefined with one class present.
  elif len(class_names) == 2:
    auc = skm.roc_auc_score(labels, probabilities[:, 1])
  else:
    auc = skm.roc_auc_score(labels, probabilities, multi_class="ovr",
                            average="macro", labels=label_ids)
  return {"examples": int(len(labels)), "accuracy": float((pred == labels).mean()),
          "macro_precision": float(p), "macro_recall": float(r), "macro_f1": float(f1),
          "roc_auc": float(auc), "class_names": list(class_names),
          "confusion_matrix": skm.confusion_matrix(labels, pred, labels=label_ids).tolist()}


def plot_confusion(matrix, class_names, path: str) -> None:
  """Writes the confusion matrix as a PNG with counts in each cell."""
  import matplotlib
  matplotlib.use("Agg")  # No display on servers and CI.
  import matplotlib.pyplot as plt
  size = 2 + 0.6 * len(class_names)
  fig, ax = plt.subplots(figsize=(size, size))
  skm.ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names).plot(
      ax=ax, colorbar=False, values_format="d")
  ax.set_title("Confusion matrix (test)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def evaluate(predict_fn, test_ds, class_names, out_dir: str, batch_size: int = 256,
             extra: dict = None) -> dict:
  """Evaluates on the test split and writes `metrics.json` and `confusion_matrix.png`.

  `extra` (e.g. training time and history) is merged into the result, and so
  into `metrics.json`, over the test metrics.
  """
  labels, probs, seconds = predict_probabilities(predict_fn, test_ds, batch_size)
  result = compute_metrics(labels, probs, class_names)
  result["inference_examples_per_second"] = len(labels) / max(seconds, 1e-9)
  result.update(extra or {})
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  plot_confusion(result["confusion_matrix"], class_names,
                 os.path.join(out_dir, "confusion_matrix.png"))
  logging.info("Test: accuracy %.4f, macro F1 %.4f, ROC-AUC %.4f on %d examples -> %s",
               result["accuracy"], result["macro_f1"], result["roc_auc"],
               result["examples"], out_dir)
  return result


def saved_model_predict_fn(path: str):
  """Loads a SavedModel version (TF Text ops registered) and returns texts -> probabilities."""
  return signatures.probabilities_fn(path)


def load_checkpoint(path: str):
  """Loads a `.keras` checkpoint of any tfagent model (string input, logits out).

  The classifier inside was saved compiled, so its optimizer class must be
  registered too; the top-level model is loaded uncompiled (inference needs none).
  """
  import keras
  # Register the custom layers and the optimizer before deserializing.
  import tfagent.models  # noqa: F401
  import tfagent.optim  # noqa: F401
  return keras.saving.load_model(path, compile=False)


def define_flags() -> None:
  """Defines this entry point's flags; called only when run as a program."""
  flags.DEFINE_string("model_dir", None, "Run directory written by tfagent.train "
                      "(its config.json fixes the data set and split).")
  flags.DEFINE_string("saved_model", None, "SavedModel version dir or base path to "
                      "evaluate; default: the run's checkpoints/best.keras.")
  flags.DEFINE_string("output_dir", None, "Where metrics go; default MODEL_DIR/eval.")


def main(argv):
  del argv
  try:
    cfg = config.load_json(os.path.join(FLAGS.model_dir, "config.json"))
    splits, info = data.load_splits(cfg.data)
    if FLAGS.saved_model:
      predict_fn = saved_model_predict_fn(resolve_saved_model(FLAGS.saved_model))
    else:
      model = load_checkpoint(os.path.join(FLAGS.model_dir, "checkpoints", "best.keras"))
      predict_fn = lambda text: tf.nn.softmax(model(text, training=False))
    evaluate(predict_fn, splits["test"], info.class_names,
             FLAGS.output_dir or os.path.join(FLAGS.model_dir, "eval"))
  except (TfagentError, OSError) as e:
    logging.error("%s", e)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("model_dir")
  app.run(main)
