"""Test accuracy of every model on the embedded split, beside a TF-IDF + logistic regression peer.

  python bench/embedded_models.py --runs=runs/lstm,runs/transformer,runs/bert_quickstart \
      [--out=bench/results/embedded_models.json]

Each run directory is one `python -m tfagent.train --flagfile=configs/X.flags`
on the default (embedded, deduplicated, hash-split) corpus; its
`eval/metrics.json` holds the SavedModel's test figures. The peer is fitted
here on the same train split and scored on the same test split (character 1-2
grams, since Chinese has no spaces).
"""

import json
import os
import sys

from absl import app, flags, logging
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfagent import config, data  # noqa: E402

FLAGS = flags.FLAGS


def texts_and_labels(ds) -> tuple:
  pairs = [(t.decode("utf-8"), int(l)) for t, l in ds.as_numpy_iterator()]
  return [t for t, _ in pairs], np.array([l for _, l in pairs])


def tfidf_accuracy(splits) -> float:
  """Fits TF-IDF (char 1-2 grams) + logistic regression on train; accuracy on test."""
  train_x, train_y = texts_and_labels(splits["train"])
  test_x, test_y = texts_and_labels(splits["test"])
  vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 2), sublinear_tf=True,
                               min_df=2)
  classifier = LogisticRegression(C=4.0, max_iter=2000)
  classifier.fit(vectorizer.fit_transform(train_x), train_y)
  return float((classifier.predict(vectorizer.transform(test_x)) == test_y).mean())


def run_figures(run_dir: str) -> dict:
  """Test accuracy, examples and settings of one tfagent.train run."""
  metrics = json.load(open(os.path.join(run_dir, "eval", "metrics.json")))
  cfg = config.load_json(os.path.join(run_dir, "config.json"))
  return {"model": cfg.model.name, "run": run_dir, "test_accuracy": metrics["accuracy"],
          "test_examples": metrics["examples"], "macro_f1": metrics["macro_f1"],
          "max_train_examples": cfg.data.max_train_examples, "epochs": cfg.train.epochs,
          "timing": metrics.get("timing")}


def main(argv):
  del argv
  rows = [run_figures(r) for r in FLAGS.runs if os.path.isdir(r)]
  # All of train, and the same seeded 4,000-text sample bert_quickstart trains on.
  for cap in (0, 4000):
    splits, _ = data.load_splits(config.DataConfig(max_train_examples=cap))
    rows.append({"model": "tfidf_logreg", "max_train_examples": cap,
                 "test_accuracy": tfidf_accuracy(splits)})
  for row in rows:
    logging.info("%-14s train cap %5d: test accuracy %.4f", row["model"],
                 row["max_train_examples"], row["test_accuracy"])
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(rows, f, indent=2)


if __name__ == "__main__":
  flags.DEFINE_list("runs", ["runs/lstm", "runs/transformer", "runs/bert_quickstart"],
                    "Run directories of tfagent.train on the embedded corpus.")
  flags.DEFINE_string("out", "bench/results/embedded_models.json", "Results JSON.")
  app.run(main)
