"""Transformer encoder trained from scratch: token ids in, logits out."""

import keras
import keras_hub

from tfagent.models.layers import MaskedMeanMaxPooling


def encode(cfg, ids):
  """Token+position embedding, `num_layers` keras-hub encoder blocks, mean+max pooling.

  Args:
    cfg: ModelConfig (vocab_size, sequence_length, embedding_dim, num_layers, num_heads,
      intermediate_dim, dropout).
    ids: `<int>[batch, seq_len <= sequence_length]` token ids, a KerasTensor.

  Returns:
    `<float>[batch, 2 * embedding_dim]`, a KerasTensor (models/pair.py encodes two texts so).
  """
  mask = keras.ops.not_equal(ids, 0)  # <bool>[batch, seq_len]; 0 is padding.
  x = keras_hub.layers.TokenAndPositionEmbedding(
      vocabulary_size=cfg.vocab_size, sequence_length=cfg.sequence_length,
      embedding_dim=cfg.embedding_dim, name="embedding")(ids)
  x = keras.layers.Dropout(cfg.dropout)(x)
  for i in range(cfg.num_layers):
    x = keras_hub.layers.TransformerEncoder(
        intermediate_dim=cfg.intermediate_dim, num_heads=cfg.num_heads,
        dropout=cfg.dropout, name=f"encoder_{i}")(x, padding_mask=mask)
  return MaskedMeanMaxPooling(name="pool")(x, mask=mask)


def build_transformer(cfg, num_classes: int, name: str = "classifier") -> keras.Model:
  """`encode`, dropout, linear head.

  Args:
    cfg: ModelConfig (vocab_size, sequence_length, embedding_dim, num_layers,
      num_heads, intermediate_dim, dropout).
    num_classes: width of the logits.
    name: the model's name (ensemble members are `member_K`).

  Returns:
    keras.Model `<int>[batch, seq_len <= sequence_length] -> <float32>[batch, num_classes]`.
  """
  ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
  x = encode(cfg, ids)  # Built first: the layers take their seeds in creation order.
  x = keras.layers.Dropout(cfg.dropout)(x)
  logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
  return keras.Model(ids, logits, name=name)
