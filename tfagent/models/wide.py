"""The wide path: a linear model over binary n-grams scaled by naive-Bayes log-count ratios.

This is the NBSVM of Wang & Manning (2012), "Baselines and Bigrams", with
logistic regression in place of the SVM: each n-gram present in a text counts
once, scaled by r = log(p / |p|) - log(q / |q|), where p and q are the
(smoothed) numbers of training texts of the class and of the other classes that
hold it. With more than two classes each class gets its own ratio vector and
its own one-vs-rest model.

The n-grams, their vocabulary and the weights are computed inside the graph
(`NgramWide`): raw strings in, logits out, only core TensorFlow ops, so the
export stays servable by TF Serving. Fitting runs once on the host before the
deep path trains (`fit_wide`): the vocabulary and the ratios come from the
training split only, so an n-gram seen only in validation or test has no
weight. `WideDeep` adds the two paths' logits, the deep one scaled by a weight
chosen on the validation split after training (`choose_deep_weight`).
"""

import collections
import json
import os
import time

from absl import logging
import keras
import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
import tensorflow as tf

from tfagent.errors import ConfigError
from tfagent.models import vocab_files
from tfagent.models.layers import standardize

NB_SMOOTHING = 1.0  # Laplace count added to p and q (Wang & Manning's alpha).
# Inverse L2 strengths tried on validation when --wide_c=0. Validation accuracy of
# 1-3-grams in >= 2 texts: IMDB 92.53 / 92.57 / 92.61 % at 0.1 / 0.3 / 1; the embedded
# corpus prefers the strongest (85.3 % at 0.1).
C_GRID = (0.03, 0.1, 0.3, 1.0)
# Deep-path weights tried on validation; 0 keeps the wide path alone.
DEEP_WEIGHTS = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2)) + (1.25, 1.5, 2.0)
COUNT_BATCH = 256  # Texts per vectorized n-gram call while counting.
LOG_EVERY = 50_000  # Texts between progress lines while counting.


def ngram_strings(text: tf.Tensor, ngrams: int) -> tf.RaggedTensor:
  """`<string>[batch]` -> `<string>[batch, (n-grams)]`: 1..ngrams-grams of tokens.

  Tokens are the deep path's: lower-cased words, with each CJK character and
  punctuation mark a token of its own (layers.standardize).
  """
  tokens = tf.strings.split(standardize(text))
  return tf.strings.ngrams(tokens, list(range(1, ngrams + 1)), separator=" ")


@keras.saving.register_keras_serializable(package="tfagent")
class NgramWide(keras.layers.Layer):
  """`<string>[batch]` -> `<float32>[batch, num_classes]` logits of a linear n-gram model.

  Each distinct n-gram of a text that is in the vocabulary adds its row of
  `kernel`; unknown n-grams (id 0) add the zero row 0. The vocabulary is set by
  `set_vocabulary` and saved with the model (a JSON asset in `.keras` files, a
  lookup table in SavedModels); the weights are non-trainable, set from a fit.
  `quantize` (Keras' Model.quantize calls it) stores the kernel as int8 with one
  scale per class: `kernel ~= int8 kernel * kernel_scale`, the scale being the
  class's largest |weight| / 127 (a rounding error of at most scale / 2 a weight),
  and leaves out the n-grams whose int8 row is zeros (`int8_rows`).
  """

  def __init__(self, ngrams=2, num_classes=2, vocabulary_size=0, kernel_dtype="float32",
               **kwargs):
    super().__init__(**kwargs)
    self.ngrams, self.num_classes = ngrams, num_classes
    self.vocabulary_size = vocabulary_size
    self.kernel_dtype = kernel_dtype
    self._vocabulary = []
    self._escape_keys = False  # Whether the table's keys are escaped (vocab_files.table_keys).
    self.table = vocab_files.memory_table([], first_id=1, default=0)

  def set_vocabulary(self, vocabulary) -> None:
    """Sets the n-gram vocabulary: ids 1..V in this order; anything else is 0."""
    if len(vocabulary) != self.vocabulary_size:
      raise ValueError(f"{self.name}: expected {self.vocabulary_size} n-grams, "
                       f"got {len(vocabulary)}.")
    self._vocabulary = list(vocabulary)
    self._escape_keys = not vocab_files.fits_lines(self._vocabulary)
    self.table = vocab_files.memory_table(vocab_files.table_keys(self._vocabulary), 1, 0)

  def vocabulary(self) -> list:
    return list(self._vocabulary)

  def vocabulary_from_file(self, folder: str):
    """A context within which the table reads the vocabulary from a file written to `folder`."""
    return vocab_files.table_from_file(self, folder, vocab_files.table_keys(self._vocabulary))

  def build(self, input_shape):
    # Row 0 is for unknown n-grams and stays zero.
    self.kernel = self.add_weight(name="kernel", shape=(self.vocabulary_size + 1,
                                                        self.num_classes),
                                  initializer="zeros", dtype=self.kernel_dtype, trainable=False)
    self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros",
                                trainable=False)
    if self.kernel_dtype == "int8":
      self.kernel_scale = self.add_weight(name="kernel_scale", shape=(self.num_classes,),
                                          initializer="ones", trainable=False)
    self.built = True

  def quantize(self, mode=None, type_check=True, config=None, min_step=1):
    """Stores the kernel as int8, one scale a class, whatever the mode (int4 too), keeping the
    n-grams with an |int8 weight| >= `min_step` (`int8_rows`): 1 leaves out only rows of
    zeros, which change no answer."""
    del mode, type_check, config  # One scheme: int8 rows are what the gather reads.
    if self.kernel_dtype == "int8":
      return
    quantized, scale, rows = int8_rows(keras.ops.convert_to_numpy(self.kernel), min_step)
    logging.info("%s: %d of %d n-grams have no |int8 weight| >= %d; the int8 layer leaves "
                 "them out.", self.name, len(quantized) - len(rows), self.vocabulary_size,
                 min_step)
    vocabulary = [self._vocabulary[row - 1] for row in rows[1:]]
    del self.kernel  # Keras untracks it; quantize may add weights after build.
    self.kernel_dtype, self.vocabulary_size = "int8", len(vocabulary)
    self.kernel = self.add_weight(name="kernel", shape=(len(rows), self.num_classes),
                                  initializer="zeros", dtype="int8", trainable=False)
    self.kernel.assign(quantized[rows])
    self.kernel_scale = self.add_weight(name="kernel_scale", shape=scale.shape,
                                        initializer="ones", trainable=False)
    self.kernel_scale.assign(scale)
    self.set_vocabulary(vocabulary)

  def kernel_rows(self, ids: tf.Tensor) -> tf.Tensor:
    """`<int64>[n]` ids -> their `<float32>[n, C]` kernel rows, dequantized if int8."""
    rows = tf.gather(tf.convert_to_tensor(self.kernel), ids)
    if self.kernel_dtype != "int8":
      return rows
    return tf.cast(rows, tf.float32) * tf.convert_to_tensor(self.kernel_scale)

  def ngram_ids(self, text: tf.Tensor) -> tf.RaggedTensor:
    """`<string>[batch]` -> `<int64>[batch, (n-grams)]` ids, 0 where unknown."""
    return tf.ragged.map_flat_values(self.lookup, ngram_strings(text, self.ngrams))

  def lookup(self, grams: tf.Tensor) -> tf.Tensor:
    """`<string>[n]` n-grams -> `<int64>[n]` ids, 0 where unknown."""
    if self._escape_keys:
      grams = vocab_files.escape(grams)
    return self.table.lookup(grams)

  def call(self, text):
    ids = self.ngram_ids(tf.reshape(text, [-1]))
    rows = tf.constant(self.vocabulary_size + 1, tf.int64)
    # One key per (text, n-gram) pair; unique keys make the features binary.
    keys, _ = tf.unique(ids.value_rowids() * rows + ids.flat_values)
    weights = self.kernel_rows(keys % rows)
    logits = tf.math.unsorted_segment_sum(weights, keys // rows, ids.nrows())
    return logits + tf.convert_to_tensor(self.bias)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def save_assets(self, dir_path):
    # JSON escapes every character that could break a line-based vocabulary file.
    with tf.io.gfile.GFile(os.path.join(dir_path, "ngrams.json"), "w") as f:
      f.write(json.dumps(self._vocabulary))  # ensure_ascii: ASCII only.

  def load_assets(self, dir_path):
    with tf.io.gfile.GFile(os.path.join(dir_path, "ngrams.json"), "r") as f:
      self.set_vocabulary(json.load(f))

  def get_config(self):
    return {**super().get_config(), "ngrams": self.ngrams, "num_classes": self.num_classes,
            "vocabulary_size": self.vocabulary_size, "kernel_dtype": self.kernel_dtype}


@keras.saving.register_keras_serializable(package="tfagent")
class WideDeep(keras.layers.Layer):
  """`(wide, deep)` logits `<float32>[batch, C]` each -> `wide + deep_weight * deep`.

  `deep_weight` is a non-trainable weight set on validation after training
  (`choose_deep_weight`); 1 until then.
  """

  def build(self, input_shape):
    self.deep_weight = self.add_weight(name="deep_weight", shape=(), initializer="ones",
                                       trainable=False)
    self.built = True

  def call(self, inputs):
    wide, deep = inputs
    return (keras.ops.cast(wide, "float32")
            + keras.ops.cast(self.deep_weight, "float32") * keras.ops.cast(deep, "float32"))

  def compute_output_shape(self, input_shape):
    return input_shape[0]


def int8_rows(kernel: np.ndarray, min_step: int = 1) -> tuple:
  """`(int8 kernel <int8>[V+1, C], scale <float32>[C], kept rows <int64>[K+1])` of a float
  `[V+1, C]` kernel: `kernel ~= int8 kernel * scale`, the scale a class's largest |weight| / 127.

  The kept rows are row 0 (unknown n-grams) and every row with an |int8 weight| >= `min_step`
  (with 2 or more, weak n-grams are pruned: answers change, a little). A row of
  zeros adds exactly 0 to every logit, as an unknown n-gram does, and an n-gram's feature is
  its presence alone (binary, no normalisation over a text), so leaving it out of the
  vocabulary changes no other n-gram's term: the logits stay the same bit for bit
  (tests/test_quantize.py). Only the BERT explain signature, which lists a text's known
  n-grams, no longer lists those of weight 0.
  """
  scale = np.abs(kernel).max(axis=0) / 127.0
  scale[scale == 0] = 1.0  # An all-zero class column stays zero.
  quantized = np.round(kernel / scale).astype(np.int8)
  strongest = np.abs(quantized[1:].astype(np.int16)).max(axis=1, initial=0)
  rows = np.concatenate([[0], 1 + np.flatnonzero(strongest >= min_step)])
  return quantized, scale.astype(np.float32), rows


class WideFit:
  """A fitted wide path: vocabulary, weights and a report of how they were chosen."""

  def __init__(self, ngrams, vocabulary, kernel, bias, report):
    self.ngrams, self.vocabulary = ngrams, vocabulary
    self.kernel, self.bias, self.report = kernel, bias, report

  def layer(self, name: str = "wide") -> NgramWide:
    """An `NgramWide` layer holding this fit."""
    return make_layer(self.ngrams, self.vocabulary, self.kernel, self.bias, name)


def make_layer(ngrams: int, vocabulary: list, kernel: np.ndarray, bias: np.ndarray,
               name: str = "wide") -> NgramWide:
  """A built `NgramWide` with this vocabulary and `<float>[V+1, C]` kernel, `[C]` bias."""
  layer = NgramWide(ngrams, kernel.shape[1], len(vocabulary), name=name)
  layer.build((None,))
  layer.set_vocabulary(vocabulary)
  layer.kernel.assign(kernel)
  layer.bias.assign(bias)
  return layer


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


def fit_linear(x, labels, num_classes: int, c: float, seed: int) -> tuple:
  """`(kernel <float32>[V+1, C], bias <float32>[C])` of NB-scaled logistic regression.

  Two classes: one model, its decision split evenly between the two logits (so
  the softmax is its sigmoid). More: one-vs-rest, a ratio vector and a model per class.
  """
  kernel = np.zeros((x.shape[1], num_classes), np.float32)
  bias = np.zeros(num_classes, np.float32)
  for k in ([1] if num_classes == 2 else range(num_classes)):
    r = nb_ratios(x, labels == k)
    model = LogisticRegression(C=c, solver="liblinear", max_iter=1000, random_state=seed)
    model.fit(x @ sparse.diags(r), labels == k)
    kernel[:, k], bias[k] = r * model.coef_[0], model.intercept_[0]
  if num_classes == 2:
    kernel[:, 1], bias[1] = kernel[:, 1] / 2, bias[1] / 2
    kernel[:, 0], bias[0] = -kernel[:, 1], -bias[1]
  return kernel, bias


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean cross-entropy of `<float>[n, C]` logits against `<int>[n]` labels."""
  logits = logits - logits.max(axis=1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_wide(model_cfg, train: tf.data.Dataset, validation: tf.data.Dataset,
             num_classes: int, seed: int) -> WideFit:
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
    kernel, bias = fit_linear(x, labels, num_classes, c, seed)
    logits = x_val @ kernel + bias
    tried[c] = {"validation_loss": log_loss(logits, labels_val) if len(labels_val) else 0.0,
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


def choose_deep_weight(wide: np.ndarray, deep: np.ndarray, labels: np.ndarray) -> tuple:
  """`(weight, {weight: validation loss})`: the DEEP_WEIGHTS entry of lowest loss.

  Args:
    wide, deep: `<float>[n, C]` logits of the two paths on validation examples.
    labels: `<int>[n]` their labels.
  """
  losses = {float(w): log_loss(wide + w * deep, labels) for w in DEEP_WEIGHTS}
  return min(losses, key=losses.get), losses
