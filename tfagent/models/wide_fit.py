"""Fitting the wide path (models/wide.py) on the host, before the deep path trains.

The vocabulary and the naive-Bayes ratios come from the training split only, so an
n-gram seen only in validation or test has no weight (`fit_wide`); C, and after
training the deep path's weight (`choose_deep_weight`), are chosen on validation.
"""

import collections
import time

from absl import logging
import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
import tensorflow as tf

from tfagent.errors import ConfigError
from tfagent.models.wide import NgramWide, make_layer, ngram_strings

NB_SMOOTHING = 1.0  # Laplace count added to p and q (Wang & Manning's alpha).
# Inverse L2 strengths tried on validation when --wide_c=0. Validation accuracy of
# 1-3-grams in >= 2 texts: IMDB 92.53 / 92.57 / 92.61 % at 0.1 / 0.3 / 1; the embedded
# corpus prefers the strongest (85.3 % at 0.1).
C_GRID = (0.03, 0.1, 0.3, 1.0)
# Deep-path weights tried on validation; 0 keeps the wide path alone.
DEEP_WEIGHTS = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2)) + (1.25, 1.5, 2.0)
COUNT_BATCH = 256  # Texts per vectorized n-gram call while counting.
LOG_EVERY = 50_000  # Texts between progress lines while counting.


class WideFit:
  """A fitted wide path: vocabulary, weights and a report of how they were chosen."""

  def __init__(self, ngrams, vocabulary, kernel, bias, report):
    self.ngrams, self.vocabulary = ngrams, vocabulary
    self.kernel, self.bias, self.report = kernel, bias, report

  def layer(self, name: str = "wide") -> NgramWide:
    """An `NgramWide` layer holding this fit."""
    return make_layer(self.ngrams, self.vocabulary, self.kernel, self.bias, name)


def count_ngrams(texts: tf.data.Dataset, ngrams: int) -> collections.Counter:
  """Document frequency of every n-gram in `<string>[]` texts, in one streaming pass."""
  counts, seen = collections.Counter(), 0
  batches = texts.batch(COUNT_BATCH).map(lambda t: ngram_strings(t, ngrams),
                                         num_parallel_calls=tf.data.AUTOTUNE)
  for grams in batches.prefetch(2).as_numpy_iterator():
    for row in grams:
      counts.update(set(row.tolist()))
    seen += len(grams)
    if seen % LOG_EVERY < COUNT_BATCH:
      logging.info("Wide path: counted the n-grams of %d training texts...", seen)
  return counts


def select_vocabulary(counts: collections.Counter, min_count: int, max_size: int) -> list:
  """The n-grams in at least `min_count` texts, the `max_size` most frequent, ties by text."""
  kept = [(-n, gram) for gram, n in counts.items() if n >= min_count]
  kept.sort()
  return [gram.decode("utf-8") for _, gram in kept[:max_size]]


def featurize(layer: NgramWide, split: tf.data.Dataset) -> tuple:
  """`(X, labels)`: binary `<float32>[n, V+1]` CSR n-gram features and `<int>[n]` labels."""
  rows, cols, labels, offset = [], [], [], 0

  def ids_of(text, label):
    ids = layer.ngram_ids(text)
    return ids.flat_values, ids.row_lengths(), label
  batches = split.batch(COUNT_BATCH).map(ids_of, num_parallel_calls=tf.data.AUTOTUNE)
  for values, lengths, y in batches.prefetch(2).as_numpy_iterator():
    rows.append(np.repeat(np.arange(offset, offset + len(lengths)), lengths))
    cols.append(values)
    labels.append(y)
    offset += len(lengths)
  rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
  cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
  x = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                        shape=(offset, layer.vocabulary_size + 1))
  x.data[:] = 1.0  # Repeated n-grams were summed; the features are binary.
  return x, np.concatenate(labels) if labels else np.zeros(0, np.int32)


def nb_ratios(x: sparse.csr_matrix, positive: np.ndarray) -> np.ndarray:
  """`<float>[V+1]` log-count ratios of the texts where `positive` holds against the rest."""
  p = np.asarray(x[positive].sum(axis=0)).ravel() + NB_SMOOTHING
  q = np.asarray(x[~positive].sum(axis=0)).ravel() + NB_SMOOTHING
  r = np.log(p / p.sum()) - np.log(q / q.sum())
  r[0] = 0.0  # Unknown n-grams carry nothing.
  return r


def fit_linear(x, labels, num_classes: int, c: float, seed: int, class_weight=None) -> tuple:
  """`(kernel <float32>[V+1, C], bias <float32>[C])` of NB-scaled logistic regression.

  Two classes: one model, its decision split evenly between the two logits (so
  the softmax is its sigmoid). More: one-vs-rest, a ratio vector and a model per class.
  `class_weight`: `<float>[C]` (--class_weight), each example weighted by its class's.
  """
  sample_weight = None if class_weight is None else np.asarray(class_weight)[labels]
  kernel = np.zeros((x.shape[1], num_classes), np.float32)
  bias = np.zeros(num_classes, np.float32)
  for k in ([1] if num_classes == 2 else range(num_classes)):
    r = nb_ratios(x, labels == k)
    model = LogisticRegression(C=c, solver="liblinear", max_iter=1000, random_state=seed)
    model.fit(x @ sparse.diags(r), labels == k, sample_weight=sample_weight)
    kernel[:, k], bias[k] = r * model.coef_[0], model.intercept_[0]
  if num_classes == 2:
    kernel[:, 1], bias[1] = kernel[:, 1] / 2, bias[1] / 2
    kernel[:, 0], bias[0] = -kernel[:, 1], -bias[1]
  return kernel, bias


def log_loss(logits: np.ndarray, labels: np.ndarray, class_weight=None) -> float:
  """Mean cross-entropy of `<float>[n, C]` logits against `<int>[n]` labels; with
  `class_weight` (`<float>[C]`), each example weighted by its class's, as training weighs it."""
  logits = logits - logits.max(axis=1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  weights = None if class_weight is None else np.asarray(class_weight)[labels]
  return float(np.average(-log_probs[np.arange(len(labels)), labels], weights=weights))


def fit_wide(model_cfg, train: tf.data.Dataset, validation: tf.data.Dataset,
             num_classes: int, seed: int, class_weight=None) -> WideFit:
  """Fits the wide path on `train` (`(text, label)` elements); picks C on `validation`.

  Args:
    model_cfg: ModelConfig (wide_ngrams, wide_min_count, wide_vocab_size, wide_c).
    train: training examples; the vocabulary and the ratios come from these only.
    validation: examples that choose C when `wide_c` is 0.
    num_classes: width of the logits.
    seed: fixes liblinear's coordinate order, so every worker fits the same weights.
  """
  start = time.perf_counter()
  counts = count_ngrams(train.map(lambda text, _: text), model_cfg.wide_ngrams)
  vocabulary = select_vocabulary(counts, model_cfg.wide_min_count, model_cfg.wide_vocab_size)
  report = {"ngrams_counted": len(counts), "vocabulary_size": len(vocabulary)}
  del counts
  if not vocabulary:
    raise ConfigError(f"--wide_min_count={model_cfg.wide_min_count}: no n-gram of the "
                      "training split occurs in that many texts; lower it or set "
                      "--wide_ngrams=0.")
  layer = make_layer(model_cfg.wide_ngrams, vocabulary,
                     np.zeros((len(vocabulary) + 1, num_classes), np.float32),
                     np.zeros(num_classes, np.float32))
  logging.info("Wide path: %d n-grams kept of %d counted; featurizing train and validation.",
               len(vocabulary), report["ngrams_counted"])
  x, labels = featurize(layer, train)
  x_val, labels_val = featurize(layer, validation)
  grid = [model_cfg.wide_c] if model_cfg.wide_c > 0 else list(C_GRID)
  tried = {}
  for i, c in enumerate(grid):  # Each fit takes seconds: say which one runs.
    logging.info("Wide path: fitting C %g (%d of %d).", c, i + 1, len(grid))
    kernel, bias = fit_linear(x, labels, num_classes, c, seed, class_weight)
    logits = x_val @ kernel + bias
    tried[c] = {"validation_loss": log_loss(logits, labels_val, class_weight)
                if len(labels_val) else 0.0,
                "validation_accuracy": float((logits.argmax(1) == labels_val).mean())
                if len(labels_val) else 0.0, "weights": (kernel, bias)}
  best = min(tried, key=lambda c: tried[c]["validation_loss"])
  report.update(c=best, tried={str(c): {k: v for k, v in t.items() if k != "weights"}
                               for c, t in tried.items()},
                seconds=time.perf_counter() - start)
  logging.info("Wide path: %d of %d n-grams (1-%d-grams in >= %d texts), C %g chosen on "
               "validation (%s); %.0f s.", len(vocabulary), report["ngrams_counted"],
               model_cfg.wide_ngrams, model_cfg.wide_min_count, best,
               ", ".join(f"C {c}: accuracy {t['validation_accuracy']:.4f} loss "
                         f"{t['validation_loss']:.4f}" for c, t in report["tried"].items()),
               report["seconds"])
  return WideFit(model_cfg.wide_ngrams, vocabulary, *tried[best]["weights"], report)


def choose_deep_weight(wide: np.ndarray, deep: np.ndarray, labels: np.ndarray,
                       class_weight=None) -> tuple:
  """`(weight, {weight: validation loss})`: the DEEP_WEIGHTS entry of lowest loss.

  Args:
    wide, deep: `<float>[n, C]` logits of the two paths on validation examples.
    labels: `<int>[n]` their labels.
    class_weight: `<float>[C]` (--class_weight) or None: the loss weighs classes so.
  """
  losses = {float(w): log_loss(wide + w * deep, labels, class_weight) for w in DEEP_WEIGHTS}
  return min(losses, key=losses.get), losses
