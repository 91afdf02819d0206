"""Train stage: end-to-end on a tiny corpus, run directory contents, schedule, errors."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from tfagent import config, data, optim, signatures, train
from tfagent.errors import ConfigError


def test_run_directory_has_every_artifact(trained_run):
  cfg, result = trained_run
  run = cfg.train.model_dir
  assert config.load_json(os.path.join(run, "config.json")) == cfg
  for path in ["checkpoints/best.keras", "checkpoints/last.keras",
               "eval/metrics.json", "eval/confusion_matrix.png"]:
    assert os.path.getsize(os.path.join(run, path)) > 0, path
  for sub in ("train", "validation"):
    events = os.listdir(os.path.join(run, "logs", sub))
    assert any(e.startswith("events.out.tfevents") for e in events)
  assert not [f for f in os.listdir(os.path.join(run, "checkpoints")) if f.startswith(".tmp")]


def best_checkpoint(cfg) -> keras.Model:
  return keras.saving.load_model(os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))


def test_tiny_model_learns_the_separable_corpus(trained_run):
  cfg, result = trained_run
  with open(os.path.join(cfg.train.model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["accuracy"] >= 0.9, metrics
  assert metrics["class_names"] == ["negative", "positive"]
  assert metrics["saved_model"] == result["saved_model"]
  losses = result["history"]["loss"]
  assert losses[-1] < losses[0], losses


def test_test_metrics_are_those_of_the_best_checkpoint_on_the_test_split(trained_run):
  """metrics.json against a reference computed here from best.keras and the test split."""
  cfg, _ = trained_run
  with open(os.path.join(cfg.train.model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  splits, _ = data.load_splits(cfg.data)
  texts, labels = (np.array(x) for x in zip(*splits["test"].as_numpy_iterator()))
  pred = np.asarray(best_checkpoint(cfg)(keras.ops.convert_to_tensor(texts))).argmax(-1)
  matrix = np.array([[np.sum((labels == i) & (pred == j)) for j in (0, 1)] for i in (0, 1)])
  assert metrics["confusion_matrix"] == matrix.tolist()
  assert metrics["examples"] == len(labels)
  assert metrics["accuracy"] == pytest.approx(np.mean(pred == labels))
  diagonal = np.diag(matrix).astype(float)
  precision, recall = diagonal / matrix.sum(0).clip(1), diagonal / matrix.sum(1).clip(1)
  f1 = 2 * precision * recall / (precision + recall).clip(1e-12)
  assert metrics["macro_precision"] == pytest.approx(precision.mean())
  assert metrics["macro_recall"] == pytest.approx(recall.mean())
  assert metrics["macro_f1"] == pytest.approx(f1.mean())
  assert metrics["roc_auc"] >= 0.9  # Separable corpus: the scores rank, not only the argmax.


def test_best_checkpoint_reloads_with_the_exports_probabilities(trained_run):
  cfg, result = trained_run
  texts = ["great movie", "很差", "", "an unseen sentence 未见过"]
  logits = best_checkpoint(cfg)(keras.ops.convert_to_tensor(texts))
  expected = signatures.probabilities_fn(result["saved_model"])(tf.constant(texts)).numpy()
  np.testing.assert_allclose(np.asarray(keras.ops.softmax(logits, axis=-1)), expected, atol=1e-5)


def test_learning_rate_warms_up_then_decays():
  schedule = optim.make_schedule(config.TrainConfig(learning_rate=1e-3,
                                                    warmup_fraction=0.1), 100)
  rates = [float(schedule(step)) for step in (0, 5, 10, 50, 99)]
  assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-4)
  assert rates[2] == pytest.approx(1e-3) and rates[2] > rates[3] > rates[4]


def test_accuracy_and_loss_of_given_probabilities():
  import numpy as np
  import tensorflow as tf
  from tfagent import evaluate
  ds = tf.data.Dataset.from_tensor_slices((["a", "b", "c"], [0, 1, 1]))
  probs = {b"a": [0.8, 0.2], b"b": [0.4, 0.6], b"c": [0.9, 0.1]}
  got = evaluate.accuracy_and_loss(
      lambda text: np.array([probs[t] for t in text.numpy()]), ds, batch_size=2)
  assert got["accuracy"] == pytest.approx(2 / 3)
  assert got["loss"] == pytest.approx(-(np.log(0.8) + np.log(0.6) + np.log(0.1)) / 3)


def test_unwritable_model_dir_is_a_config_error(corpus_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  cfg = tiny_config(corpus_dir, blocker / "run", tmp_path / "sm")
  with pytest.raises(ConfigError, match=r"--model_dir=.*a_file/run: cannot write there"):
    train.train_and_evaluate(cfg)


@pytest.mark.slow
def test_ensemble_trains_exports_and_serves_the_mean_of_its_members(corpus_dir, tmp_path):
  import dataclasses
  import numpy as np
  import tensorflow as tf
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm")
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ensemble_size=2))
  result = train.train_and_evaluate(cfg)
  assert result["accuracy"] >= 0.9, result
  # metrics.json's validation figures are the ensemble's, beside its members' mean.
  saved = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
  assert set(saved["validation"]) == {"accuracy", "loss"}
  assert saved["validation"] == result["validation"] != result["validation_members_mean"]
  best = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "best.keras")
  texts = tf.constant(["great movie", "很差", "a mess"])
  classifier = best.classifier
  ids = best.tokenizer(texts)
  members = [tf.nn.softmax(classifier.get_layer(f"member_{k}")(ids)).numpy() for k in (0, 1)]
  served = tf.saved_model.load(result["saved_model"]).signatures["serving_default"]
  np.testing.assert_allclose(served(text=texts)["probabilities"].numpy(),
                             np.mean(members, axis=0), atol=1e-5)
