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
deep path trains (models/wide_fit.py). `WideDeep` adds the two paths' logits, the
deep one scaled by a weight chosen on the validation split after training.
"""

import json
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfagent.models import vocab_files
from tfagent.models.layers import standardize


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


def make_layer(ngrams: int, vocabulary: list, kernel: np.ndarray, bias: np.ndarray,
               name: str = "wide") -> NgramWide:
  """A built `NgramWide` with this vocabulary and `<float>[V+1, C]` kernel, `[C]` bias."""
  layer = NgramWide(ngrams, kernel.shape[1], len(vocabulary), name=name)
  layer.build((None,))
  layer.set_vocabulary(vocabulary)
  layer.kernel.assign(kernel)
  layer.bias.assign(bias)
  return layer
