"""bench/label_audit.py: error counts, the shared-error listing and the peer it fits."""

import os
import sys

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import label_audit  # noqa: E402

CLASSES = ["negative", "positive"]


def test_audit_counts_each_models_errors_and_lists_shared_ones_surest_first():
  labels = np.array([0, 0, 1, 1, 1])
  model = np.array([[.9, .1], [.4, .6], [.2, .8], [.7, .3], [.95, .05]])  # Wrong on 1, 3, 4.
  peer = np.array([[.8, .2], [.3, .7], [.6, .4], [.9, .1], [.6, .4]])  # Wrong on 1, 2, 3, 4.
  texts = ["a", "b", "c", "d", "e"]

  report = label_audit.audit(model, peer, texts, labels, CLASSES, top=2)

  assert (report["model_errors"], report["peer_errors"], report["shared_errors"]) == (3, 4, 3)
  assert np.isclose(report["model_accuracy"], 0.4) and np.isclose(report["peer_accuracy"], 0.2)
  assert report["shared_errors_model_confidence_at_least_0.9"] == 1
  # Surest first (0.95, then 0.7), cut at `top`; the 0.6 one is left off.
  assert [row["text"] for row in report["listed"]] == ["e", "d"]
  assert report["listed"][0] == {"text": "e", "label": "positive", "model_says": "negative",
                                 "model_probability": 0.95, "peer_probability": 0.6}


def test_peer_is_fitted_on_train_and_scores_the_audited_texts():
  good = ["很好用", "非常好", "好评推荐", "很满意", "好极了", "值得推荐"]
  bad = ["很差劲", "非常差", "差评失望", "不满意", "差极了", "太失望"]
  train = tf.data.Dataset.from_tensor_slices(
      (good + bad, np.array([1] * len(good) + [0] * len(bad), np.int32)))

  probs = label_audit.peer_probabilities(train, ["非常好用推荐", "差劲失望"], 2)

  # The reference: the documented peer (char 1-3-gram TF-IDF on CJK, LR with C=4), by hand.
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression
  vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
  classifier = LogisticRegression(C=4.0, max_iter=1000).fit(
      vectorizer.fit_transform(good + bad), [1] * len(good) + [0] * len(bad))
  expected = classifier.predict_proba(vectorizer.transform(["非常好用推荐", "差劲失望"]))
  np.testing.assert_allclose(probs, expected, atol=1e-6)
  assert probs.argmax(-1).tolist() == [1, 0]
