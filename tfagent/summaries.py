"""TensorBoard summaries beyond Keras' own: throughput, hparams, misclassified texts.

Keras' TensorBoard callback writes `logs/train` and `logs/validation` (epoch
loss, accuracy, learning rate, profiler trace). These add what a practitioner
also looks for: examples/s, the run's config with its final metrics in the
hparams dashboard, and validation texts the model gets wrong, with the tokens that
pushed the export toward its wrong answer where it has an `explain` signature.
"""

import os
import time

import keras
import numpy as np
from tensorboard.plugins.hparams import api as hp
import tensorflow as tf

from tfagent import explain_view

# A run writes those it has: multiclass the val_ and test_accuracy ones, multilabel val_loss
# and its test F1s (the HParams dashboard shows a column a tag).
FINAL_METRICS = ("final/val_loss", "final/val_accuracy", "final/val_macro_f1",
                 "final/test_accuracy", "final/test_micro_f1", "final/test_macro_f1")
MISCLASSIFIED_SCAN = 512  # Validation texts scanned for the misclassified-examples summary.


class Throughput(keras.callbacks.Callback):
  """Adds `examples_per_second` (training steps only, not validation) to the epoch logs.

  Place it before keras.callbacks.TensorBoard, which then writes it to
  `logs/train` as `epoch_examples_per_second`.
  """

  def __init__(self, global_batch_size: int):
    super().__init__()
    self.global_batch_size = global_batch_size

  def on_epoch_begin(self, epoch, logs=None):
    self.steps, self.start, self.seconds = 0, time.perf_counter(), None

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1

  def on_test_begin(self, logs=None):
    if self.seconds is None:  # Validation inside fit: stop the clock before it.
      self.seconds = time.perf_counter() - self.start

  def on_epoch_end(self, epoch, logs=None):
    seconds = self.seconds or time.perf_counter() - self.start
    if logs is not None:
      logs["examples_per_second"] = self.steps * self.global_batch_size / max(seconds, 1e-9)


def flat_config(cfg_dict: dict) -> dict:
  """`{"train": {"epochs": 5}}` -> `{"train.epochs": 5}`, values as hparams accepts them."""
  flat = {}
  for section, fields in cfg_dict.items():
    for name, value in fields.items():
      ok = isinstance(value, (bool, int, float, str))
      flat[f"{section}.{name}"] = value if ok else str(value)
  return flat


def write_hparams(logdir: str, cfg_dict: dict, trial_id: str) -> None:
  """Writes the run's config to the hparams dashboard, with the final metrics as columns."""
  hparams = flat_config(cfg_dict)
  with tf.summary.create_file_writer(logdir).as_default():
    hp.hparams_config(
        hparams=[hp.HParam(name) for name in sorted(hparams)],
        metrics=[hp.Metric(tag, display_name=tag.split("/")[1]) for tag in FINAL_METRICS])
    hp.hparams(hparams, trial_id=trial_id)


def write_final_metrics(logdir: str, metrics: dict, step: int) -> None:
  """Writes `final/NAME` scalars beside the hparams, which the dashboard shows per run; a name
  not in FINAL_METRICS is an error (it would be dropped unseen)."""
  unknown = sorted(set(metrics) - {tag.split("/")[1] for tag in FINAL_METRICS})
  if unknown:
    raise ValueError(f"final metrics {unknown} are not in summaries.FINAL_METRICS")
  with tf.summary.create_file_writer(logdir).as_default():
    for tag in FINAL_METRICS:
      name = tag.split("/")[1]
      if metrics.get(name) is not None:
        tf.summary.scalar(tag, float(metrics[name]), step=step)


def misclassified_markdown(texts, labels, probabilities, class_names, limit: int,
                           explain=None) -> str:
  """A markdown table of up to `limit` mistakes, most confident first; with `explain`
  (`texts -> rows`, tfagent/explain_view.py), each one's top tokens toward its prediction."""
  predicted = probabilities.argmax(-1)
  wrong = np.flatnonzero(predicted != labels)
  wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:limit]
  decoded = [texts[i].decode("utf-8", "replace") for i in wrong]
  # Only the shown texts, in one call: explaining costs several model calls a text.
  top = [top_tokens_cell(row) for row in explain(decoded)] if explain and decoded else None
  rows = ["| true | predicted | p | text |" + (" top tokens |" if top else ""),
          "| --- | --- | --- | --- |" + (" --- |" if top else "")]
  for k, i in enumerate(wrong):
    rows.append(f"| {class_names[labels[i]]} | {class_names[predicted[i]]} | "
                f"{probabilities[i, predicted[i]]:.2f} | {cell(decoded[k])} |"
                + (f" {top[k]} |" if top else ""))
  if not len(wrong):
    rows.append("| - | - | - | no mistakes among the examples checked |")
  return "\n".join(rows)


def cell(text: str, limit: int = 300) -> str:
  """`text` as one markdown table cell: cut to `limit` characters, on one line."""
  return text[:limit].replace("|", "\\|").replace("\n", " ")


def top_tokens_cell(row: dict) -> str:
  """`token (+0.42), ...`: the explained row's tokens of largest |attribution|."""
  return ", ".join(f"{cell(t, 40)} ({a:+.2f})" for t, a in explain_view.top_tokens(row))


def write_misclassified(logdir: str, scored: tuple, class_names, limit: int,
                        step: int, explain=None) -> None:
  """Writes up to `limit` mistakes among `scored = (texts, labels, probabilities)` (the
  export's answers on the first `MISCLASSIFIED_SCAN` validation texts) as a text summary,
  with their top tokens when `explain` is given (misclassified_markdown)."""
  texts, labels, probabilities = scored
  if not len(texts):
    return
  table = misclassified_markdown(texts, labels, probabilities, class_names, limit, explain)
  with tf.summary.create_file_writer(logdir).as_default():
    tf.summary.text("misclassified_validation_examples", table, step=step)


def log_dirs(model_dir: str) -> tuple:
  """`(root, train, validation)` TensorBoard folders of a run directory."""
  root = os.path.join(model_dir, "logs")
  return root, os.path.join(root, "train"), os.path.join(root, "validation")
