"""Where an exported model and the TF-IDF peer both go wrong, most confident first.

  python -m bench.label_audit --flagfile=configs/lstm.flags \
      --saved_model=saved_models/quickstart --output=bench/results/label_audit.json

Takes `tfagent.train`'s flags (so a flagfile fixes the same source, seed and
split), scores `--split` (validation by default: the test split stays unread)
with the SavedModel and with the peer of bench/tfidf_lr.py fitted on train, and
writes both models' error counts, their shared errors and the `--top` shared
errors on which the model was surest, with their texts, for a person to read.
When two different models are confidently wrong on the same text, the label is
the first thing to check: the embedded corpus labels every sentence with its
whole review's polarity (bench/results/label_audit.md).
"""

import json
import os
import sys

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

from bench import peers, tfidf_lr
from tfagent import data, evaluate, train
from tfagent.errors import TfagentError
from tfagent.versions import resolve_saved_model

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("saved_model", None, "SavedModel version dir, or saved_models/NAME (latest).")
  flags.DEFINE_enum("split", "validation", ["train", "validation", "test"], "Split to audit.")
  flags.DEFINE_integer("top", 40, "Shared errors listed, the model's most confident first.")
  flags.DEFINE_string("output", "label_audit.json", "JSON report path.")
  flags.mark_flag_as_required("saved_model")


def peer_probabilities(train_split, audited_texts, num_classes: int) -> np.ndarray:
  """The TF-IDF + logistic-regression peer, fitted on train, on `audited_texts`."""
  vectorizer, classifier = tfidf_lr.fit(*peers.split_texts(train_split))
  return tfidf_lr.predict(vectorizer, classifier, audited_texts, num_classes)


def audit(model_probs, peer_probs, texts, labels, class_names, top: int) -> dict:
  """Error counts of both models and their `top` shared errors, surest first."""
  model_wrong = model_probs.argmax(-1) != labels
  peer_wrong = peer_probs.argmax(-1) != labels
  shared = np.flatnonzero(model_wrong & peer_wrong)
  shared = shared[np.argsort(-model_probs[shared].max(-1), kind="stable")]
  n = len(labels)
  return {
      "examples": n,
      "model_errors": int(model_wrong.sum()), "model_accuracy": float(1 - model_wrong.mean()),
      "peer_errors": int(peer_wrong.sum()), "peer_accuracy": float(1 - peer_wrong.mean()),
      "shared_errors": len(shared),
      "shared_errors_model_confidence_at_least_0.9": int(
          (model_probs[shared].max(-1) >= 0.9).sum()),
      "listed": [{"text": texts[i], "label": class_names[labels[i]],
                  "model_says": class_names[int(model_probs[i].argmax())],
                  "model_probability": round(float(model_probs[i].max()), 4),
                  "peer_probability": round(float(peer_probs[i].max()), 4)}
                 for i in shared[:top]],
  }


def run(cfg) -> dict:
  splits, info = data.load_splits(cfg.data)
  texts, labels = peers.split_texts(splits[FLAGS.split])
  if not texts:
    raise TfagentError(f"The {FLAGS.split} split is empty; nothing to audit.")
  path = resolve_saved_model(FLAGS.saved_model)
  # Scores the texts already read, so model and peer see one pass in one order.
  _, model_probs, _ = evaluate.predict_probabilities(
      evaluate.saved_model_predict_fn(path),
      tf.data.Dataset.from_tensor_slices((texts, labels)), 256)
  peer_probs = peer_probabilities(splits["train"], texts, len(info.class_names))
  report = audit(model_probs, peer_probs, texts, labels, info.class_names, FLAGS.top)
  report.update(saved_model=path, split=FLAGS.split)
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    report = run(train.config_from_flags())
  except TfagentError as e:
    logging.error("%s", e)
    sys.exit(1)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    json.dump(report, f, ensure_ascii=False, indent=1)
  logging.info("%s split, %d texts: model %d errors, peer %d, both %d (%d with the model at "
               ">= 0.9) -> %s", report["split"], report["examples"], report["model_errors"],
               report["peer_errors"], report["shared_errors"],
               report["shared_errors_model_confidence_at_least_0.9"], FLAGS.output)


if __name__ == "__main__":
  train.define_flags()
  define_flags()
  app.run(main)
