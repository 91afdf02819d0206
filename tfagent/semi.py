"""Learning from unlabelled text (--unlabeled): skip-gram token embeddings for the deep path.

The run reads the unlabelled texts (any --dataset kind, labels ignored; tfagent/data/
unlabeled.py), dropping every one that is also a validation or test text, and logs how
many it dropped. It then
1. trains skip-gram word vectors (gensim's Word2Vec, Mikolov et al. 2013) on the training
   and unlabelled texts, tokenized as the deep path tokenizes them (layers.standardize,
   whitespace);
2. starts the deep path's token embedding from those vectors (rows of tokens without a
   vector keep their random start); training then fine-tunes them with the labels.
The vocabulary stays the training split's unless --unlabeled_vocabulary adds the unlabelled
texts (words only they hold then get an id and a vector): on IMDB's validation the training
split's did better.
What was learned is the embedding's weights, so it lives in the one raw-string
SavedModel like any weight; serving needs no gensim. The variants measured on IMDB, and
why this one, are in bench/results/imdb_semi.md.
"""

import dataclasses
import importlib.util
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfagent import config, progress
from tfagent.data import unlabeled
from tfagent.errors import ConfigError
from tfagent.models.layers import standardize

FLAG = "unlabeled"
TOKENIZE_BATCH = 1024  # Texts standardized a TensorFlow call.
REPORT_SECONDS = 60.0  # Between gensim's progress lines (its default, 1 s, floods the log).
SKIPGRAM = {"sg": 1, "window": 5, "negative": 5, "min_count": 2,
            "sample": 1e-3}  # Mikolov et al.'s skip-gram with negative sampling; gensim's defaults.


@dataclasses.dataclass(frozen=True)
class Unlabeled:
  """The run's unlabelled texts and what the model card says of them."""
  texts: list
  report: dict
  vectors: object  # gensim KeyedVectors: the skip-gram vectors of train + these texts.


def check_config(cfg) -> None:
  """Fails on --unlabeled settings that cannot work, before any data is read."""
  if not cfg.data.unlabeled:
    return
  if cfg.model.name not in config.FROM_SCRATCH:
    raise ConfigError(f"--unlabeled={cfg.data.unlabeled} pretrains the token embedding of a "
                      f"model trained from scratch; --model={cfg.model.name} brings its "
                      "own. Use --model=lstm or transformer, or leave --unlabeled empty.")
  if cfg.model.pretrain_epochs < 1:
    raise ConfigError(f"--pretrain_epochs={cfg.model.pretrain_epochs} is invalid with "
                      f"--unlabeled; expected 1 or more passes of skip-gram training.")
  if importlib.util.find_spec("gensim") is None:
    raise ConfigError(f"--unlabeled={cfg.data.unlabeled} trains word vectors with gensim, "
                      "which is not installed: pip install 'tfagent[semi]'.")


def learn(cfg, splits, held_out=None) -> Unlabeled:
  """The --unlabeled texts (less validation and test texts) and the skip-gram vectors of
  them and the training texts; None without the flag. `held_out`: unlabeled.held_out_once's
  call, shared with --distill_unlabeled (None reads them here)."""
  if not cfg.data.unlabeled:
    return None
  with progress.stage(f"Reading the unlabelled texts (--unlabeled={cfg.data.unlabeled})"):
    texts, report = unlabeled.unlabeled_texts(FLAG, cfg.data.unlabeled, cfg.data,
                                              (held_out or unlabeled.held_out_once(
                                                  splits, cfg.data))())
  logging.info("--unlabeled=%s: %d texts kept, %d dropped as validation or test texts "
               "(never transductive), %d bad records skipped.", cfg.data.unlabeled,
               report["count"], report["dropped_in_validation_or_test"],
               report["bad_records_skipped"])
  with progress.stage("Training skip-gram word vectors on the training and unlabelled texts"):
    train = [t.decode("utf-8") for t, _ in splits["train"].as_numpy_iterator()]
    vectors = train_vectors(cfg.model, train + texts, cfg.data.seed, cfg.data.deterministic)
  return Unlabeled(texts, report, vectors)


def vocabulary_corpus(cfg, train: tf.data.Dataset, extra: Unlabeled) -> tf.data.Dataset:
  """`(text, _)` elements whose texts the vocabulary is learned from: train's, and with
  --unlabeled_vocabulary the unlabelled ones after them."""
  if extra is None or not cfg.model.unlabeled_vocabulary:
    return train
  texts = train.map(lambda text, _: text).concatenate(
      tf.data.Dataset.from_tensor_slices(tf.constant(extra.texts, tf.string)))
  return texts.map(lambda text: (text, 0))


def token_lists(texts) -> list:
  """Each text's tokens as the deep path's tokenizer splits them (before its vocabulary)."""
  out = []
  for start in range(0, len(texts), TOKENIZE_BATCH):
    batch = standardize(tf.constant(texts[start:start + TOKENIZE_BATCH], tf.string))
    out.extend(t.decode("utf-8").split() for t in batch.numpy())
  return out


def train_vectors(model_cfg, texts, seed: int, deterministic: bool):
  """Skip-gram vectors (gensim KeyedVectors) of width --embedding_dim over `texts`.

  One worker thread when the run is deterministic: gensim's threads race otherwise.
  """
  from gensim.models import Word2Vec  # pylint: disable=import-outside-toplevel
  sentences = token_lists(texts)
  start = time.perf_counter()
  w2v = Word2Vec(vector_size=model_cfg.embedding_dim, seed=seed,
                 workers=1 if deterministic else max(1, os.cpu_count() or 1), **SKIPGRAM)
  w2v.build_vocab(sentences)
  w2v.train(sentences, total_examples=w2v.corpus_count, epochs=model_cfg.pretrain_epochs,
            report_delay=REPORT_SECONDS)
  logging.info("Skip-gram vectors: %d words from %d texts (%d tokens), %d passes, %.0f s.",
               len(w2v.wv), len(sentences), w2v.corpus_total_words, model_cfg.pretrain_epochs,
               time.perf_counter() - start)
  return w2v.wv


def token_embeddings(model) -> list:
  """The token-embedding matrices of a TextClassifier: one a member (one without ensemble)."""
  return [getattr(layer, "token_embedding", layer).embeddings  # The Transformer's holds one.
          for member in model.members for layer in member.layers if layer.name == "embedding"]


def init_embeddings(model, extra: Unlabeled) -> None:
  """Sets each vocabulary row that has a skip-gram vector; the report counts them."""
  if extra is None:
    return
  vocabulary, vectors = model.tokenizer.vocabulary(), extra.vectors
  matrices = token_embeddings(model)
  if len(matrices) != len(model.members):
    raise ValueError(f"{model.name}: expected a layer named `embedding` in each member.")
  rows = [i for i, word in enumerate(vocabulary) if word in vectors.key_to_index]
  for matrix in matrices if rows else []:  # No row: gensim cannot index an empty list.
    values = np.array(keras.ops.convert_to_numpy(matrix))
    values[rows] = vectors[[vocabulary[i] for i in rows]]
    matrix.assign(values)
  logging.info("Token embedding: %d of %d vocabulary rows start from skip-gram vectors.",
               len(rows), len(vocabulary))
  extra.report.update(embedding_rows_initialised=len(rows), vocabulary=len(vocabulary))
