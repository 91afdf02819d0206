"""The cheap peer: scikit-learn TF-IDF + logistic regression on tfagent's split.

  python -m bench.tfidf_lr --flagfile=configs/lstm.flags --model_dir=runs/tfidf [--folds=5]

Word 1-2-grams for space-separated text; character 1-3-grams where most
characters are CJK (Chinese has no spaces). Sublinear tf, min_df 2, C 4: the
settings of the reference figure (90.6 % on IMDB). See bench/peers.py for the
flags and outputs it shares with the other peer.
"""

import functools

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bench import peers


def make_vectorizer(texts) -> TfidfVectorizer:
  if peers.is_mostly_cjk(texts):
    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
  return TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                         token_pattern=r"(?u)\b\w[\w']*\b")


def fit(texts, labels) -> tuple:
  """`(vectorizer, classifier)`: the peer fitted on `texts` and their int `labels`."""
  vectorizer = make_vectorizer(texts)
  classifier = LogisticRegression(C=4.0, max_iter=1000)
  classifier.fit(vectorizer.fit_transform(texts), labels)
  return vectorizer, classifier


def predict(vectorizer, classifier, texts, num_classes: int):
  """`<float32>[len(texts), num_classes]` probabilities."""
  return peers.probabilities(classifier, vectorizer.transform(texts), num_classes)


def fit_peer(train, validation, num_classes: int) -> tuple:
  """`(predict, report)` for peers.fit_and_evaluate; validation is not used."""
  del validation  # Fixed settings: nothing is chosen.
  vectorizer, classifier = fit(*train)
  report = {"analyzer": vectorizer.analyzer, "features": len(vectorizer.vocabulary_)}
  return functools.partial(predict, vectorizer, classifier, num_classes=num_classes), report


if __name__ == "__main__":
  peers.main(fit_peer, "tfidf_lr")
