"""Evaluation: accuracy, macro and per-class P/R/F1, ROC-AUC, confusion matrix, predictions.

  tfagent evaluate --model_dir=runs/quickstart --output_dir=DIR [--saved_model=PATH]
  tfagent evaluate --saved_model=saved_models/quickstart --dataset=csv:new.csv [--output_dir=DIR]

With --model_dir the run's own test split is scored (its config.json fixes the
data set and split) with its checkpoints/best.keras, which holds what the export
holds (the wide+deep weight chosen on validation included) in float32: a run that kept an
int8/int4 export says so, and --saved_model scores that export. With --dataset every
labelled record of that source is scored (validated as training data is, with
the data flags), against the model's own class names. Writes metrics.json,
confusion_matrix.png and a predictions csv (text, label, predicted class, each
class's probability); an existing metrics.json (the run's own eval/ holds
training's) is replaced only with --overwrite.
"""

import csv
import dataclasses
import json
import os
import time

from absl import app, flags, logging
import numpy as np
from sklearn import metrics as skm
import tensorflow as tf

from tfagent import cli, config, data, evaluate_checks, fileio, signatures
from tfagent.errors import ConfigError
from tfagent.versions import resolve_saved_model

FLAGS = flags.FLAGS
BATCH_SIZE = 256  # Texts a scoring call.


def scored_batches(predict_fn, ds: tf.data.Dataset, batch_size: int):
  """Yields `(texts <bytes>[b], labels <int>[b], probabilities <float>[b, C], seconds)`.

  `predict_fn(<string>[batch]) -> <float>[batch, C]`; seconds is the time it took. Sentence
  pairs' texts are the dict `{text, text_pair}` of two.
  """
  for text, label in ds.batch(batch_size):
    start = time.perf_counter()
    probs = np.asarray(predict_fn(text))
    yield (tf.nest.map_structure(np.asarray, text), label.numpy(), probs,
           time.perf_counter() - start)


def predict_probabilities(predict_fn, test_ds: tf.data.Dataset, batch_size: int,
                          on_batch=None) -> tuple:
  """Runs `predict_fn` over a split; `on_batch(texts, labels, probabilities)`, if given, sees
  each batch as it is scored.

  Returns:
    `(labels <int>[n], probabilities <float>[n, C], seconds)`: numpy arrays and
    the wall time spent in `predict_fn`.
  """
  labels, probs, seconds = [], [], 0.0
  for text, label, prob, spent in scored_batches(predict_fn, test_ds, batch_size):
    if on_batch is not None:
      on_batch(text, label, prob)
    labels.append(label)
    probs.append(prob)
    seconds += spent
  return np.concatenate(labels), np.concatenate(probs), seconds


def one_vs_rest_auc(truth, probabilities) -> float:
  """Mean ROC-AUC of each column of `probabilities` against the same column of the 0/1
  `truth` `<int>[n, C]`, over the columns with both values (NaN if none has)."""
  aucs = [skm.roc_auc_score(truth[:, j], probabilities[:, j]) for j in range(truth.shape[1])
          if 0 < truth[:, j].sum() < len(truth)]
  return float(np.mean(aucs)) if aucs else float("nan")


def accuracy_and_loss_of(labels, probs) -> dict:
  """Accuracy and mean cross-entropy of probabilities `<float>[n, C]` against `labels`."""
  picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
  return {"accuracy": float((probs.argmax(-1) == labels).mean()),
          "loss": float(-np.log(picked).mean())}


def accuracy_and_loss(predict_fn, ds: tf.data.Dataset, batch_size: int = BATCH_SIZE) -> dict:
  """Accuracy and mean cross-entropy of `predict_fn`'s probabilities on `(text, label)` pairs."""
  labels, probs, _ = predict_probabilities(predict_fn, ds, batch_size)
  return accuracy_and_loss_of(labels, probs)


def macro_averages(y_true, y_pred, labels=None) -> tuple:
  """Macro precision, recall and F1 over the classes where each is defined: a class without
  examples has no recall (nor F1 if never predicted either); one with examples but never
  predicted has precision 0 (scikit-learn's NaN there would leave a failing class out)."""
  p, r, f1, support = skm.precision_recall_fscore_support(
      y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
  p = np.where(np.isnan(p) & (support > 0), 0.0, p)
  return tuple(float(np.nanmean(v)) if (~np.isnan(v)).any() else float("nan")
               for v in (p, r, f1))


def compute_metrics(labels, probabilities, class_names) -> dict:
  """Accuracy, macro and per-class precision/recall/F1, ROC-AUC (one-vs-rest), confusion
  matrix (counts, and normalised by row).

  A class without examples in `labels` (a small fold, a partial file) has no recall and no
  AUC: the macro figures average the classes where each is defined (`macro_averages`; a class
  only predicted counts, with precision 0), instead of counting it as 0 or turning the AUC
  into NaN.
  """
  pred = probabilities.argmax(-1)
  label_ids = list(range(len(class_names)))
  p, r, f1 = macro_averages(labels, pred, label_ids)
  absent = [name for i, name in enumerate(class_names) if not (labels == i).any()]
  if absent:
    logging.warning("No example of %s among the %d scored: its recall and ROC-AUC are undefined "
                    "and left out of the macro figures (predicted, it still counts in macro "
                    "precision and F1, as 0).", ", ".join(absent), len(labels))
  auc = one_vs_rest_auc(np.eye(len(class_names), dtype=int)[labels], probabilities)
  per_p, per_r, per_f1, support = skm.precision_recall_fscore_support(
      labels, pred, labels=label_ids, average=None, zero_division=0)
  per_class = {name: {"precision": float(per_p[i]), "recall": float(per_r[i]),
                      "f1": float(per_f1[i]), "support": int(support[i])}
               for i, name in enumerate(class_names)}
  return {"examples": int(len(labels)), "accuracy": float((pred == labels).mean()),
          "macro_precision": float(p), "macro_recall": float(r), "macro_f1": float(f1),
          "roc_auc": float(auc), "class_names": list(class_names), "per_class": per_class,
          "confusion_matrix": skm.confusion_matrix(labels, pred, labels=label_ids).tolist(),
          # Row i: how class i's examples were predicted (its recall on the diagonal).
          "confusion_matrix_normalized": skm.confusion_matrix(
              labels, pred, labels=label_ids, normalize="true").tolist()}


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
  with tf.io.gfile.GFile(path, "wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)


def write_predictions(predict_fn, ds: tf.data.Dataset, class_names, path: str) -> tuple:
  """Scores `ds` batch by batch into a csv at `path` (text, label, predicted, probabilities;
  sentence pairs: text_pair after text).

  The file is written beside its name and moved into place when complete. Returns
  `(labels <int>[n], probabilities <float>[n, C], seconds)` as `predict_probabilities` does.
  """
  texts = list(ds.element_spec[0]) if isinstance(ds.element_spec[0], dict) else ["text"]
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    writer = csv.writer(f)
    writer.writerow([*texts, "label", "predicted", *(f"probability_{n}" for n in class_names)])

    def write_rows(text, label, prob):
      for t, y, p in zip(data.rows(text), label, prob):
        writer.writerow([*(t if isinstance(t, tuple) else [t]), class_names[y],
                         class_names[int(p.argmax())], *(f"{v:.6f}" for v in p)])

    scored = predict_probabilities(predict_fn, ds, BATCH_SIZE, on_batch=write_rows)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
  return scored


def evaluate(predict_fn, test_ds, class_names, out_dir: str, extra: dict = None,
             predictions: str = "test_predictions.csv") -> dict:
  """Scores a split; writes `metrics.json`, `confusion_matrix.png` and `predictions`.

  `extra` (e.g. training time and history) is merged into the result, and so
  into `metrics.json`, over the test metrics.
  """
  tf.io.gfile.makedirs(out_dir)
  labels, probs, seconds = write_predictions(predict_fn, test_ds, class_names,
                                             os.path.join(out_dir, predictions))
  result = compute_metrics(labels, probs, class_names)
  result["inference_examples_per_second"] = len(labels) / max(seconds, 1e-9)
  result.update(extra or {})
  fileio.write_text_atomically(os.path.join(out_dir, "metrics.json"),
                               json.dumps(result, indent=2))
  plot_confusion(result["confusion_matrix"], class_names,
                 os.path.join(out_dir, "confusion_matrix.png"))
  logging.info("Test: accuracy %.4f, macro F1 %.4f, ROC-AUC %.4f on %d examples -> %s",
               result["accuracy"], result["macro_f1"], result["roc_auc"],
               result["examples"], out_dir)
  return result


def saved_model_predict_fn(path: str, loaded=None):
  """Loads a SavedModel version (TF Text ops registered; `loaded`: already loaded) and
  returns texts -> probabilities."""
  return signatures.probabilities_fn(path, loaded)


def load_checkpoint(path: str):
  """Loads a `.keras` checkpoint of any tfagent model (string input, logits out).

  The classifier inside was saved compiled, so its optimizer and metric classes must
  be registered too; the top-level model is loaded uncompiled (inference needs none).
  """
  import keras
  # Register the custom layers and the optimizer before deserializing.
  import tfagent.models  # noqa: F401
  import tfagent.optim  # noqa: F401
  import tfagent.imbalance  # noqa: F401  (its macro-F1 metric, with --monitor=val_macro_f1)
  import tfagent.distill  # noqa: F401  (its loss and metric, with --teacher)
  # A checkpoint saved before the model object existed comes back as a plain Functional model.
  return tfagent.models.adopt(keras.saving.load_model(path, compile=False))


def define_flags(flag_values=FLAGS) -> None:
  """Defines this entry point's flags (its own and the data section's); only as a program."""
  flags.DEFINE_string("model_dir", None, "Run directory written by tfagent.train: scores its "
                      "test split (its config.json fixes the data set and split).",
                      module_name=__name__, flag_values=flag_values)
  flags.DEFINE_string("saved_model", None, "SavedModel version dir or base path to "
                      "evaluate; default: the run's checkpoints/best.keras (what its export "
                      "holds, in float32 where it kept an int8/int4 export).",
                      module_name=__name__, flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Where metrics go; default MODEL_DIR/eval, or "
                      "./eval with --dataset.", module_name=__name__, flag_values=flag_values)
  flags.DEFINE_boolean("overwrite", False, "Replace an existing OUTPUT_DIR/metrics.json; off, "
                       "it is an error, so training's own eval/metrics.json is kept.",
                       module_name=__name__, flag_values=flag_values)
  config.define_flags([config.DataConfig], flag_values)


def run_test_split(model_dir: str, saved_model: str, output_dir: str,
                   overwrite: bool = False) -> dict:
  """Scores a training run's own test split with its export or its best checkpoint."""
  output_dir = output_dir or os.path.join(model_dir, "eval")
  evaluate_checks.check_overwrite(output_dir, overwrite)
  cfg = config.load_json(os.path.join(model_dir, "config.json"))
  evaluate_checks.check_multiclass(cfg.data)
  # A tune trial's run left test unread (read_test=False); here it is the point.
  splits, info = data.load_splits(dataclasses.replace(cfg.data, read_test=True))
  evaluate_checks.check_same_test_split(model_dir, info, cfg.data.dataset)
  if saved_model:  # What was scored goes into metrics.json (a base path: its latest).
    scored = {"saved_model": resolve_saved_model(saved_model)}
    predict_fn, _ = evaluate_checks.checked_export(scored["saved_model"], cfg.data,
                                                   info.class_names)
  else:
    from tfagent import models  # pylint: disable=C0415  (Keras only on this path)
    evaluate_checks.warn_if_quantized(model_dir)
    scored = {"checkpoint": os.path.join(model_dir, "checkpoints", "best.keras")}
    logits_fn = models.traced(load_checkpoint(scored["checkpoint"]))
    predict_fn = lambda text: tf.nn.softmax(logits_fn(text))
  return evaluate(predict_fn, splits["test"], info.class_names, output_dir,
                  extra={"dataset": cfg.data.dataset, **scored})


def run_labelled_source(data_cfg, saved_model: str, output_dir: str,
                        overwrite: bool = False) -> dict:
  """Scores every labelled record of `data_cfg.dataset` with a SavedModel, in the file's
  order (predictions.csv row i is record i); data_report.json counts what was skipped."""
  if not saved_model:
    raise ConfigError("--dataset needs --saved_model: the export whose classes the labels "
                      "are checked against.")
  output_dir = output_dir or "eval"
  evaluate_checks.check_multiclass(data_cfg)
  evaluate_checks.check_overwrite(output_dir, overwrite)
  export_dir = resolve_saved_model(saved_model)
  predict_fn, class_names = evaluate_checks.checked_export(export_dir, data_cfg)
  ds, info = data.load_all(dataclasses.replace(data_cfg, class_names=tuple(class_names)))
  result = evaluate(predict_fn, ds, info.class_names, output_dir, predictions="predictions.csv",
                    extra={"dataset": data_cfg.dataset, "saved_model": export_dir,
                           "skipped_total": info.report.get("skipped_total", 0)})
  data.write_report(info, os.path.join(output_dir, "data_report.json"))  # What was skipped.
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")

  def body():
    fileio.check_filesystems({"model_dir": FLAGS.model_dir, "saved_model": FLAGS.saved_model,
                              "output_dir": FLAGS.output_dir})
    if FLAGS["dataset"].present:
      run_labelled_source(config.section_from_flags(config.DataConfig, FLAGS),
                          FLAGS.saved_model, FLAGS.output_dir, FLAGS.overwrite)
    elif FLAGS.model_dir:
      run_test_split(FLAGS.model_dir, FLAGS.saved_model, FLAGS.output_dir, FLAGS.overwrite)
    else:
      raise ConfigError("Give --model_dir (score a run's test split) or --saved_model with "
                        "--dataset (score a labelled file).")
  try:
    cli.run_main(body)
  except OSError as e:
    logging.error("%s", e)
    raise SystemExit(1) from None


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(__doc__, [__name__, "DataConfig"]))
