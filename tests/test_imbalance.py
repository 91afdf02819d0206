"""Imbalanced classes: --class_weight (train counts only, every strategy), the imbalance in
data_report.json, per-class metrics, and --monitor=val_macro_f1."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_csv
import pooled_python
from tfagent import config, data, imbalance
from tfagent.data import sources, validate
from tfagent.data.splits import assign
from tfagent.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "examples"))
import make_imbalanced  # noqa: E402  pylint: disable=wrong-import-position

# `(text, label)` rows; "cue" is in 60 % of rare texts and 10 % of common ones (the example
# corpus of configs/imbalanced.flags).
imbalanced_rows = make_imbalanced.records


def weights_of(train_path, test_path) -> tuple:
  """`(weights, class_balance)` of --class_weight=balanced on a csv with an official test."""
  cfg = config.DataConfig(dataset=f"csv:{train_path}", test_path=test_path)
  splits, info = data.load_splits(cfg)
  return (imbalance.run_weights(config.TrainConfig(class_weight="balanced"), info,
                                splits["train"]), info.report["class_balance"])


def landing_in_validation(rows, cfg) -> list:
  """The rows that the seeded split puts in validation when a test file is given."""
  keep = []
  for text, label in rows:
    norm, key = validate.text_key(text, cfg.seed)
    if assign("train", norm, key, True, cfg) == "validation":
      keep.append((text, label))
  return keep


def test_balanced_weights_are_counted_on_train_only(tmp_path):
  rows = imbalanced_rows(190, 10, seed=0)
  test = imbalanced_rows(20, 20, seed=1)
  weights, balance = weights_of(write_csv(tmp_path / "a.csv", rows),
                                write_csv(tmp_path / "t1.csv", test))
  n = sum(balance["train"].values())
  assert weights == pytest.approx([n / (2 * balance["train"][c]) for c in ("common", "rare")])
  # More rare texts in validation and in test only: the same weights.
  extra = landing_in_validation(imbalanced_rows(0, 60, seed=2), config.DataConfig())
  more_test = test + imbalanced_rows(0, 50, seed=3)
  weights2, balance2 = weights_of(write_csv(tmp_path / "b.csv", rows + extra),
                                  write_csv(tmp_path / "t2.csv", more_test))
  assert balance2["validation"]["rare"] == balance["validation"]["rare"] + len(extra) > \
      balance["validation"]["rare"]
  assert balance2["test"]["rare"] == balance["test"]["rare"] + 50
  assert balance2["train"] == balance["train"]
  np.testing.assert_array_equal(weights2, weights)


def test_weights_file_fills_left_out_classes_with_one(tmp_path):
  path = tmp_path / "w.json"
  path.write_text(json.dumps({"rare": 7.5}))
  assert imbalance.class_weights(str(path), ("common", "rare"), {"common": 9, "rare": 1}) == \
      pytest.approx([1.0, 7.5])
  assert imbalance.class_weights("none", ("common", "rare"), {"common": 9, "rare": 1}) is None


@pytest.mark.parametrize("content, message", [
    ({"rarr": 2.0}, r"w\.json: key 'rarr' is no class; the classes are common, rare"),
    ({"rare": 0}, r"w\.json: key 'rare' has weight 0; expected a positive number"),
    ({"rare": -1.5}, r"w\.json: key 'rare' has weight -1.5; expected a positive number"),
    ({"rare": "2"}, r"w\.json: key 'rare' has weight '2'; expected a positive number"),
    ([2.0, 1.0], r"w\.json: holds a JSON list; expected an object"),
    ("{not json", r"w\.json: cannot read it as JSON"),
])
def test_a_bad_weights_file_names_the_file_and_key(tmp_path, content, message):
  path = tmp_path / "w.json"
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  with pytest.raises(ConfigError, match=r"--class_weight=.*" + message):
    imbalance.class_weights(str(path), ("common", "rare"), {"common": 9, "rare": 1})


def test_a_missing_weights_file_is_named(tmp_path):
  with pytest.raises(ConfigError, match=r"--class_weight=.*nope\.json: cannot read"):
    imbalance.class_weights(str(tmp_path / "nope.json"), ("a", "b"), {"a": 1, "b": 1})


def test_weighted_batches_carry_each_examples_class_weight():
  ds = tf.data.Dataset.from_tensor_slices(([[1], [2], [3], [4]], [0, 1, 1, 0])).batch(4)
  fn = imbalance.weighted(lambda ctx=None: ds, np.array([0.5, 4.0], np.float32))
  ids, label, weight = next(iter(fn()))
  np.testing.assert_array_equal(weight.numpy(), [0.5, 4.0, 4.0, 0.5])
  assert imbalance.weighted(fn, None) is fn


def test_data_report_gives_the_imbalance_ratio_and_warns(tmp_path, caplog):
  path = write_csv(tmp_path / "a.csv", imbalanced_rows(380, 20, seed=0))
  _, info = data.load_splits(config.DataConfig(dataset=f"csv:{path}"))
  balance = info.report["class_balance"]
  for split in sources.SPLITS:
    counts = balance[split]
    assert info.report["imbalance_ratio"][split] == (pytest.approx(
        max(counts.values()) / min(counts.values())) if min(counts.values()) else None)
  assert info.report["imbalance_ratio"]["train"] > sources.IMBALANCE_WARN
  assert "consider --class_weight=balanced" in caplog.text
  assert sources.imbalance_ratios({"test": {"a": 3, "b": 0}, "x": None}) == \
      {"test": None, "x": None}


def test_sparse_macro_f1_matches_scikit_learn():
  from sklearn.metrics import f1_score
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, size=(50, 2))  # An ensemble's [batch, members] labels.
  logits = rng.normal(size=(50, 2, 3)).astype("float32")
  metric = imbalance.SparseMacroF1(3)
  metric.update_state(labels, logits)
  expected = f1_score(labels.reshape(-1), logits.reshape(-1, 3).argmax(-1), average="macro")
  assert float(metric.result()) == pytest.approx(expected, rel=1e-5)
  clone = imbalance.SparseMacroF1.from_config(metric.get_config())
  assert clone.num_classes == 3 and clone.name == "macro_f1"


def test_a_bad_monitor_is_refused():
  with pytest.raises(ConfigError, match=r"--monitor='val_f1' is invalid; expected one of "
                     r"val_loss, val_accuracy, val_macro_f1"):
    imbalance.metrics("val_f1", 2)
  with pytest.raises(ConfigError, match="--monitor"):
    config.from_args(monitor="val_f1")


def imbalanced_config(root, name: str, **train) -> config.Config:
  """A tiny LSTM on the 95/5 corpus (written once under root), scored on a 50/50 test file."""
  if not os.path.exists(f"{root}/train.csv"):
    write_csv(f"{root}/train.csv", imbalanced_rows(1900, 100, seed=0))
    write_csv(f"{root}/test.csv", imbalanced_rows(200, 200, seed=1))
  return config.Config(
      data=config.DataConfig(dataset=f"csv:{root}/train.csv", test_path=f"{root}/test.csv",
                             batch_size=64),
      model=config.ModelConfig(vocab_size=100, sequence_length=16, embedding_dim=8,
                               hidden_dim=4, dropout=0.0),
      train=config.TrainConfig(model_dir=f"{root}/{name}", epochs=4, learning_rate=0.03,
                               verbose=0, early_stopping_patience=6, **train),
      export=config.ExportConfig(export_dir=f"{root}/saved_models", model_name=name,
                                 explain_steps=0))


@pytest.mark.slow
def test_balanced_weights_lift_the_rare_class_recall(tmp_path):
  """Seeded: unweighted, the cue never outweighs the 95/5 prior (rare recall near 0);
  balanced, a cue text is predicted rare (about 0.6 of rare texts carry the cue)."""
  from tfagent import train
  plain = train.train_and_evaluate(imbalanced_config(tmp_path, "none"))
  balanced = train.train_and_evaluate(imbalanced_config(
      tmp_path, "balanced", class_weight="balanced", monitor="val_macro_f1"))
  rare = {"none": plain["per_class"]["rare"]["recall"],
          "balanced": balanced["per_class"]["rare"]["recall"]}
  assert rare["balanced"] > rare["none"] + 0.3, rare
  assert balanced["per_class"]["rare"]["support"] == 200
  # Normalised by row: each row sums to 1 and its diagonal is the class's recall.
  matrix = np.asarray(balanced["confusion_matrix_normalized"])
  np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
  np.testing.assert_allclose(np.diag(matrix), [balanced["per_class"][c]["recall"]
                                               for c in ("common", "rare")])
  # The kept epoch is the one of best validation macro F1, not of lowest loss.
  history = balanced["history"]
  best = int(np.argmax(history["val_macro_f1"]))
  assert balanced["validation"]["accuracy"] == pytest.approx(history["val_accuracy"][best],
                                                             abs=1e-6)
  with open(tmp_path / "balanced" / "eval" / "metrics.json") as f:
    assert json.load(f)["per_class"]["rare"]["recall"] == rare["balanced"]
  # The card says how it was trained (it named neither weights nor monitor but in its config).
  weights = balanced["class_weights"]
  with open(os.path.join(balanced["saved_model"], "model_card.md"), encoding="utf-8") as f:
    card = f.read()
  assert (f"- Class weights `--class_weight=balanced`: common {weights['common']:.4g}, rare "
          f"{weights['rare']:.4g}; the epoch kept by `--monitor=val_macro_f1`") in card
  assert weights["rare"] > 5 * weights["common"]  # 95/5 on train.
  assert "class_weights" not in plain
  with open(os.path.join(plain["saved_model"], "model_card.md"), encoding="utf-8") as f:
    assert "Class weights" not in f.read()


MIRRORED_SCRIPT = r"""
import dataclasses, json, sys
import tensorflow as tf
sys.path.insert(0, "tests")
from test_imbalance import imbalanced_config
from tfagent import train
out = {}
for strategy in ("default", "mirrored"):
  cfg = imbalanced_config(sys.argv[1], strategy, class_weight="balanced",
                          monitor="val_macro_f1", strategy=strategy)
  # As tests/test_distribute.py: a Transformer, no dropout, batches padded to their longest.
  cfg = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, bucket_width=0, batch_size=32,
                                    max_train_examples=640),
      model=dataclasses.replace(cfg.model, name="transformer", num_layers=1, num_heads=2,
                                intermediate_dim=8),
      train=dataclasses.replace(cfg.train, epochs=1))
  out[strategy] = train.train_and_evaluate(cfg)["history"]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_class_weights_apply_the_same_under_mirrored(tmp_path):
  """Two virtual CPUs, global batch 32: the weighted loss and val macro F1 of one device."""
  out = pooled_python.mirrored_result(MIRRORED_SCRIPT, tmp_path)
  assert out["mirrored"]["loss"] == pytest.approx(out["default"]["loss"], rel=1e-4)
  assert out["mirrored"]["val_macro_f1"] == pytest.approx(out["default"]["val_macro_f1"],
                                                          rel=1e-4)


CHECKPOINT_SCRIPT = r"""
import sys, keras, numpy as np
if sys.argv[1] == "save":
  from tfagent import imbalance
  inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="classifier")
  inner.compile("adam", "sparse_categorical_crossentropy",
                metrics=["accuracy", imbalance.SparseMacroF1(2)])
  inner.fit(np.zeros((8, 4)), np.zeros(8, int), verbose=0)
  x = keras.Input((4,))
  keras.Model(x, inner(x)).save(sys.argv[2])
else:
  from tfagent import evaluate
  print("LOADED", evaluate.load_checkpoint(sys.argv[2]).count_params())
"""


def test_a_checkpoint_compiled_with_macro_f1_loads_in_a_clean_process(tmp_path):
  """`tfagent evaluate` loads best.keras in a process that never imported training."""
  path = str(tmp_path / "best.keras")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  for step in ("save", "load"):
    proc = subprocess.run([sys.executable, "-c", CHECKPOINT_SCRIPT, step, path], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
  assert "LOADED 10" in proc.stdout


@pytest.mark.parametrize("monitor, values, best_epoch", [
    ("val_macro_f1", [0.5, 0.7, 0.6], 1), ("val_loss", [0.5, 0.7, 0.4], 2)])
def test_the_best_checkpoint_follows_the_monitors_direction(tmp_path, monitor, values,
                                                            best_epoch):
  import keras
  from tfagent import callbacks
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  checkpoint = callbacks.AtomicModelCheckpoint(model, str(tmp_path), monitor,
                                               imbalance.check_monitor(monitor))
  saved = []
  for epoch, value in enumerate(values):
    model.layers[0].bias.assign([float(epoch)])  # Marks which epoch's weights are saved.
    checkpoint.on_epoch_end(epoch, {monitor: value})
    saved.append(keras.saving.load_model(str(tmp_path / "best.keras")).layers[0].bias.numpy())
  assert float(saved[-1][0]) == best_epoch
