"""Model registry: every model takes raw strings and returns logits."""

import dataclasses

import keras
import tensorflow as tf

from tfagent.errors import ConfigError
from tfagent.models import bert, ensemble, pair
from tfagent.models.bert import BACKBONE, build_bert
from tfagent.models.classifier import TOKENIZER, WIDE, TextClassifier, adopt  # noqa: F401
from tfagent.models.layers import TextTokenizer
from tfagent.models.lstm import build_lstm
from tfagent.models.transformer import build_transformer
from tfagent.models.wide_fit import WideFit
from tfagent import signatures

BUILDERS = {"lstm": build_lstm, "transformer": build_transformer, "bert": build_bert}
PRETRAINED = {"bert"}  # Bring their own tokenizer; no vocabulary is learned.


def check_model_name(name: str) -> None:
  if name not in BUILDERS:
    raise ConfigError(f"--model={name!r} is unknown; valid models: "
                      f"{', '.join(sorted(BUILDERS))}.")


def check_model_config(cfg) -> None:
  """Fails fast, before any data is read, on a bad model name, preset or truncation."""
  check_model_name(cfg.name)
  ensemble.check_size(cfg.ensemble_size, cfg.name, cfg.name in PRETRAINED)
  if cfg.name == "bert":
    bert.check_truncation(cfg.truncation)
    bert.resolve_preset(cfg.preset)


def find_backbone(classifier: keras.Model):
  """The pretrained encoder inside `classifier`, or None for models trained from scratch."""
  return next((l for l in classifier.layers if l.name == BACKBONE), None)


def build_tokenizer(cfg, vocab_corpus: tf.data.Dataset) -> TextTokenizer:
  """Builds the tokenizer layer and learns its vocabulary from `<string>[batch]`."""
  tokenizer = TextTokenizer(cfg.vocab_size, cfg.sequence_length, cfg.ngrams,
                            name=TOKENIZER)
  tokenizer.adapt(vocab_corpus)
  return tokenizer


def build_model(cfg, class_names, vocab_corpus: tf.data.Dataset,
                wide_fit: WideFit = None, pairs: bool = False) -> TextClassifier:
  """Builds the model object, `<string>[batch] -> <float32>[batch, len(class_names)]` logits.

  Its parts (models/classifier.py): `tokenizer` (strings to ids, run in tf.data during
  training), `classifier` (ids to logits, the trained part; with `cfg.ensemble_size` > 1,
  one id batch per member in, all members' logits `[batch, size, C]` out, averaged in
  probability by the whole model, models/ensemble.py) and, with `cfg.wide_ngrams` > 0,
  `wide` (`wide_fit`, an n-gram linear model fitted beforehand) whose logits `wide_deep`
  adds to the deep path's.

  Args:
    cfg: ModelConfig; `cfg.name` picks the architecture.
    class_names: names of the classes, in label order.
    vocab_corpus: training texts, `<string>[batch]`, for the vocabulary
      (unused by pretrained models, whose vocabulary comes with the preset).
    wide_fit: the fitted wide path (wide_fit.fit_wide), needed when `cfg.wide_ngrams` > 0.
    pairs: sentence pairs (--text_pair_field): the input is the dict `{text, text_pair}`
      of `<string>[batch]` and the classifier compares the two (models/pair.py).
  """
  check_model_name(cfg.name)
  if cfg.wide_ngrams and wide_fit is None:
    raise ValueError("--wide_ngrams is set: build_model needs the fitted wide path.")
  if cfg.name in PRETRAINED:
    tokenizer, classifier = BUILDERS[cfg.name](cfg, len(class_names), TOKENIZER, pairs)
  else:
    tokenizer = build_tokenizer(cfg, vocab_corpus)
    # The embedding needs rows only for tokens the vocabulary really has.
    learned = dataclasses.replace(cfg, vocab_size=len(tokenizer.vocabulary()))
    if cfg.ensemble_size > 1:
      classifier = ensemble.build_ensemble(BUILDERS[cfg.name], learned, len(class_names),
                                           cfg.ensemble_size)
    elif pairs:
      classifier = pair.build_pair_classifier(learned, len(class_names))
    else:
      classifier = BUILDERS[cfg.name](learned, len(class_names))
  return TextClassifier(tokenizer, classifier, wide_fit.layer(WIDE) if cfg.wide_ngrams else None,
                        cfg.ensemble_size, pairs, name=cfg.name)


def traced(model: keras.Model):
  """`<string>[batch]` -> `model`'s outputs in inference mode, as one traced function.

  Scoring a split through eager calls runs a recurrent layer's loop op by op
  (minutes a split for the quickstart's BiLSTMs); the trace runs it as a graph.
  """
  return tf.function(lambda text: model(text, training=False),
                     input_signature=[signatures.input_spec(model)])
