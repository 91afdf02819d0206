"""A multilabel run's per-text outputs, the multi-label twins of a multiclass run's.

  eval/test_predictions.csv  text (and text_pair), labels (true) and predicted (the export's
      `labels`), each joined by --label_delimiter so the file reads back as multilabel data,
      then probability_<name>: each label's sigmoid score.
  logs/validation            text summary `misclassified_validation_examples`: validation
      texts whose predicted label set is not the true one, most confident mistake first,
      with the labels missed and the labels added, each with its score.
"""

import csv
import dataclasses

import numpy as np
import tensorflow as tf

from tfagent import data, signatures, summaries
from tfagent.multilabel_export import LABEL_MASK, PROBABILITIES

SCORE_BATCH = 256  # Texts a scoring call.


@dataclasses.dataclass(frozen=True)
class Scored:
  """A split scored by a multilabel export's serving_default, row by row."""
  rows: list  # Texts as `data.rows` gives them: strings, or `(text, text_pair)` tuples.
  labels: np.ndarray  # <float32>[n, C] multi-hot truth.
  probabilities: np.ndarray  # <float32>[n, C] sigmoid scores.
  mask: np.ndarray  # <bool>[n, C] the export's decisions (scores >= thresholds).


def score_export(export_dir: str, split, loaded=None) -> Scored:
  """A split through a multilabel export's serving_default (of `loaded`, when given)."""
  serve = signatures.load_signature(export_dir, loaded=loaded)
  rows, labels, probs, masks = [], [], [], []
  for text, label in split.batch(SCORE_BATCH):
    out = serve(**signatures.text_inputs(text))
    rows.extend(data.rows(text))
    labels.append(label.numpy())
    probs.append(out[PROBABILITIES].numpy())
    masks.append(out[LABEL_MASK].numpy())
  return Scored(rows, np.concatenate(labels), np.concatenate(probs), np.concatenate(masks))


def names(hot, class_names) -> list:
  """The class names where `hot` (a multi-hot or boolean row) is on, in class order."""
  return [n for n, on in zip(class_names, hot) if on]


def write_predictions(path: str, scored: Scored, class_names, delimiter: str) -> None:
  """Writes the csv of the module docstring to `path` (beside it first, then moved)."""
  pair = bool(scored.rows) and isinstance(scored.rows[0], tuple)
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    writer = csv.writer(f)
    writer.writerow([signatures.TEXT, *[signatures.TEXT_PAIR] * pair, "labels", "predicted",
                     *(f"probability_{n}" for n in class_names)])
    for row, y, p, m in zip(scored.rows, scored.labels, scored.probabilities, scored.mask):
      writer.writerow([*(row if pair else [row]), delimiter.join(names(y, class_names)),
                       delimiter.join(names(m, class_names)), *(f"{v:.6f}" for v in p)])
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def misclassified_markdown(scored: Scored, class_names, thresholds, limit: int) -> str:
  """A markdown table of up to `limit` texts whose label set is wrong, ordered by their
  most confident wrong decision (the largest |score - threshold| among wrong labels)."""
  wrong = scored.mask != scored.labels.astype(bool)  # <bool>[n, C]
  margin = np.where(wrong, np.abs(scored.probabilities - np.asarray(thresholds)), -1.0).max(-1)
  shown = [i for i in np.argsort(-margin, kind="stable") if wrong[i].any()][:limit]
  rows = ["| true | predicted | missed (score) | added (score) | text |",
          "| --- | --- | --- | --- | --- |"]
  rows += [mistake_row(scored, i, wrong[i], class_names) for i in shown]
  if not shown:
    rows.append("| - | - | - | - | no mistakes among the examples checked |")
  return "\n".join(rows)


def mistake_row(scored: Scored, i: int, wrong, class_names) -> str:
  """Row `i` of the misclassified table; `wrong` `<bool>[C]`: its wrong decisions."""
  p, y = scored.probabilities[i], scored.labels[i].astype(bool)

  def listed(on):
    return ", ".join(f"{n} ({p[j]:.2f})" for j, n in enumerate(class_names) if on[j]) or "-"
  row = scored.rows[i]
  text = data.pairs.SHOWN.join(row) if isinstance(row, tuple) else row
  return (f"| {', '.join(names(y, class_names)) or '-'} | "
          f"{', '.join(names(scored.mask[i], class_names)) or '-'} | "
          f"{listed(wrong & y)} | {listed(wrong & ~y)} | {summaries.cell(text)} |")


def write_misclassified(logdir: str, scored: Scored, class_names, thresholds, limit: int,
                        step: int) -> None:
  """Writes `misclassified_markdown` as the run's misclassified-examples text summary."""
  table = misclassified_markdown(scored, class_names, thresholds, limit)
  with tf.summary.create_file_writer(logdir).as_default():
    tf.summary.text("misclassified_validation_examples", table, step=step)
