"""The cheap peer: scikit-learn TF-IDF + logistic regression on tfagent's split.

  python -m bench.tfidf_lr --flagfile=configs/lstm.flags --model_dir=runs/tfidf

It takes the same flags as `tfagent.train` (so a model's flagfile fixes the
same data source, seed and split) and writes the same `eval/metrics.json`,
with the training and inference timings that bench/accuracy.py tabulates.
Word 1-2-grams for space-separated text; character 1-3-grams where most
characters are CJK (Chinese has no spaces). Sublinear tf, min_df 2, C 4: the
settings of the issue's reference figure (90.6 % on IMDB).
"""

import os
import pickle
import re
import sys
import time

from absl import app, flags, logging
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from tfagent import data, evaluate, train
from tfagent.errors import TfagentError

FLAGS = flags.FLAGS
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def split_texts(dataset) -> tuple:
  """`(texts: list[str], labels: np.ndarray)` from `(text, label)` elements."""
  texts, labels = [], []
  for text, label in dataset.batch(4096).as_numpy_iterator():
    texts.extend(t.decode("utf-8") for t in text)
    labels.extend(label.tolist())
  return texts, np.asarray(labels)


def is_mostly_cjk(texts, sample: int = 2000) -> bool:
  """True when CJK characters outnumber the other non-space characters."""
  chars = "".join(texts[:sample])
  cjk = len(_CJK.findall(chars))
  return cjk > 0.5 * max(1, len(chars) - chars.count(" "))


def make_vectorizer(texts) -> TfidfVectorizer:
  if is_mostly_cjk(texts):
    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
  return TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                         token_pattern=r"(?u)\b\w[\w']*\b")


def fit(texts, labels) -> tuple:
  """`(vectorizer, classifier)`: the peer fitted on `texts` and their int `labels`."""
  vectorizer = make_vectorizer(texts)
  classifier = LogisticRegression(C=4.0, max_iter=1000)
  classifier.fit(vectorizer.fit_transform(texts), labels)
  return vectorizer, classifier


def predict(vectorizer, classifier, texts, num_classes: int) -> np.ndarray:
  """`<float32>[len(texts), num_classes]` probabilities.

  Label ids absent from train would make predict_proba narrower than
  `num_classes`; their columns stay 0.
  """
  probs = np.zeros((len(texts), num_classes), np.float32)
  probs[:, classifier.classes_] = classifier.predict_proba(vectorizer.transform(texts))
  return probs


def fit_and_evaluate(cfg) -> dict:
  """Fits on train, evaluates on test; writes `MODEL_DIR/eval/metrics.json`."""
  train.prepare_run_dir(cfg.train.model_dir, cfg)
  splits, info = data.load_splits(cfg.data)
  train_texts, train_labels = split_texts(splits["train"])
  start = time.perf_counter()
  vectorizer, classifier = fit(train_texts, train_labels)
  train_seconds = time.perf_counter() - start
  logging.info("TF-IDF (%s, %d features) + LR fitted on %d texts in %.1f s.",
               vectorizer.analyzer, len(vectorizer.vocabulary_), len(train_texts), train_seconds)

  def predict_fn(text):
    return predict(vectorizer, classifier, [t.decode("utf-8") for t in text.numpy()],
                   len(info.class_names))

  model_path = os.path.join(cfg.train.model_dir, "tfidf_lr.pkl")
  with open(model_path, "wb") as f:
    pickle.dump((vectorizer, classifier), f)
  return evaluate.evaluate(
      predict_fn, splits["test"], info.class_names, os.path.join(cfg.train.model_dir, "eval"),
      extra=dict(saved_model=model_path, train_seconds=train_seconds, epochs_run=1,
                 train_examples=len(train_texts),
                 train_examples_per_second=len(train_texts) / max(train_seconds, 1e-9)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    result = fit_and_evaluate(train.config_from_flags())
  except TfagentError as e:
    logging.error("%s", e)
    sys.exit(1)
  logging.info("Done: test accuracy %.4f", result["accuracy"])


if __name__ == "__main__":
  train.define_flags()
  app.run(main)
