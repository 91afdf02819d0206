"""The strongest cheap peer: NB-weighted logistic regression (NBSVM) on tfagent's split.

  python -m bench.nblr --flagfile=configs/imdb_lstm.flags --model_dir=runs/nblr [--folds=5]

Wang & Manning (2012), "Baselines and Bigrams": binary n-gram features scaled
by the naive-Bayes log-count ratio r = log(p/|p|) - log(q/|q|), here with
logistic regression (liblinear) in place of the SVM; one ratio vector and one
model per class (one-vs-rest) beyond two classes. Tokens are tfagent's (words,
each CJK character and punctuation mark a token). The n-gram range, the minimum
document count and C are chosen on the validation split, never on test.
"""

import itertools

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from bench import peers

NGRAM_RANGES = ((1, 2), (1, 3))
MIN_DFS = (1, 2)
CS = (0.03, 0.1, 0.3, 1.0)


class NBLogisticRegression:
  """Binary n-grams, NB-scaled, then one logistic regression per class (two: one)."""

  def __init__(self, vectorizer: CountVectorizer, c: float):
    self.vectorizer, self.c = vectorizer, c
    self.ratios, self.models, self.num_classes = [], [], 0

  def fit(self, x, labels, num_classes: int) -> "NBLogisticRegression":
    """Fits on binary features `x` (from `self.vectorizer`) and int `labels`."""
    self.num_classes = num_classes
    for k in ([1] if num_classes == 2 else range(num_classes)):
      p = np.asarray(x[labels == k].sum(axis=0)).ravel() + 1.0
      q = np.asarray(x[labels != k].sum(axis=0)).ravel() + 1.0
      r = np.log(p / p.sum()) - np.log(q / q.sum())
      model = LogisticRegression(C=self.c, solver="liblinear", max_iter=1000, random_state=0)
      self.ratios.append(r)
      self.models.append(model.fit(x @ sparse.diags(r), labels == k))
    return self

  def decision(self, x) -> np.ndarray:
    """`<float>[n, models]` decision values."""
    return np.stack([m.decision_function(x @ sparse.diags(r))
                     for r, m in zip(self.ratios, self.models)], axis=1)

  def predict_features(self, x) -> np.ndarray:
    """`<float32>[n, C]` probabilities: a sigmoid for two classes, else a softmax of OvR."""
    d = self.decision(x)
    if self.num_classes == 2:
      p = 1 / (1 + np.exp(-d[:, 0]))
      return np.stack([1 - p, p], axis=1).astype(np.float32)
    e = np.exp(d - d.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

  def __call__(self, texts) -> np.ndarray:
    return self.predict_features(self.vectorizer.transform(texts))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
  return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)).mean())


def fit_peer(train, validation, num_classes: int) -> tuple:
  """`(predict, report)`: the grid's setting of lowest validation loss, refitted as is."""
  (texts, labels), (val_texts, val_labels) = train, validation
  tried, best = {}, None
  for ngrams, min_df in itertools.product(NGRAM_RANGES, MIN_DFS):
    vectorizer = CountVectorizer(tokenizer=peers.tokens, lowercase=False, ngram_range=ngrams,
                                 min_df=min_df, binary=True, token_pattern=None)
    x, x_val = vectorizer.fit_transform(texts), None
    x_val = vectorizer.transform(val_texts)
    for c in CS:
      model = NBLogisticRegression(vectorizer, c).fit(x, labels, num_classes)
      probs = model.predict_features(x_val)
      key = f"ngrams {ngrams[0]}-{ngrams[1]}, min_df {min_df}, C {c}"
      tried[key] = {"validation_accuracy": float((probs.argmax(1) == val_labels).mean()),
                    "validation_loss": log_loss(probs, val_labels),
                    "features": len(vectorizer.vocabulary_)}
      if best is None or tried[key]["validation_loss"] < tried[best[0]]["validation_loss"]:
        best = (key, model)
  return best[1], {"chosen": best[0], "tried": tried}


if __name__ == "__main__":
  peers.main(fit_peer, "nblr")
