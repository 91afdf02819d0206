"""What the scikit-learn peers share: their split, their tokens, evaluation and folds.

Each peer (bench/tfidf_lr.py, bench/nblr.py) takes `tfagent.train`'s flags, so a
model's flagfile fixes the same data source, seed and split, and writes the
same `MODEL_DIR/eval/metrics.json`; with --folds=K it runs every fold through
`tfagent.cross_validate`, as a model does.
"""

import os
import pickle
import re
import time

from absl import app, logging
import numpy as np

from tfagent import cli, cross_validate, data, evaluate, train, training

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# tfagent's tokens: words, and each CJK character and punctuation mark on its own.
_SPLIT_OFF = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\w\s])")
_BREAK = re.compile(r"<br */?>")


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


def tokens(text: str) -> list:
  """Lower-cased words, with each CJK character and punctuation mark a token."""
  return _SPLIT_OFF.sub(r" \1 ", _BREAK.sub(" ", text.lower())).split()


def probabilities(classifier, features, num_classes: int) -> np.ndarray:
  """`<float32>[n, num_classes]` from a fitted classifier; classes absent from train stay 0."""
  probs = np.zeros((features.shape[0], num_classes), np.float32)
  probs[:, classifier.classes_] = classifier.predict_proba(features)
  return probs


def fit_and_evaluate(cfg, fit, name: str) -> dict:
  """Fits a peer on train, evaluates it on test; writes `MODEL_DIR/eval/metrics.json`.

  Args:
    cfg: tfagent Config (data source, split, run directory).
    fit: `(train, validation, num_classes) -> (predict, report)`; each split a
      `(texts, labels)` pair, `predict(texts) -> <float32>[n, C]`, `report` a dict.
    name: the peer's name, for the log and the pickle.
  """
  training.prepare_run_dir(cfg.train.model_dir, cfg)
  splits, info = data.load_splits(cfg.data)
  train_split = split_texts(splits["train"])
  start = time.perf_counter()
  predict, report = fit(train_split, split_texts(splits["validation"]), len(info.class_names))
  train_seconds = time.perf_counter() - start
  logging.info("%s fitted on %d texts in %.1f s: %s", name, len(train_split[0]), train_seconds,
               report)
  model_path = os.path.join(cfg.train.model_dir, f"{name}.pkl")
  with open(model_path, "wb") as f:
    pickle.dump(predict, f)
  return evaluate.evaluate(
      lambda text: predict([t.decode("utf-8") for t in text.numpy()]), splits["test"],
      info.class_names, os.path.join(cfg.train.model_dir, "eval"),
      extra=dict(saved_model=model_path, train_seconds=train_seconds, epochs_run=1,
                 train_examples=len(train_split[0]), peer=report,
                 train_examples_per_second=len(train_split[0]) / max(train_seconds, 1e-9)))


def main(fit, name: str):
  """The peer's entry point: one run, or every fold with --folds=K."""
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")

    def body():
      cfg = train.config_from_flags()
      if cfg.data.folds > 1:
        cross_validate.cross_validate(cfg, lambda c: fit_and_evaluate(c, fit, name))
      else:
        result = fit_and_evaluate(cfg, fit, name)
        logging.info("Done: test accuracy %.4f", result["accuracy"])
    cli.run_main(body)
  train.define_flags()
  app.run(run)
