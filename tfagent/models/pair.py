"""Sentence-pair classifiers (--text_pair_field): a model reads two texts and compares them.

LSTM and Transformer: one encoder (`lstm.encode`, `transformer.encode`; its weights shared)
turns each text into a vector, u and v, and the head reads [u, v, |u - v|, u * v]. This is
InferSent's combination (Conneau et al. 2017), which Sentence-BERT's classification
objective also builds on: the difference and the product show what the texts share and
where they differ, which neither vector alone does, so a linear head can read a relation
(same word, same meaning) off them. One shared encoder: a word means the same on either
side, and there are half the weights to learn.

BERT (models/bert.py) instead reads both texts as one `[CLS] a [SEP] b [SEP]` input with
segment ids, so its attention compares them token by token.
"""

import keras

from tfagent.models import lstm, transformer

ENCODERS = {"lstm": lstm.encode, "transformer": transformer.encode}
ENCODER = "encoder"


def build_pair_classifier(cfg, num_classes: int) -> keras.Model:
  """The `cfg.name` encoder applied to both texts, [u, v, |u - v|, u * v], dropout, linear head.

  Args:
    cfg: ModelConfig; `cfg.name` is lstm or transformer.
    num_classes: width of the logits.

  Returns:
    keras.Model `[<int>[batch, len_a], <int>[batch, len_b]] -> <float32>[batch, num_classes]`,
    named `classifier`; its shared encoder is the layer `encoder`.
  """
  one = keras.Input(shape=(None,), dtype="int64", name="token_ids")
  encoder = keras.Model(one, ENCODERS[cfg.name](cfg, one), name=ENCODER)
  texts = [keras.Input(shape=(None,), dtype="int64", name=f"token_ids_{k}") for k in ("a", "b")]
  u, v = encoder(texts[0]), encoder(texts[1])
  x = keras.layers.Concatenate(name="compare")(
      [u, v, keras.ops.abs(keras.ops.subtract(u, v)), keras.ops.multiply(u, v)])
  x = keras.layers.Dropout(cfg.dropout)(x)
  # float32 logits keep the softmax and loss stable under mixed precision.
  logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
  return keras.Model(texts, logits, name="classifier")
