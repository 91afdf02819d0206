"""Imbalanced classes: --class_weight as per-example weights, and a macro-F1 metric to monitor.

Class weights become a third element of each training batch, `(ids, label, weight)`,
which Keras reads as sample weights: this works under every tf.distribute strategy,
where `fit(class_weight=...)` does not (Keras maps it over a tf.data.Dataset, and
a distributed dataset has no `map`). Weights are counted on the training split only.
"""

import json

from absl import logging
import keras
import numpy as np
from sklearn.utils import class_weight as sk_class_weight
import tensorflow as tf

from tfagent import config
from tfagent.errors import ConfigError



def class_weights(spec: str, class_names, train_counts: dict):
  """`<float32>[C]` weights of `--class_weight` (None for none), from train's class counts.

  Args:
    spec: "none", "balanced" (n / (C * n_c), scikit-learn's) or a JSON file path.
    class_names: the classes in label order.
    train_counts: class name -> training examples.
  """
  if spec in ("", "none"):
    return None
  if spec == "balanced":
    ids = np.repeat(np.arange(len(class_names)), [train_counts[n] for n in class_names])
    weights = sk_class_weight.compute_class_weight("balanced", classes=np.unique(ids), y=ids)
  else:
    weights = weights_file(spec, class_names)
  logging.info("--class_weight=%s: %s (train counts %s).", spec,
               dict(zip(class_names, np.round(weights, 4).tolist())), train_counts)
  return np.asarray(weights, np.float32)


def weights_file(path: str, class_names) -> list:
  """Weights from a JSON object {class name: positive weight}; a class left out weighs 1."""
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      given = json.load(f)
  except (OSError, tf.errors.OpError, ValueError) as e:
    raise ConfigError(f"--class_weight={path}: cannot read it as JSON ({e}); expected "
                      "none, balanced, or a JSON file {\"class name\": weight, ...}.") from None
  if not isinstance(given, dict):
    raise ConfigError(f"--class_weight={path}: holds a JSON {type(given).__name__}; expected "
                      "an object {\"class name\": weight, ...}.")
  for name, weight in given.items():
    if name not in class_names:
      raise ConfigError(f"--class_weight={path}: key {name!r} is no class; the classes are "
                        f"{', '.join(class_names)}.")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
      raise ConfigError(f"--class_weight={path}: key {name!r} has weight {weight!r}; "
                        "expected a positive number.")
  return [float(given.get(name, 1.0)) for name in class_names]


def weighted(input_fn, weights):
  """`input_fn` whose batches carry each example's class weight: `(ids, label, weight)`."""
  if weights is None:
    return input_fn
  table = tf.constant(weights, tf.float32)

  def with_weights(ctx=None):
    return input_fn(ctx).map(lambda ids, label: (ids, label, tf.gather(table, label)),
                             num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
  return with_weights


@keras.saving.register_keras_serializable(package="tfagent")
class SparseMacroF1(keras.metrics.F1Score):
  """Macro F1 of logits against integer labels (F1Score wants one-hot labels).

  Labels of any shape `[...]` with logits `[..., C]` (an ensemble's `[batch, members]`
  scores every member's prediction); the arg-max class counts as predicted.
  """

  def __init__(self, num_classes: int, name: str = "macro_f1", **kwargs):
    kwargs.pop("average", None)
    kwargs.pop("threshold", None)
    super().__init__(average="macro", threshold=None, name=name, **kwargs)
    self.num_classes = num_classes

  def update_state(self, y_true, y_pred, sample_weight=None):
    y_pred = keras.ops.reshape(y_pred, (-1, self.num_classes))
    y_true = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)),
                               self.num_classes)
    if sample_weight is not None:
      sample_weight = keras.ops.reshape(sample_weight, (-1,))
    super().update_state(y_true, y_pred, sample_weight)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes}


def metrics(monitor: str, num_classes: int) -> list:
  """Metrics compiled beside accuracy: macro F1 when --monitor asks for it."""
  check_monitor(monitor)
  return [SparseMacroF1(num_classes)] if monitor == "val_macro_f1" else []


def check_monitor(monitor: str) -> str:
  """The direction ("min"/"max") of a --monitor value; another is an error."""
  if monitor not in config.MONITORS:
    raise ConfigError(f"--monitor={monitor!r} is invalid; expected one of "
                      f"{', '.join(config.MONITORS)}.")
  return "min" if monitor == "val_loss" else "max"  # Losses fall; accuracy and F1 rise.


def train_counts(info, train_ds) -> dict:
  """Class name -> training examples: from the data report, else one pass over the labels."""
  counts = (info.report.get("class_balance") or {}).get("train")
  if counts is None:
    ids = np.bincount(np.fromiter((label for _, label in train_ds.as_numpy_iterator()), int),
                      minlength=len(info.class_names))
    counts = {name: int(ids[i]) for i, name in enumerate(info.class_names)}
  return counts


def run_weights(train_cfg, info, train_ds):
  """The run's class weights (None without --class_weight), counted on the training split."""
  if train_cfg.class_weight in ("", "none"):
    return None
  return class_weights(train_cfg.class_weight, info.class_names, train_counts(info, train_ds))
