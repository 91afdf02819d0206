"""Quantized exports: int8 weights in the SavedModel, a fraction of the size, the same
answers, and an accuracy gate that keeps float32 when they are not."""

import dataclasses
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
import pooled_python
import test_export
from tfagent import config, data, evaluate, export, quantize, signatures
from tfagent.models import wide

TEXTS = ["great movie loved it", "难看 垃圾 失望", "", "an unseen sentence 未见过",
         "a mess, truly awful", "很好 喜欢"]
CLASSES = ["negative", "positive"]


def stored_dtypes(export_dir: str) -> dict:
  """Checkpoint key -> (dtype name, shape) of every variable in the SavedModel's variables/."""
  reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
  dtypes = reader.get_variable_to_dtype_map()
  return {k: (dtypes[k].name, tuple(s)) for k, s in reader.get_variable_to_shape_map().items()
          if k.endswith("VARIABLE_VALUE")}


def best_model(cfg):
  return evaluate.load_checkpoint(os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))


def float_reference(cfg, tmp_path) -> tuple:
  """`(keras model, float export path)`: the float model the run exported, exported as float."""
  model = best_model(cfg)
  path = export.export_model(model, CLASSES, config.ExportConfig(export_dir=str(tmp_path),
                                                                 model_name="float"))
  return model, path


def export_probabilities(path: str, texts=TEXTS) -> np.ndarray:
  return signatures.load_signature(path)(text=tf.constant(texts))["probabilities"].numpy()


def train_quantized(corpus_dir, root, name: str, **model_overrides) -> tuple:
  """Trains a tiny model with `--quantize=int8` through train_and_evaluate; (cfg, result)."""
  from tfagent import train
  cfg = tiny_config(corpus_dir, root / "run", root / "saved_models", name=name,
                    explain_steps=64)
  # Wide enough embeddings that weights, not the checkpoint's own bookkeeping, set the size.
  cfg = dataclasses.replace(
      cfg, model=dataclasses.replace(cfg.model, vocab_size=1000, embedding_dim=64,
                                     **model_overrides),
      export=dataclasses.replace(cfg.export, quantize="int8"))
  return cfg, train.train_and_evaluate(cfg)


@pytest.fixture(scope="module")
def lstm_run(corpus_dir, tmp_path_factory):
  return train_quantized(corpus_dir, tmp_path_factory.mktemp("q_lstm"), "lstm")


@pytest.fixture(scope="module")
def lstm_gated(lstm_run, tmp_path_factory):
  """lstm_run's best model through write_quantized with a negative gate (the int8 export
  would have to gain 100 points): the float32 export it keeps is also the LSTM's float
  reference. `(model, staged, report, warnings logged, export root)`."""
  cfg, _ = lstm_run
  model = best_model(cfg)
  validation = data.load_splits(cfg.data)[0]["validation"]
  root = tmp_path_factory.mktemp("q_gate")
  export_cfg = config.ExportConfig(export_dir=str(root), model_name="m", quantize="int8",
                                   quantize_max_drop=-100.0)
  records = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = records.append
  logging.getLogger().addHandler(handler)
  try:
    staged, report = quantize.write_quantized(model, CLASSES, export_cfg, TEXTS[:2], validation)
  finally:
    logging.getLogger().removeHandler(handler)
  return model, staged, report, "\n".join(r.getMessage() for r in records), root


@pytest.fixture(scope="module")
def transformer_wide_run(corpus_dir, tmp_path_factory):
  return train_quantized(corpus_dir, tmp_path_factory.mktemp("q_tw"), "transformer",
                         wide_ngrams=2, wide_min_count=1)


def test_gate_counts_accuracy_points_and_a_tie_is_no_loss():
  assert quantize.keeps_quantized(0.9, 0.9, 0.0)  # Gate 0: a tie keeps the quantized one.
  assert not quantize.keeps_quantized(0.9, 0.89, 0.0)
  assert quantize.keeps_quantized(0.3, 0.295, 0.5)  # 0.5 points, however 0.3 - 0.295 rounds.
  assert not quantize.keeps_quantized(0.9, 0.894, 0.5)  # 0.6 points.
  assert not quantize.keeps_quantized(0.9, 0.9, -0.1)  # Negative: it must gain.
  assert quantize.keeps_quantized(0.8, 0.85, -4.0)


def test_wide_kernel_becomes_int8_with_one_scale_a_class():
  kernel = np.array([[0, 0], [1.27, -0.5], [-0.635, 0.25], [0.01, 0.5]], np.float32)
  layer = wide.make_layer(2, ["great", "movie", "awful"], kernel, np.array([0.1, -0.1]))
  texts = tf.constant(["great movie", "awful awful great", "unknown"])
  before = layer(texts).numpy()
  layer.quantize("int8")
  assert layer.kernel.dtype == "int8"
  np.testing.assert_allclose(layer.kernel_scale.numpy(), [1.27 / 127, 0.5 / 127], rtol=1e-6)
  assert layer.kernel.numpy()[1].tolist() == [127, -127]
  # At most half a step a weight; "great movie" has 3 n-grams (2 words, 1 bigram unknown).
  np.testing.assert_allclose(layer(texts).numpy(), before, atol=3 * 1.27 / 127 / 2)
  assert not np.allclose(layer(texts).numpy(), before, atol=1e-7)  # Really rounded.
  clone = wide.NgramWide.from_config(layer.get_config())  # A saved int8 layer rebuilds as such.
  clone.build((None,))
  assert clone.kernel.dtype == "int8" and clone.kernel_scale.shape == (2,)


def int8_layer_keeping_every_row(vocabulary, quantized, scale, bias) -> wide.NgramWide:
  """An int8 layer of every n-gram, with these `<int8>[V+1, C]` rows (as before rows of zeros
  were left out)."""
  layer = wide.NgramWide(2, quantized.shape[1], len(vocabulary), kernel_dtype="int8")
  layer.build((None,))
  layer.set_vocabulary(vocabulary)
  layer.kernel.assign(quantized)
  layer.kernel_scale.assign(scale)
  layer.bias.assign(bias)
  return layer


def wide_case(seed: int = 0) -> tuple:
  """`(vocabulary, kernel, bias, texts)`: 3 classes, 60 % of the rows tiny, texts of known,
  unknown and repeated n-grams."""
  rng = np.random.default_rng(seed)
  words = [f"w{i}" for i in range(30)]
  vocabulary = words + [f"w{i} w{i + 1}" for i in range(29)]
  kernel = rng.normal(size=(len(vocabulary) + 1, 3)).astype(np.float32)
  tiny = rng.random(len(kernel)) < 0.6  # Rows of |int8| 0, or 1 or 2, as they round.
  kernel[tiny] *= rng.choice([1e-3, 3e-2], size=(tiny.sum(), 1))
  kernel[0] = 0
  texts = tf.constant([" ".join(rng.choice(words + ["oov", "x"], size=n)) for n in
                       rng.integers(0, 40, size=64)] + ["", "w1 w2 w1 w2 oov"])
  return vocabulary, kernel, np.array([0.3, -0.2, 0.1], np.float32), texts


@pytest.mark.parametrize("min_step", [1, 2])
def test_int8_wide_layer_leaves_out_weak_rows_and_answers_as_if_they_were_zero(min_step):
  """Step 1: the n-grams whose int8 row is zeros go, and the answers stay the same bit for
  bit. Step 2: the rows of largest |int8| 1 go too, as if they were zeros."""
  vocabulary, kernel, bias, texts = wide_case()
  quantized, scale, _ = wide.int8_rows(kernel)
  weak = np.abs(quantized[1:]).max(axis=1) < min_step
  assert 10 < weak.sum() < len(vocabulary)  # The draw has rows of both kinds.
  quantized[1:][weak] = 0
  reference = int8_layer_keeping_every_row(vocabulary, quantized, scale, bias)
  layer = wide.make_layer(2, vocabulary, kernel, bias)
  if min_step == 1:
    layer.quantize("int8")  # As Keras' Model.quantize calls it.
  else:
    layer.quantize("int8", min_step=min_step)
  assert layer.vocabulary() == [g for g, w in zip(vocabulary, weak) if not w]
  assert layer.kernel.shape == (len(vocabulary) - weak.sum() + 1, 3)
  np.testing.assert_array_equal(layer(texts).numpy(), reference(texts).numpy())


def test_bad_mode_is_a_config_error(tmp_path):
  from tfagent.errors import ConfigError
  with pytest.raises(ConfigError, match="--quantize=int2: expected one of none, int8, int4"):
    quantize.staged_export(None, CLASSES, config.ExportConfig(quantize="int2"), [], None)
  with pytest.raises(ConfigError, match="--quantize_wide_min_step=0: expected 1"):
    quantize.staged_export(None, CLASSES, config.ExportConfig(quantize="int8",
                                                              quantize_wide_min_step=0), [], None)


def check_quantized_export(cfg, result, tmp_path, reference=None) -> tuple:
  """Asserts what every int8 export must hold; returns its and the float export's variables.
  `reference`: `(keras model, float export path)` of the run's best model, when one exists."""
  report = result["quantization"]
  assert report["kept"] == "int8", report
  path = result["saved_model"]
  stored = stored_dtypes(path)
  model, float_path = reference or float_reference(cfg, tmp_path)
  float_stored = stored_dtypes(float_path)
  assert {d for d, _ in float_stored.values()} == {"float32"}
  # The embedding table is stored as int8, with the float export's shape.
  embeddings = [s for d, s in float_stored.values() if len(s) == 2 and s[1] == 64 and s[0] > 64]
  assert embeddings and all(("int8", s) in stored.values() for s in embeddings)
  size = quantize.folder_bytes(os.path.join(path, "variables"))
  float_size = quantize.folder_bytes(os.path.join(float_path, "variables"))
  assert size <= 0.4 * float_size, (size, float_size)
  assert report["variables_bytes"]["int8"] == size
  # The run's float candidate held the same weights (its object graph names differ a little).
  assert report["variables_bytes"]["float32"] == pytest.approx(float_size, rel=0.02)
  expected = tf.nn.softmax(model(tf.constant(TEXTS), training=False)).numpy()
  np.testing.assert_allclose(export_probabilities(path), expected, atol=0.02)
  got = pooled_python.clean_json(test_export.RELOAD, path, json.dumps(TEXTS),
                                 modules=("tensorflow_text",))
  np.testing.assert_allclose(np.array(got["probabilities"]), expected, atol=0.02)
  return stored, float_stored


def check_ready_for_serving(cfg, result) -> None:
  """The same saved_model_cli, warm-up and models.config checks as every export."""
  test_export.test_saved_model_cli_shows_both_signatures_as_tf_serving_reads_them((cfg, result))
  path = result["saved_model"]
  from tensorflow_serving.apis import prediction_log_pb2
  logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
          tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))]
  assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "classify_log"]
  with open(os.path.join(os.path.dirname(path), "models.config")) as f:
    assert 'name: "tiny"' in f.read()
  assert sorted(os.listdir(os.path.dirname(path))) == [  # The float candidate is gone.
      "1", "batching_parameters.txt", "models.config"]


def check_card(result) -> None:
  with open(os.path.join(result["saved_model"], "model_card.json")) as f:
    card = json.load(f)
  report = card["quantization"]
  assert report["mode"] == "int8" and report["kept"] == "int8"
  assert set(report["validation_accuracy"]) == {"float32", "int8"}
  assert report["export_bytes"]["int8"] == quantize.folder_bytes(result["saved_model"]) - sum(
      os.path.getsize(os.path.join(result["saved_model"], f))
      for f in ("model_card.json", "model_card.md"))  # Measured before the card was added.
  with open(os.path.join(result["saved_model"], "model_card.md")) as f:
    md = f.read()
  assert "## Quantization" in md and "kept the int8 export" in md
  assert f"| variables/ bytes | {report['variables_bytes']['float32']} |" in md


@pytest.mark.slow
def test_int8_lstm_export_is_smaller_stores_int8_and_answers_alike(lstm_run, lstm_gated,
                                                                   tmp_path, caplog):
  cfg, result = lstm_run
  model, staged, _, _, _ = lstm_gated  # Its kept export: the best model, exported as float.
  stored, _ = check_quantized_export(cfg, result, tmp_path, (model, staged.path))
  # LSTM cells have no quantized form: their kernels stay float32.
  assert ("float32", (64, 16)) in stored.values()
  # The run's validation figures are the kept int8 export's; Keras' float32 ones kept aside.
  assert result["validation"]["accuracy"] == pytest.approx(
      result["quantization"]["validation_accuracy"]["int8"], abs=1e-9)
  assert result["validation_float32"]["accuracy"] == pytest.approx(
      result["quantization"]["validation_accuracy"]["float32"], abs=1e-6)
  check_ready_for_serving(cfg, result)
  check_card(result)
  with caplog.at_level(logging.WARNING):  # Its best.keras is float32: said when scored.
    evaluate.run_test_split(cfg.train.model_dir, None, str(tmp_path / "eval"))
  assert ("the run exported its int8 model; checkpoints/best.keras is its float32 model, whose "
          f"figures these are. Pass --saved_model={result['saved_model']}") in caplog.text
  explain = signatures.load_signature(result["saved_model"], signatures.EXPLAIN_SIGNATURE)
  out = explain(text=tf.constant(TEXTS))
  np.testing.assert_allclose(out["probabilities"].numpy(),
                             export_probabilities(result["saved_model"]), atol=1e-6)
  assert np.all(np.isfinite(out["completeness_error"].numpy()))


@pytest.mark.slow
def test_int8_transformer_with_wide_path_quantizes_attention_and_ngrams(transformer_wide_run,
                                                                       tmp_path):
  cfg, result = transformer_wide_run
  stored, float_stored = check_quantized_export(cfg, result, tmp_path)
  float_shapes = [s for _, s in float_stored.values()]
  # Every float kernel of the attention (EinsumDense: [64, heads, head_dim]) is int8 now.
  attention = [s for s in float_shapes if len(s) == 3]
  assert attention and all(("int8", s) in stored.values() for s in attention)
  # The wide path's [V+1, 2] n-gram kernel: int8, with a float scale a class, less the
  # n-grams whose int8 row is zeros.
  ngrams = result["wide"]["vocabulary_size"] + 1
  kept = wide.int8_rows(best_model(cfg).wide.kernel.numpy())[2]
  assert ("int8", (len(kept), 2)) in stored.values() and ("float32", (ngrams, 2)) not in \
      stored.values()
  assert not any(d == "float32" and len(s) == 2 and s[0] > 64 for d, s in stored.values())
  check_ready_for_serving(cfg, result)
  # Each path alone was traced on the float32 model: filed as such, not as the export's.
  assert "paths" not in result and set(result["paths_float32"]) == {"wide", "deep"}
  assert "validation_deep" not in result and "validation_deep_float32" in result


@pytest.mark.slow
def test_gate_keeps_the_float_export_and_says_why(lstm_gated):
  """A negative gate: the int8 export would have to gain 100 points, so float32 is kept."""
  model, staged, report, logged, root = lstm_gated
  assert report["kept"] == "float32" and "--quantize_max_drop=-100" in report["reason"]
  assert "Keeping the float32 export" in logged
  assert {d for d, _ in stored_dtypes(staged.path).values()} == {"float32"}
  assert os.listdir(root / "m") == [os.path.basename(staged.path)]  # int8 one removed.
  np.testing.assert_allclose(export_probabilities(staged.path),
                             tf.nn.softmax(model(tf.constant(TEXTS))).numpy(), atol=1e-5)
  # And the float model itself was left float: the copy was quantized, not it.
  assert not any(v.dtype == "int8" for v in model.classifier.weights)
