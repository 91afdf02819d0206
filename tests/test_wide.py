"""The wide path: NB-weighted n-gram logistic regression inside the graph, added to the deep path."""

import json
import os
import re

import keras
import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
import tensorflow as tf

import pooled_python
from tfagent import config, evaluate, export, models
from tfagent.errors import ConfigError
from tfagent.models import wide_fit

TRAIN = ([("great fun film", 1), ("loved this great movie", 1), ("what a fun ride", 1),
          ("great acting , loved it", 1), ("boring dull film", 0), ("hated this movie", 0),
          ("dull and boring acting", 0), ("what a mess , hated it", 0)] * 3
         + [("a fun great show", 1), ("a dull boring show", 0)])
VALIDATION = [("great fun , loved it", 1), ("boring mess , hated it", 0),
              ("zebra zebra great", 1), ("zebra dull", 0)]


def dataset(pairs) -> tf.data.Dataset:
  texts, labels = zip(*pairs)
  return tf.data.Dataset.from_tensor_slices((list(texts), list(labels)))


def model_config(**overrides) -> config.ModelConfig:
  fields = dict(name="lstm", vocab_size=50, sequence_length=8, embedding_dim=8, hidden_dim=4,
                dropout=0.0, wide_ngrams=2, wide_min_count=2, wide_c=1.0)
  fields.update(overrides)
  return config.ModelConfig(**fields)


def fit(cfg=None, train=TRAIN, num_classes=2) -> wide_fit.WideFit:
  return wide_fit.fit_wide(cfg or model_config(), dataset(train), dataset(VALIDATION),
                       num_classes, seed=0)


def build(cfg=None, train=TRAIN) -> keras.Model:
  cfg = cfg or model_config()
  texts = dataset(train).map(lambda t, _: t).batch(8)
  return models.build_model(cfg, ["neg", "pos"], texts, fit(cfg, train))


def tokens(text: str) -> list:
  """The wide path's tokens, as layers.standardize makes them (ASCII text here)."""
  return re.sub(r"([^\w\s])", r" \1 ", text.lower()).split()


def test_an_ngram_only_in_validation_or_test_gets_no_weight():
  layer = fit().layer()
  vocabulary = set(layer.vocabulary())
  assert "great" in vocabulary and "great fun" in vocabulary
  assert not any("zebra" in gram for gram in vocabulary)
  empty = layer(tf.constant([""])).numpy()
  np.testing.assert_array_equal(layer(tf.constant(["zebra", "zebra zebra"])).numpy(),
                                np.repeat(empty, 2, axis=0))
  # An n-gram seen once in train is below --wide_min_count=2: no weight either.
  assert "show" in vocabulary and "a fun great" not in vocabulary


def test_ngrams_count_once_per_text():
  layer = fit().layer()
  once = layer(tf.constant(["great"])).numpy()
  np.testing.assert_allclose(layer(tf.constant(["great great great"])).numpy(),
                             layer(tf.constant(["great great"])).numpy(), atol=1e-6)
  assert not np.allclose(once, layer(tf.constant([""])).numpy())


@pytest.mark.parametrize("num_classes", [2, 3])
def test_weights_are_those_of_nb_scaled_logistic_regression(num_classes):
  """Against an independent NBSVM: sklearn's counts, Wang & Manning's ratio, the same C."""
  train = [(t, y % num_classes) for t, y in TRAIN]
  if num_classes == 3:
    train += [("so so film", 2), ("an average movie", 2), ("so so acting", 2),
              ("an average show", 2)] * 2
  layer = fit(train=train, num_classes=num_classes).layer()
  vectorizer = CountVectorizer(tokenizer=tokens, lowercase=False, ngram_range=(1, 2),
                               min_df=2, binary=True, token_pattern=None)
  x = vectorizer.fit_transform([t for t, _ in train])
  y = np.array([label for _, label in train])
  probe = ["great fun film", "hated this dull show", "so so movie", "zebra"]
  x_probe = vectorizer.transform(probe)
  assert sorted(vectorizer.vocabulary_) == sorted(layer.vocabulary())
  expected = []
  for k in ([1] if num_classes == 2 else range(num_classes)):
    p = np.asarray(x[y == k].sum(0)).ravel() + 1
    q = np.asarray(x[y != k].sum(0)).ravel() + 1
    r = np.log(p / p.sum()) - np.log(q / q.sum())
    lr = LogisticRegression(C=1.0, solver="liblinear", random_state=0).fit(
        x @ sparse.diags(r), y == k)
    expected.append(lr.decision_function(x_probe @ sparse.diags(r)))
  logits = layer(tf.constant(probe)).numpy()
  # liblinear stops at its tolerance, which depends on the column order: 1e-2 of logits of
  # size 0.5-3.5 (a wrong ratio or count moves them by tenths).
  if num_classes == 2:  # The decision is split evenly: softmax(logits) = sigmoid(decision).
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], expected[0], atol=1e-2)
  else:
    np.testing.assert_allclose(logits, np.stack(expected, axis=1), atol=1e-2)


def test_c_is_chosen_on_validation_when_not_given():
  fitted = fit(model_config(wide_c=0.0))
  tried = fitted.report["tried"]
  assert sorted(map(float, tried)) == sorted(wide_fit.C_GRID)
  best = min(tried, key=lambda c: tried[c]["validation_loss"])
  assert fitted.report["c"] == float(best)


def test_model_logits_are_the_wide_plus_the_weighted_deep_logits():
  model = build()
  model.set_deep_weight(0.35)
  texts = tf.constant(["great fun film", "hated this dull show", "zebra", ""])
  wide_logits, deep_logits = model.path_logits()(texts)
  np.testing.assert_allclose(model(texts).numpy(),
                             wide_logits.numpy() + 0.35 * deep_logits.numpy(), atol=1e-6)
  np.testing.assert_allclose(wide_logits.numpy(), model.wide(texts).numpy())
  ids = model.tokenizer(texts)
  np.testing.assert_allclose(deep_logits.numpy(),
                             model.classifier(ids).numpy(), atol=1e-6)


def test_deep_weight_is_the_one_of_lowest_validation_loss():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 400)
  sign = np.where(labels == 1, 1.0, -1.0)
  wide_logits = np.stack([-sign, sign], 1) * 0.5 + rng.normal(0, 1, (400, 2))
  noise = rng.normal(0, 3, (400, 2))
  weight, losses = wide_fit.choose_deep_weight(wide_logits, noise, labels)
  assert weight == 0.0 and losses[0.0] == min(losses.values())
  helpful = np.stack([-sign, sign], 1) * 2.0
  weight, _ = wide_fit.choose_deep_weight(wide_logits, helpful, labels)
  assert weight >= 1.0


def test_class_weights_reach_the_wide_fit_and_the_deep_weight():
  """--class_weight weighed the deep path's loss only: the wide path was fitted, its C and the
  deep weight chosen, on unweighted loss, and the sum served no rare class (review 5: rare
  recall 0.50 from the deep path alone, 0.00 from the export)."""
  rng = np.random.default_rng(0)
  labels = (rng.random(1000) < 0.05).astype(int)  # 5 % rare.
  rare = np.where(labels == 1, 1.0, -1.0)
  wide = np.stack([-rare, rare], 1) * 0.3 + rng.normal(0, 1, (1000, 2)) + [1.5, -1.5]
  # The deep path finds the rare class, at the price of a lean toward it on common texts.
  deep = np.stack([np.zeros(1000), np.where(labels == 1, 3.0, 1.0)], 1) + rng.normal(
      0, 1, (1000, 2))
  balanced = np.array([1000 / (2 * (labels == 0).sum()), 1000 / (2 * labels.sum())])
  plain, _ = wide_fit.choose_deep_weight(wide, deep, labels)
  weighted, losses = wide_fit.choose_deep_weight(wide, deep, labels, balanced)
  assert weighted > plain and losses[weighted] == min(losses.values())
  assert wide_fit.log_loss(wide, labels, np.ones(2)) == pytest.approx(
      wide_fit.log_loss(wide, labels))
  # The linear fit: a class weighed up is predicted more often on its own training texts.
  train = [("great fun film", 1)] * 3 + [("great dull film", 0)] * 30 + [("fun ride", 0)] * 3
  texts = ["great fun film", "great dull film", "fun ride"]
  probes = dataset([(t, 0) for t in texts]).batch(8)
  unweighted = wide_fit.fit_wide(model_config(), dataset(train), dataset(train), 2, seed=0)
  up = wide_fit.fit_wide(model_config(), dataset(train), dataset(train), 2, seed=0,
                         class_weight=np.array([1.0, 10.0]))
  margins = []
  for fitted in (unweighted, up):
    layer = fitted.layer()
    logits = np.concatenate([layer(t).numpy() for t, _ in probes])
    margins.append(logits[:, 1] - logits[:, 0])
  assert (margins[1] > margins[0]).all(), margins


def test_empty_vocabulary_is_a_config_error_naming_the_flag():
  with pytest.raises(ConfigError, match="--wide_min_count=1000"):
    fit(model_config(wide_min_count=1000))


def test_checkpoint_reload_keeps_the_wide_path(tmp_path):
  model = build(model_config(ensemble_size=2))
  model.set_deep_weight(0.5)
  model.save(tmp_path / "m.keras")
  reloaded = keras.saving.load_model(tmp_path / "m.keras")
  texts = tf.constant(["great fun film", "hated it", "zebra"])
  np.testing.assert_allclose(reloaded(texts).numpy(), model(texts).numpy(), atol=1e-6)
  assert reloaded.wide.vocabulary() == model.wide.vocabulary()


RELOAD = r"""
import json, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                    ("tfagent",)),
                  "probabilities": out["probabilities"].numpy().tolist()}))
"""


@pytest.mark.slow
def test_export_reloads_in_a_clean_process_with_the_same_probabilities(tmp_path):
  """Bit for bit those of the serving function over the in-memory tables (the export's
  before its vocabularies became assets, models/vocab_files.py)."""
  model = build()
  model.set_deep_weight(0.5)
  path = export.export_model(model, ["neg", "pos"],
                             config.ExportConfig(export_dir=str(tmp_path), model_name="wd",
                                                explain_steps=0))
  with open(os.path.join(path, "assets", "wide.txt"), encoding="utf-8") as f:
    assert f.read().splitlines() == model.get_layer("wide").vocabulary()
  texts = ["great fun film", "hated this dull show", "zebra", "", "great\nfun, dull\r\nfilm"]
  serve, _ = export.make_serving_fns(model, ["neg", "pos"])
  expected = serve(tf.constant(texts))["probabilities"].numpy()
  np.testing.assert_allclose(expected, tf.nn.softmax(model(tf.constant(texts))).numpy(),
                             atol=1e-6)
  got = pooled_python.clean_json(RELOAD, path, json.dumps(texts))
  assert got["modules"] == []  # No tfagent code: only TensorFlow ops ran.
  np.testing.assert_array_equal(np.array(got["probabilities"], np.float32), expected)


def weight_paths(model: keras.Model, path: str) -> list:
  """The paths of every array in `model`'s `.weights.h5` file."""
  import h5py
  model.save_weights(path)
  with h5py.File(path) as f:
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
  return sorted(found)


def test_the_model_object_reloads_as_itself_with_its_parts_and_deep_weight(tmp_path):
  model = build(model_config(ensemble_size=2))
  model.set_deep_weight(0.35)
  path = str(tmp_path / "m.keras")
  model.save(path)
  reloaded = evaluate.load_checkpoint(path)
  assert isinstance(reloaded, models.TextClassifier)
  assert reloaded.deep_weight == pytest.approx(0.35) and len(reloaded.members) == 2
  assert reloaded.wide.vocabulary() == model.wide.vocabulary()
  texts = tf.constant(["great fun", "dull and boring", "unseen words"])
  np.testing.assert_array_equal(reloaded(texts).numpy(), model(texts).numpy())
  rebuilt = models.TextClassifier.from_config(model.get_config())
  assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]


def test_a_checkpoint_saved_before_the_model_object_loads_as_one(tmp_path):
  model = build(model_config(ensemble_size=2))
  model.set_deep_weight(0.35)
  # What build_model returned before the model object: a plain Functional model, same layers.
  plain = keras.Model(model.inputs, model.outputs, name=model.name)
  assert weight_paths(plain, str(tmp_path / "p.weights.h5")) == weight_paths(
      model, str(tmp_path / "m.weights.h5"))  # Old backups restore into the new object.
  plain.save(str(tmp_path / "old.keras"))
  adopted = evaluate.load_checkpoint(str(tmp_path / "old.keras"))
  assert isinstance(adopted, models.TextClassifier) and adopted.deep_weight == pytest.approx(0.35)
  texts = tf.constant(["great fun", "dull and boring"])
  np.testing.assert_array_equal(adopted(texts).numpy(), model(texts).numpy())
  assert adopted.tokenizer is adopted.get_layer("tokenizer") and len(adopted.members) == 2
