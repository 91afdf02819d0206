"""Quantized exports (`--quantize=int8|int4`): smaller, kept only if accuracy holds.

After training, the trained model is copied (through a `.keras` file, so the float
model stays intact for the fallback) and the copy's weights are quantized with
Keras' `Model.quantize`:
- Dense, EinsumDense (the Transformer's and BERT's attention projections) and
  Embedding layers: int8 weights with one abs-max scale per output channel (per
  token row for embeddings), activations quantized per row at run time; int4 packs
  two weights a byte. LSTM cells have no quantized form in Keras and stay float32;
  their embedding, most of their size, is quantized.
- The wide path's n-gram kernel (models/wide.py `NgramWide.quantize`): int8 with one
  scale per class, in both modes.

Both exports are written staged, side by side, and scored on the validation split
through their serving signature: the quantized one is kept unless it loses more
than `--quantize_max_drop` points of accuracy (of micro-F1 for a multilabel export,
whose label masks use the thresholds it stores); otherwise the float export is kept
and the run logs why. Either way the report (mode, sizes, accuracies, what was kept)
goes into the model card.

The explain signature of a quantized export runs integrated gradients on the
quantized weights it serves: its probabilities are serving_default's, and carrying
float weights for it would undo the size gain. Gradients through int8 Dense and
EinsumDense layers are Keras' straight-through ones (the float kernel's, the
activations' rounding ignored), so the attributions' sum misses F(x) - F(baseline)
by more than on float32 (`completeness_error`; docs/quantization.md has figures).
"""

import dataclasses
import os
import tempfile
import warnings

from absl import logging
import keras
import tensorflow as tf

from tfagent import config, evaluate, export, fileio, progress
from tfagent.errors import ConfigError
from tfagent.models import wide

# What Model.quantize may convert; other leaf layers (LSTM cells, tokenizers) are skipped.
QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding,
               wide.NgramWide)
FLOAT = "float32"
TOLERANCE = 1e-9  # Accuracy points: equal accuracies must not read as a loss.


def copy_model(model: keras.Model) -> keras.Model:
  """A separate copy of `model` (weights, vocabularies, config) through a `.keras` file."""
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "copy.keras")
    model.save(path)
    return evaluate.load_checkpoint(path)


def quantized_copy(model: keras.Model, mode: str, wide_min_step: int = 1) -> keras.Model:
  """A copy of `model` whose QUANTIZABLE layers hold `mode` (int8 or int4) weights, its wide
  path's n-grams with no |int8 weight| >= `wide_min_step` left out."""
  copy = copy_model(model)
  for layer in tf.train.TrackableView(copy).descendants():
    if isinstance(layer, wide.NgramWide):  # Before Model.quantize, which would keep step 1.
      layer.quantize("int8", min_step=wide_min_step)
  with warnings.catch_warnings():
    # Subclasses of Dense or Embedding without a quantized form say so; they stay float.
    warnings.simplefilter("ignore")
    copy.quantize(mode, filters=lambda layer: isinstance(layer, QUANTIZABLE))
  return copy


def folder_bytes(folder: str) -> int:
  """Total size of the files below `folder`."""
  return sum(tf.io.gfile.stat(os.path.join(folder, name)).length
             for name in fileio.files_under(folder))


def sizes(export_dir: str) -> dict:
  """`{"export": bytes of the version folder, "variables": bytes of variables/}`."""
  return {"export": folder_bytes(export_dir),
          "variables": folder_bytes(os.path.join(export_dir, "variables"))}


def validation_score(export_dir: str, validation: tf.data.Dataset, metric: str) -> float:
  """The gate's metric for an export's serving_default on `(text, label)` pairs: accuracy,
  or micro-F1 of a multilabel export's label masks."""
  if metric == "micro_f1":
    from sklearn.metrics import f1_score  # pylint: disable=import-outside-toplevel
    from tfagent import multilabel_report  # pylint: disable=import-outside-toplevel
    scored = multilabel_report.score_export(export_dir, validation)
    return float(f1_score(scored.labels, scored.mask, average="micro", zero_division=0))
  predict_fn = evaluate.saved_model_predict_fn(export_dir)
  return evaluate.accuracy_and_loss(predict_fn, validation)["accuracy"]


def keeps_quantized(float_accuracy: float, quantized_accuracy: float, max_drop: float) -> bool:
  """Whether the quantized export loses at most `max_drop` accuracy points (0.5 = half a
  point); a negative `max_drop` asks it to gain that many."""
  drop = 100.0 * (float_accuracy - quantized_accuracy)
  return drop <= max_drop + TOLERANCE


@dataclasses.dataclass(frozen=True)
class Candidates:
  """The two staged exports the gate chooses between."""
  float32: export.Staged
  quantized: export.Staged


def gate(candidates: Candidates, validation, export_cfg, metric: str = "accuracy") -> tuple:
  """`(kept Staged, report)`: scores both on validation by `metric` (accuracy, or micro_f1),
  removes the one not kept."""
  mode, max_drop = export_cfg.quantize, export_cfg.quantize_max_drop
  staged = {FLOAT: candidates.float32, mode: candidates.quantized}
  score = {name: validation_score(s.path, validation, metric) for name, s in staged.items()}
  label = "micro-F1" if metric == "micro_f1" else "accuracy"
  size = {name: sizes(s.path) for name, s in staged.items()}
  kept = mode if keeps_quantized(score[FLOAT], score[mode], max_drop) else FLOAT
  drop = 100.0 * (score[FLOAT] - score[mode])
  report = {"mode": mode, "kept": kept, "max_drop_points": max_drop, "metric": metric,
            "accuracy_drop_points": drop, f"validation_{metric}": score,
            "export_bytes": {k: v["export"] for k, v in size.items()},
            "variables_bytes": {k: v["variables"] for k, v in size.items()},
            "size_ratio": size[mode]["export"] / max(size[FLOAT]["export"], 1),
            "variables_ratio": size[mode]["variables"] / max(size[FLOAT]["variables"], 1),
            "wide_min_step": export_cfg.quantize_wide_min_step}
  if kept == FLOAT:
    report["reason"] = (f"the {mode} export's validation {label} {score[mode]:.4f} is "
                        f"{drop:.2f} points below float32's {score[FLOAT]:.4f}, more than "
                        f"--quantize_max_drop={max_drop:g}")
    logging.warning("Keeping the float32 export: %s.", report["reason"])
  else:
    logging.info("Keeping the %s export: %.2fx the float32 export's size (variables/ %.2fx), "
                 "validation %s %.4f against %.4f.", mode, report["size_ratio"],
                 report["variables_ratio"], label, score[mode], score[FLOAT])
  fileio.remove_tree(staged[FLOAT if kept == mode else mode].path)
  return staged[kept], report


@progress.stage("Quantizing the export and checking its validation accuracy")
def write_quantized(model: keras.Model, class_names, export_cfg, warmup_texts,
                    validation: tf.data.Dataset, thresholds=None) -> tuple:
  """`(Staged, report)`: the float export staged beside its quantized copy, the gate's pick
  (`thresholds`: a multilabel export's, stored in both; the gate then scores micro-F1)."""
  # Copied first: the explain endpoint adds sub-models to the layers' graph, and a model
  # exported so no longer saves to a .keras file.
  copy = quantized_copy(model, export_cfg.quantize, export_cfg.quantize_wide_min_step)
  float_staged = export.write_staged(model, class_names, export_cfg, warmup_texts, thresholds)
  try:
    quantized = export.write_staged(copy, class_names, export_cfg, warmup_texts, thresholds)
  except BaseException:
    fileio.remove_tree(float_staged.path)
    raise
  try:
    return gate(Candidates(float_staged, quantized), validation, export_cfg,
                "accuracy" if thresholds is None else "micro_f1")
  except BaseException:
    for staged in (float_staged, quantized):
      if tf.io.gfile.exists(staged.path):
        fileio.remove_tree(staged.path)
    raise


def staged_export(model: keras.Model, class_names, export_cfg, warmup_texts,
                  validation: tf.data.Dataset, thresholds=None) -> tuple:
  """`(context manager yielding the Staged export, quantization report or None)`.

  With `--quantize=none` it is export.staged_export's (`thresholds`: a multilabel
  export's); else the gate's choice, published when the block ends like any export.
  """
  if export_cfg.quantize not in config.QUANTIZE_MODES:
    raise ConfigError(f"--quantize={export_cfg.quantize}: expected one of "
                      f"{', '.join(config.QUANTIZE_MODES)}.")
  if export_cfg.quantize_wide_min_step < 1:
    raise ConfigError(f"--quantize_wide_min_step={export_cfg.quantize_wide_min_step}: expected "
                      "1 (leave out only n-grams whose int8 weights are all 0) or more.")
  if export_cfg.quantize == "none":
    return export.staged_export(model, class_names, export_cfg, warmup_texts, thresholds), None
  staged, report = write_quantized(model, class_names, export_cfg, warmup_texts, validation,
                                   thresholds)
  return export.published(staged), report
