"""After the fit: the deep path's weight, the export's scores, eval/ and the model card.

A wide+deep model's deep weight is chosen on validation (`weigh_paths`); the staged
export is then scored on validation and test as it will serve (`evaluate_export`), and
those figures go to eval/metrics.json, TensorBoard and the model card.
"""

import json
import os

from absl import logging
import keras
import numpy as np

from tfagent import (config, data, evaluate, explain_view, fileio, model_card, models, progress,
                     quantize, summaries, tasks)
from tfagent.signatures import load_saved_model


def path_outputs(paths, split, batch_size: int = evaluate.BATCH_SIZE) -> tuple:
  """`(wide, deep, labels)`: each path's `<float32>[n, C]` logits on a split, and its labels.

  `paths` is `models.traced(model.path_logits())`, traced once for every split.
  """
  wide, deep, labels = [], [], []
  for text, label in split.batch(batch_size):
    w, d = paths(text)
    wide.append(np.asarray(w))
    deep.append(np.asarray(d))
    labels.append(label.numpy())
  return np.concatenate(wide), np.concatenate(deep), np.concatenate(labels)


@progress.stage("Choosing the deep path's weight on validation")
def weigh_paths(model: keras.Model, validation, out: config.Config,
                class_weight=None) -> tuple:
  """`(paths, choice)`: the traced path function with validation's path logits, and the deep
  weight `set_deep_weight` chose on them (`class_weight`: the run's, or None)."""
  paths = {"fn": models.traced(model.path_logits())}
  paths["validation"] = path_outputs(paths["fn"], validation)
  return paths, set_deep_weight(model, paths["validation"], out, class_weight)


def set_deep_weight(model: keras.Model, outputs: tuple, out: config.Config,
                    class_weight=None) -> dict:
  """Sets `wide_deep`'s deep weight to the one of lowest validation loss (`outputs`: validation's
  `path_outputs`; classes weighed by `class_weight`, as in training) and saves out's best.keras
  with it: the checkpoint scores as the export does."""
  weight, losses = models.wide_fit.choose_deep_weight(*outputs, class_weight)
  model.set_deep_weight(weight)
  fileio.replace_atomically(model.save, os.path.join(out.train.model_dir, "checkpoints",
                                                     "best.keras"))
  logging.info("Wide + deep: deep-path weight %.2f chosen on validation (loss %.4f; wide "
               "alone %.4f, weight 1 %.4f).", weight, losses[weight], losses[0.0], losses[1.0])
  return {"chosen": weight, "validation_loss": {f"{w:g}": l for w, l in losses.items()}}


@progress.stage("Scoring the export on validation and test; writing eval/ and the model card")
def evaluate_export(cfg: config.Config, result: dict, splits, info, paths, staged: str) -> dict:
  """Chief only: test metrics of the export staged at `staged`, `eval/metrics.json`, its
  model card, final summaries.

  `paths` (wide+deep models only) holds the traced path function and the validation
  split's path logits, for the ablation rows.
  """
  if tasks.is_multilabel(cfg):
    return tasks.evaluate_multilabel(cfg, result, splits, info, staged)
  eval_dir = os.path.join(cfg.train.model_dir, "eval")
  loaded = load_saved_model(staged)  # Once, for scoring and the explanations.
  predict_fn = evaluate.saved_model_predict_fn(staged, loaded)
  # The export scores the validation split once: its accuracy and loss, its metrics and
  # the misclassified-examples summary (from the first texts).
  scan = []

  def keep_texts(texts, labels, probs):
    scan.extend(data.joined(texts, data.pairs.SHOWN)[:summaries.MISCLASSIFIED_SCAN - len(scan)])

  labels, probs, _ = evaluate.predict_probabilities(predict_fn, splits["validation"],
                                                    evaluate.BATCH_SIZE, on_batch=keep_texts)
  quantized = (result.get("quantization") or {}).get("kept", quantize.FLOAT) != quantize.FLOAT
  if cfg.model.ensemble_size > 1 or cfg.model.wide_ngrams or quantized:
    # Keras' validation figures are the deep path's (its members' mean), or the float32
    # model's where an int8/int4 export is kept; the export's own are the model's.
    keras_key = ("validation_members_mean" if cfg.model.ensemble_size > 1 else
                 "validation_deep" if cfg.model.wide_ngrams else "validation_float32")
    keras_key += "_float32" if quantized and not keras_key.endswith("_float32") else ""
    result = {**result, keras_key: result["validation"],
              "validation": evaluate.accuracy_and_loss_of(labels, probs)}
    logging.info("Validation of the export: %s (Keras, %s: %s)", result["validation"],
                 keras_key, result[keras_key])
  result["validation_metrics"] = {k: v for k, v in evaluate.compute_metrics(
      labels, probs, info.class_names).items() if k in model_card.METRIC_KEYS}
  if not cfg.data.read_test:  # tfagent tune's trials: validation figures only.
    return validation_only(cfg, result)
  if paths is not None:  # Traced on the float32 model: not the paths of a quantized export.
    result["paths_float32" if quantized else "paths"] = path_metrics(
        {**paths, "test": path_outputs(paths["fn"], splits["test"])}, info.class_names)
  result = evaluate.evaluate(predict_fn, splits["test"], info.class_names, eval_dir, extra=result)
  write_model_card(cfg, result, splits, info, staged)
  logdir, _, val_dir = summaries.log_dirs(cfg.train.model_dir)
  validation = result["validation"]
  summaries.write_final_metrics(logdir, {"val_loss": validation["loss"],
                                         "val_accuracy": validation["accuracy"],
                                         "val_macro_f1": result["validation_metrics"]["macro_f1"],
                                         "test_accuracy": result["accuracy"]},
                                step=cfg.train.epochs)
  n = len(scan)
  explain = (explain_view.load_explainer(staged, loaded=loaded)
             if explain_view.has_explain(staged) else None)
  summaries.write_misclassified(val_dir, (scan, labels[:n], probs[:n]), info.class_names,
                                cfg.train.misclassified_examples, cfg.train.epochs, explain)
  return result


def validation_only(cfg: config.Config, result: dict) -> dict:
  """Without `read_test`: eval/metrics.json and the final summaries hold validation figures."""
  fileio.write_text_atomically(os.path.join(cfg.train.model_dir, "eval", "metrics.json"),
                               json.dumps(result, indent=2))
  summaries.write_final_metrics(summaries.log_dirs(cfg.train.model_dir)[0], {
      "val_loss": result["validation"]["loss"], "val_accuracy": result["validation"]["accuracy"],
      "val_macro_f1": result["validation_metrics"]["macro_f1"]}, step=cfg.train.epochs)
  return result


def write_model_card(cfg: config.Config, result: dict, splits, info, export_dir: str) -> None:
  """model_card.{json,md} in the export's (staged) version directory (tfagent/model_card.py)."""
  hashes = {name: model_card.split_hash(splits[name]) for name in data.SPLITS}
  card = model_card.build(cfg, info, result, hashes, model_card.card_warnings(cfg, info, result))
  model_card.write(export_dir, card)


def path_metrics(paths: dict, class_names) -> dict:
  """Each path alone (the ablation of a wide+deep model): validation and test metrics from
  `paths[split] = path_outputs(...)`."""
  out = {"wide": {}, "deep": {}}
  for split in ("validation", "test"):
    wide, deep, labels = paths[split]
    for name, logits in (("wide", wide), ("deep", deep)):
      probs = np.asarray(keras.ops.softmax(logits, axis=-1))
      m = evaluate.compute_metrics(labels, probs, class_names)
      out[name][split] = {k: m[k] for k in ("accuracy", "macro_f1", "examples")}
  logging.info("Each path alone: wide %s, deep %s.", out["wide"], out["deep"])
  return out
