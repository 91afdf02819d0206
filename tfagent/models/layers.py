"""Layers shared by the from-scratch models; each has get_config so models reload."""

import keras
import tensorflow as tf

from tfagent.models import vocab_files
from tfagent.signatures import TEXT, TEXT_PAIR

# One token per CJK character (Chinese has no spaces between words) and per
# punctuation mark or symbol; Latin-script words stay whole.
_SPLIT_OFF = r"(\p{Han}|\p{Hiragana}|\p{Katakana}|\p{Hangul}|\pP|\pS)"


@keras.saving.register_keras_serializable(package="tfagent")
def standardize(text: tf.Tensor) -> tf.Tensor:
  """Lower-cases and puts spaces around CJK characters and punctuation."""
  text = tf.strings.lower(text, encoding="utf-8")
  text = tf.strings.regex_replace(text, "<br */?>", " ")  # HTML line breaks (IMDB).
  return tf.strings.regex_replace(text, _SPLIT_OFF, r" \1 ")


@keras.saving.register_keras_serializable(package="tfagent")
class TextTokenizer(keras.layers.Layer):
  """Maps `<string>[batch]` to `<int64>[batch, <=sequence_length]` token ids.

  Words for space-separated scripts, characters for CJK (then, with
  `ngrams=2`, their bigrams); id 0 is padding and
  id 1 the out-of-vocabulary token. The vocabulary is learned with `adapt` on
  the training split only. Batches are padded to their longest text (at least
  one token). A sentence pair's features dict `{text, text_pair}` gives each text's ids,
  `(ids_a, ids_b)`, from the one vocabulary.
  """

  def __init__(self, vocab_size=20_000, sequence_length=256, ngrams=1, vocabulary=None,
               **kwargs):
    kwargs.pop("pad_to_max", None)  # Configs saved before it was removed still carry it.
    super().__init__(**kwargs)
    self.vocab_size = vocab_size
    self.sequence_length = sequence_length
    self.ngrams = ngrams
    # ngrams=2 appends the token bigrams after the unigrams: for Chinese these
    # are character bigrams, which carry most of a word's meaning.
    # Ragged, so that a batch is truncated before it is padded: one 5 MB text must
    # not widen all its batch-mates to its million tokens (~350 MB for a batch of 40).
    self.vectorize = keras.layers.TextVectorization(
        max_tokens=vocab_size, standardize=standardize, split="whitespace",
        ngrams=ngrams if ngrams > 1 else None, output_mode="int", ragged=True,
        vocabulary=vocabulary, name="vectorize")

  def build(self, input_shape):
    self.built = True  # The vocabulary comes from adapt() or the config.

  def adapt(self, texts: tf.data.Dataset) -> None:
    """Learns the vocabulary from a dataset of `<string>[batch]`."""
    self.vectorize.adapt(texts)

  def vocabulary(self) -> list:
    return self.vectorize.get_vocabulary()

  def vocabulary_from_file(self, folder: str):
    """A context within which the vocabulary is read from a file written to `folder`."""
    return vocab_files.keras_lookup_from_file(self.vectorize, folder, self.name)

  def call(self, text):
    if isinstance(text, dict):  # A sentence pair.
      return self.call(text[TEXT]), self.call(text[TEXT_PAIR])
    ids = self.vectorize(text)[:, :self.sequence_length].to_tensor()
    return tf.pad(ids, [[0, 0], [0, tf.maximum(tf.shape(ids)[1], 1) - tf.shape(ids)[1]]])

  def compute_output_shape(self, input_shape):
    return pair_shapes(input_shape) if isinstance(input_shape, dict) else (input_shape[0], None)

  def get_config(self):
    config = super().get_config()
    config.update(vocab_size=self.vocab_size, sequence_length=self.sequence_length,
                  ngrams=self.ngrams, vocabulary=self.vocabulary())
    return config


def pair_shapes(input_shape: dict) -> tuple:
  """The output shapes of a tokenizer given a sentence pair's dict: two `[batch, None]`."""
  return ((input_shape[TEXT][0], None),) * 2


@keras.saving.register_keras_serializable(package="tfagent")
class AtLeastOneStep(keras.layers.Layer):
  """Pads `<int>[batch, len]` ids with padding (id 0) to at least one time step.

  tf.distribute hands a replica with no examples left (the end of an evaluation
  pass whose batches do not fill every replica) a dummy batch shaped `[0, 0]`;
  a recurrent layer's loop over zero steps then fails ("Tried to stack elements
  of an empty list"). Ids of real batches are at least 1 wide already: no-op.
  """

  def call(self, ids):
    return tf.pad(ids, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(ids)[1])]])

  def compute_output_shape(self, input_shape):
    return input_shape


@keras.saving.register_keras_serializable(package="tfagent")
class MaskedMeanMaxPooling(keras.layers.Layer):
  """Concatenates mean and max over the unpadded time steps.

  `<float>[batch, time, dim]` and mask `<bool>[batch, time]` to
  `<float>[batch, 2 * dim]`. A row with no tokens pools to zeros.
  """

  def call(self, x, mask=None):
    if mask is None:
      mask = keras.ops.ones(keras.ops.shape(x)[:2], dtype="bool")
    m = keras.ops.cast(mask, x.dtype)[:, :, None]
    count = keras.ops.maximum(keras.ops.sum(m, axis=1), 1.0)
    mean = keras.ops.sum(x * m, axis=1) / count
    very_negative = keras.ops.cast(-1e4, x.dtype)
    maxed = keras.ops.max(keras.ops.where(m > 0, x, very_negative), axis=1)
    maxed = keras.ops.where(keras.ops.sum(m, axis=1) > 0, maxed, 0.0)
    return keras.ops.concatenate([mean, maxed], axis=-1)

  def compute_mask(self, inputs, mask=None):
    return None

  def compute_output_shape(self, input_shape):
    return (input_shape[0], 2 * input_shape[-1])

