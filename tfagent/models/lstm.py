"""Bidirectional LSTM baseline: token ids in, logits out."""

import keras

from tfagent.models.layers import AtLeastOneStep, MaskedMeanMaxPooling


def encode(cfg, inputs):
  """Embedding, dropout, BiLSTM, mean+max pooling over time.

  Args:
    cfg: ModelConfig (vocab_size, embedding_dim, hidden_dim, dropout).
    inputs: `<int>[batch, seq_len]` token ids, a KerasTensor.

  Returns:
    `<float>[batch, 4 * hidden_dim]`, a KerasTensor (models/pair.py encodes two texts so).
  """
  ids = AtLeastOneStep(name="at_least_one_step")(inputs)  # tf.distribute's empty batches.
  mask = keras.ops.not_equal(ids, 0)  # <bool>[batch, seq_len]; 0 is padding.
  x = keras.layers.Embedding(cfg.vocab_size, cfg.embedding_dim, name="embedding")(ids)
  x = keras.layers.SpatialDropout1D(cfg.dropout)(x)  # Drops whole embedding channels.
  x = keras.layers.Bidirectional(
      keras.layers.LSTM(cfg.hidden_dim, return_sequences=True), name="bilstm")(x, mask=mask)
  return MaskedMeanMaxPooling(name="pool")(x, mask=mask)


def build_lstm(cfg, num_classes: int, name: str = "classifier") -> keras.Model:
  """`encode`, dropout, linear head.

  Args:
    cfg: ModelConfig (vocab_size, embedding_dim, hidden_dim, dropout).
    num_classes: width of the logits.
    name: the model's name (ensemble members are `member_K`).

  Returns:
    keras.Model `<int>[batch, seq_len] -> <float32>[batch, num_classes]`.
  """
  inputs = keras.Input(shape=(None,), dtype="int64", name="token_ids")
  x = encode(cfg, inputs)  # Built first: the layers take their seeds in creation order.
  x = keras.layers.Dropout(cfg.dropout)(x)
  # float32 logits keep the softmax and loss stable under mixed precision.
  logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
  return keras.Model(inputs, logits, name=name)
