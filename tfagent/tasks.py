"""What the task (`--task`) decides after the model: loss, metrics, probabilities, thresholds.

multiclass: one label a text, softmax over the classes, sparse cross-entropy.
multilabel: any set of labels a text, a sigmoid a label, binary cross-entropy; each
label's decision threshold is tuned on validation (the F1-best) and stored in the
export (tfagent/multilabel_export.py); eval/metrics.json holds micro_f1, macro_f1,
per_label, subset_accuracy and lrap (scikit-learn).
"""

import json
import os

from absl import logging
import keras
import numpy as np
from sklearn import metrics as skm
import tensorflow as tf

from tfagent import (config, evaluate, fileio, imbalance, model_card, models, multilabel_report,
                     quantize, signatures, summaries)
from tfagent.errors import ConfigError
from tfagent.multilabel_export import read_thresholds

MULTICLASS, MULTILABEL = config.TASKS


def is_multilabel(cfg: config.Config) -> bool:
  return cfg.data.task == MULTILABEL


def check_config(cfg: config.Config) -> None:
  """Fails on what a multilabel or a sentence-pair run does not support yet, naming the flag."""
  check_pairs(cfg)
  if not is_multilabel(cfg):
    return
  for flag, value, off in (("ensemble_size", cfg.model.ensemble_size, 1),
                           ("wide_ngrams", cfg.model.wide_ngrams, 0),
                           ("class_weight", cfg.train.class_weight, "none"),
                           ("monitor", cfg.train.monitor, "val_loss")):
    if value != off:
      raise ConfigError(f"--{flag}={value} does not apply to --task=multilabel yet (it "
                        f"assumes one softmax label a text); use --{flag}={off}.")


def check_pairs(cfg: config.Config) -> None:
  """Fails on what a sentence-pair run (--text_pair_field) does not support, saying why."""
  if not cfg.data.text_pair_field:
    return
  for flag, value, off, why in (
      ("wide_ngrams", cfg.model.wide_ngrams, 0, "the wide path's features are one text's "
       "n-grams, and a linear model over them cannot compare two texts"),
      ("ensemble_size", cfg.model.ensemble_size, 1, "ensemble members read one text each"),
      ("explain_steps", cfg.export.explain_steps, 0, "the explain signature attributes the "
       "tokens of one text"),
      ("teacher", cfg.train.teacher, "", "distillation's teacher labels one text a record"),
      ("unlabeled", cfg.data.unlabeled, "", "its word vectors are pretrained on texts read "
       "one a record, and it drops the validation and test texts one by one"),
      ("truncation", cfg.model.truncation, "head", "BERT packs a pair with keras-hub's "
       "MultiSegmentPacker, which trims the longer text first")):
    if value != off:
      raise ConfigError(f"--{flag}={value} does not apply to --text_pair_field="
                        f"{cfg.data.text_pair_field} ({why}); use --{flag}={off} "
                        "(docs/data.md#sentence-pairs).")


def check_tune(cfg: config.Config) -> None:
  """Fails before the first trial on what `tfagent tune` does not search yet."""
  if is_multilabel(cfg):
    raise ConfigError("tfagent tune does not search --task=multilabel yet: it scores its best "
                      "trial on test with tfagent evaluate, which reads multiclass exports. "
                      "Compare multilabel settings with tfagent train runs (each writes "
                      "eval/metrics.json: micro_f1, macro_f1), or tune with --task=multiclass.")


def compile_args(task: str, monitor: str, num_classes: int) -> dict:
  """`loss` and `metrics` for `classifier.compile`; the models return logits.

  Multiclass runs also compile macro F1 when --monitor asks for it (tfagent/imbalance.py).

  The multilabel "accuracy" is Keras' per-label binary accuracy at probability 0.5 (logit
  0), so early stopping, TensorBoard and the summaries keep their metric names.
  """
  if task == MULTILABEL:
    return {"loss": keras.losses.BinaryCrossentropy(from_logits=True),
            "metrics": [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]}
  return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
          "metrics": ["accuracy", *imbalance.metrics(monitor, num_classes)]}


def probabilities(task: str, logits):
  """`<float32>[batch, C]` probabilities of `logits`: softmax, or a sigmoid a label."""
  logits = tf.cast(logits, tf.float32)
  return tf.sigmoid(logits) if task == MULTILABEL else tf.nn.softmax(logits, -1)


def best_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
  """`<float32>[C]`: each label's F1-best threshold on `probs >= t`, midway to the next lower
  score for margin; 0.5 for a label whose column is all one value (nothing to tune)."""
  out = np.full(labels.shape[1], 0.5, np.float32)
  for j in range(labels.shape[1]):
    y, p = labels[:, j].astype(int), probs[:, j]
    if y.min() == y.max():
      continue
    precision, recall, cuts = skm.precision_recall_curve(y, p)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    cut = cuts[int(np.argmax(f1))]
    below = p[p < cut]
    out[j] = (cut + below.max()) / 2 if below.size else cut
  return out


def tune_thresholds(cfg: config.Config, model: keras.Model, validation) -> np.ndarray:
  """The multilabel export's thresholds, tuned on validation; None for multiclass."""
  if not is_multilabel(cfg):
    return None
  logits_fn = models.traced(model)
  labels, probs = [], []
  for text, label in validation.batch(multilabel_report.SCORE_BATCH):
    probs.append(probabilities(MULTILABEL, logits_fn(text)).numpy())
    labels.append(label.numpy())
  thresholds = best_thresholds(np.concatenate(labels), np.concatenate(probs))
  logging.info("Per-label thresholds tuned on validation (F1-best): %s",
               np.round(thresholds, 4).tolist())
  return thresholds


def multilabel_metrics(labels, probs, mask, class_names, thresholds) -> dict:
  """Micro/macro F1, per-label P/R/F1/support, subset accuracy, LRAP and ROC-AUC.

  Args:
    labels: `<float>[n, C]` multi-hot truth; probs: `<float>[n, C]`; mask: `<bool>[n, C]`,
      the export's decisions; thresholds: `<float>[C]`, reported beside them.
  """
  y, pred = np.asarray(labels).astype(int), np.asarray(mask).astype(int)
  per_p, per_r, per_f1, support = skm.precision_recall_fscore_support(
      y, pred, average=None, zero_division=0)
  # A label no example holds or gets has no F1: averaged over the others, as multiclass.
  p, r, f1 = evaluate.macro_averages(y, pred)
  per_label = {name: {"precision": float(per_p[i]), "recall": float(per_r[i]),
                      "f1": float(per_f1[i]), "support": int(support[i])}
               for i, name in enumerate(class_names)}
  subset = float(skm.accuracy_score(y, pred))
  return {"task": MULTILABEL, "examples": int(len(y)),
          "micro_f1": float(skm.f1_score(y, pred, average="micro", zero_division=0)),
          "macro_f1": float(f1), "macro_precision": float(p), "macro_recall": float(r),
          "per_label": per_label, "subset_accuracy": subset,
          "accuracy": subset,  # Exact match, so the run's summary line reads the same key.
          "lrap": float(skm.label_ranking_average_precision_score(y, probs)),
          "roc_auc": evaluate.one_vs_rest_auc(y, probs),
          "class_names": list(class_names),
          "thresholds": {n: float(t) for n, t in zip(class_names, thresholds)}}


def keras_figures(scored) -> dict:
  """Keras' multilabel loss and accuracy (binary cross-entropy; per-label binary accuracy
  at probability 0.5) of an export's `multilabel_report.Scored` probabilities."""
  p, y = np.clip(scored.probabilities, 1e-7, 1 - 1e-7), np.asarray(scored.labels)
  return {"loss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()),
          "accuracy": float(((p >= 0.5) == (y > 0.5)).mean())}


def evaluate_multilabel(cfg: config.Config, result: dict, splits, info, staged: str) -> dict:
  """Chief only: the staged export scored on validation and test, eval/metrics.json and
  test_predictions.csv, its model card, the misclassified page and the final summaries
  (scoring.evaluate_export's multilabel branch)."""
  loaded = signatures.load_saved_model(staged)
  scored = {s: multilabel_report.score_export(staged, splits[s], loaded)
            for s in ("validation", "test")[:1 + cfg.data.read_test]}
  metrics = {s: multilabel_metrics(x.labels, x.probabilities, x.mask, info.class_names,
                                   result["thresholds"]) for s, x in scored.items()}
  if (result.get("quantization") or {}).get("kept", quantize.FLOAT) != quantize.FLOAT:
    # Keras' figures are the float32 model's; a tune's objective reads the export's.
    result = {**result, "validation_float32": result["validation"],
              "validation": keras_figures(scored["validation"])}
  result = {**result, **metrics.get("test", {}), "validation_metrics": metrics["validation"],
            "thresholds": metrics["validation"]["thresholds"]}
  eval_dir = os.path.join(cfg.train.model_dir, "eval")
  fileio.write_text_atomically(os.path.join(eval_dir, "metrics.json"),
                               json.dumps(result, indent=2))
  if not cfg.data.read_test:  # --noread_test: validation figures only.
    return result
  multilabel_report.write_predictions(os.path.join(eval_dir, "test_predictions.csv"),
                                      scored["test"], info.class_names, cfg.data.label_delimiter)
  logging.info("Test: micro F1 %.4f, macro F1 %.4f, subset accuracy %.4f, LRAP %.4f on %d "
               "examples -> %s", result["micro_f1"], result["macro_f1"],
               result["subset_accuracy"], result["lrap"], result["examples"], eval_dir)
  hashes = {name: model_card.split_hash(splits[name]) for name in ("train", "validation", "test")}
  card = model_card.build(cfg, info, {**result, "per_class": result["per_label"]}, hashes,
                          model_card.card_warnings(cfg, info, result))
  served = read_thresholds(loaded)  # The values the export's graph applies.
  card["thresholds"] = dict(zip(info.class_names, served))
  model_card.write(staged, card)
  logdir, _, val_dir = summaries.log_dirs(cfg.train.model_dir)
  multilabel_report.write_misclassified(val_dir, scored["validation"], info.class_names, served,
                                        cfg.train.misclassified_examples, cfg.train.epochs)
  summaries.write_final_metrics(logdir, {"val_loss": result["validation"]["loss"],
                                         "test_micro_f1": result["micro_f1"],
                                         "test_macro_f1": result["macro_f1"]},
                                step=cfg.train.epochs)
  return result
