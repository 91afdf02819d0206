"""The model object: raw strings in, logits out, with its parts as typed attributes.

`TextClassifier` is a Functional Keras model, in the manner of keras-hub's `Task`: the
tokenizer (strings to ids, also run in tf.data during training), the classifier (ids to
logits, the trained part; with an ensemble, all members' logits `[batch, size, C]`),
and, with a wide path, the fitted n-gram linear layer and the `WideDeep` layer that holds
the deep weight chosen on validation. Every stage (training, scoring, explain, quantize,
export) reads these attributes instead of looking layers up by name.

The parts keep the names they have always had (`tokenizer`, `classifier`, `wide`,
`wide_deep`, `average`), so weights and checkpoints keep their paths: Keras saves a
Functional model's `layers` before any attribute.
"""

import keras

from tfagent.models import ensemble, wide as wide_lib
from tfagent.signatures import TEXT, TEXT_PAIR

TOKENIZER = "tokenizer"
CLASSIFIER = "classifier"
WIDE = "wide"
WIDE_DEEP = "wide_deep"
AVERAGE = "average"


@keras.saving.register_keras_serializable(package="tfagent")
class TextClassifier(keras.Model):
  """`<string>[batch]` -> `<float32>[batch, C]` logits.

  Args:
    tokenizer: a layer `<string>[batch]` -> ids (TextTokenizer, or BERT's WordPieceEncoder).
    classifier: a model ids -> logits `[batch, C]`; with `ensemble_size` > 1 it takes one id
      batch per member and returns `[batch, size, C]`, averaged here in probability.
    wide: a fitted `NgramWide` layer named `wide`, or None for the deep path alone.
    ensemble_size: how many members `classifier` holds.
    pairs: sentence pairs (--text_pair_field): the input is the dict `{text, text_pair}` of
      two `<string>[batch]`, which the tokenizer turns into the classifier's two id inputs.
  """

  def __init__(self, tokenizer, classifier, wide=None, ensemble_size=1, pairs=False, **kwargs):
    text = string_inputs(pairs)
    ids = tokenizer(text)
    average = None
    if ensemble_size == 1:
      logits = classifier(ids)
    else:
      average = ensemble.MemberAverage(name=AVERAGE)
      logits = average(classifier([ids] * ensemble_size))
    wide_deep = None
    if wide is not None:
      wide_deep = wide_lib.WideDeep(name=WIDE_DEEP)
      logits = wide_deep([wide(text), logits])
    super().__init__(text, logits, **kwargs)
    self.tokenizer, self.classifier, self.wide = tokenizer, classifier, wide
    self.average, self.wide_deep, self.ensemble_size = average, wide_deep, ensemble_size
    self.pairs = pairs

  @property
  def members(self) -> list:
    """The classifier's member models: itself alone, or each member of an ensemble."""
    if self.average is None:
      return [self.classifier]
    return [l for l in self.classifier.layers if isinstance(l, keras.Model)]

  @property
  def deep_weight(self) -> float:
    """The deep path's weight in `wide + deep_weight * deep` (1 without a wide path)."""
    return 1.0 if self.wide_deep is None else float(self.wide_deep.deep_weight.numpy())

  def set_deep_weight(self, weight: float) -> None:
    """Sets the deep path's weight; the model must have a wide path."""
    if self.wide_deep is None:
      raise ValueError(f"{self.name} has no wide path, so no deep weight to set.")
    self.wide_deep.deep_weight.assign(weight)

  def path_logits(self) -> keras.Model:
    """`<string>[batch]` -> `[wide, deep]` logits `<float32>[batch, C]` (wide path needed)."""
    if self.wide_deep is None:
      raise ValueError(f"{self.name} has no wide path, so no path logits.")
    return keras.Model(self.input, self.wide_deep.input)

  def get_config(self):
    return {"name": self.name, "trainable": self.trainable,
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "wide": (None if self.wide is None
                     else keras.saving.serialize_keras_object(self.wide)),
            "ensemble_size": self.ensemble_size, "pairs": self.pairs}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    for part in ("tokenizer", "classifier", "wide"):
      if config.get(part) is not None:
        config[part] = keras.saving.deserialize_keras_object(config[part],
                                                             custom_objects=custom_objects)
    return cls(**config)


def string_inputs(pairs: bool):
  """The model's input: `text` `<string>[batch]`, or a sentence pair's dict of two."""
  if pairs:
    return {name: keras.Input(shape=(), dtype="string", name=name) for name in (TEXT, TEXT_PAIR)}
  return keras.Input(shape=(), dtype="string", name=TEXT)


def adopt(model: keras.Model) -> TextClassifier:
  """`model` as a TextClassifier: itself, or, for a plain Functional model saved before the
  model object existed (its parts named as above), a TextClassifier over the same layers."""
  if isinstance(model, TextClassifier):
    return model
  names = {layer.name: layer for layer in model.layers}
  if TOKENIZER not in names or CLASSIFIER not in names:
    raise ValueError(f"{model.name}: not a tfagent model (no '{TOKENIZER}' and "
                     f"'{CLASSIFIER}' layers).")
  size = len(names[CLASSIFIER].inputs) if AVERAGE in names else 1
  adopted = TextClassifier(names[TOKENIZER], names[CLASSIFIER], names.get(WIDE), size,
                           name=model.name)
  if WIDE_DEEP in names:
    adopted.set_deep_weight(names[WIDE_DEEP].deep_weight.numpy())
  return adopted
