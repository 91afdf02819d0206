"""Export stage: TF Serving layout, signature, atomic versions, reload in a clean process."""

import dataclasses
import json
import os
import re
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
import pooled_python
from tfagent import config, export, signatures, versions
from tfagent.errors import ConfigError

TEXTS = ["great movie loved it", "难看 垃圾", "", "an unseen sentence 未见过"]

# Only TensorFlow and TF Text: what TF Serving has. No tfagent, keras or keras-hub.
RELOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text
assert "tfagent" not in sys.modules and "keras_hub" not in sys.modules
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "classes": [c.decode() for c in out["classes"].numpy()]}))
"""


def tensor_infos(infos) -> dict:
  """name -> (dtype name, shape) of a SignatureDef's inputs or outputs."""
  return {name: (tf.dtypes.as_dtype(info.dtype).name,
                 tuple(d.size for d in info.tensor_shape.dim))
          for name, info in infos.items()}


def test_export_writes_the_serving_signature(trained_run):
  _, result = trained_run
  path = result["saved_model"]
  assert os.path.basename(path) == "1" and os.path.isfile(os.path.join(path, "saved_model.pb"))
  sig = signatures.read_signature_defs(path)["serving_default"]
  assert tensor_infos(sig.inputs) == {"text": ("string", (-1,))}
  assert tensor_infos(sig.outputs) == {"probabilities": ("float32", (-1, 2)),
                                       "class_ids": ("int64", (-1,)),
                                       "classes": ("string", (-1,))}
  assert sig.method_name == "tensorflow/serving/predict"


@pytest.mark.slow
def test_saved_model_cli_shows_both_signatures_as_tf_serving_reads_them(trained_run):
  """The real tool once: what read_signature_defs checks in-process, as saved_model_cli says."""
  _, result = trained_run
  shown = subprocess.run(["saved_model_cli", "show", "--dir", result["saved_model"], "--all"],
                         capture_output=True, text=True, check=True).stdout
  sig = shown.split("signature_def['serving_default']")[1]
  assert "inputs['text'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in sig
  for name, dtype, shape in (("probabilities", "DT_FLOAT", "(-1, 2)"),
                             ("class_ids", "DT_INT64", "(-1)"),
                             ("classes", "DT_STRING", "(-1)")):
    assert f"outputs['{name}'] tensor_info:\n        dtype: {dtype}\n        shape: {shape}" in sig
  assert "Method name is: tensorflow/serving/predict" in sig
  sig = shown.split("signature_def['classify']")[1].split("signature_def[")[0]
  assert "inputs['inputs'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in sig
  assert "outputs['classes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1, 2)" in sig
  assert "outputs['scores'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 2)" in sig
  assert "Method name is: tensorflow/serving/classify" in sig


def keras_probabilities(cfg, texts) -> np.ndarray:
  """The in-process reference: softmax of the best checkpoint, which the export serves."""
  import keras
  model = keras.saving.load_model(os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))
  return tf.nn.softmax(model(tf.constant(texts), training=False)).numpy()


def test_export_serves_the_keras_models_probabilities(trained_run):
  cfg, result = trained_run
  expected = keras_probabilities(cfg, TEXTS)
  out = signatures.load_signature(result["saved_model"])(text=tf.constant(TEXTS))
  np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
  assert [c.decode() for c in out["classes"].numpy()] == [
      ["negative", "positive"][i] for i in expected.argmax(-1)]
  assert out["class_ids"].numpy().tolist() == expected.argmax(-1).tolist()


@pytest.mark.slow
def test_reload_in_a_clean_process_matches_in_process(trained_run):
  cfg, result = trained_run
  expected = keras_probabilities(cfg, TEXTS)
  got = pooled_python.clean_json(RELOAD, result["saved_model"], json.dumps(TEXTS),
                                 modules=("tensorflow_text",))
  np.testing.assert_allclose(np.array(got["probabilities"]), expected, atol=1e-5)
  assert got["classes"] == [["negative", "positive"][i] for i in expected.argmax(-1)]


def test_variables_hold_each_weight_once(trained_run):
  """ExportArchive.track(model) stored each weight twice, as Keras variable and as the
  tf.Variable the endpoints capture (keras-team/keras#23553)."""
  cfg, result = trained_run
  import keras
  model = keras.saving.load_model(os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))
  reader = tf.train.load_checkpoint(os.path.join(result["saved_model"], "variables", "variables"))
  stored = sum(int(np.prod(shape)) for key, shape in reader.get_variable_to_shape_map().items()
               if key.endswith("VARIABLE_VALUE"))
  assert 0 < stored <= model.count_params()


def graph_nodes(export_dir: str) -> list:
  """Every NodeDef of saved_model.pb: its graph's and its functions'."""
  graph = signatures.read_saved_model(export_dir).meta_graphs[0].graph_def
  return list(graph.node) + [n for f in graph.library.function for n in f.node_def]


def test_vocabulary_is_an_asset_not_a_graph_constant(trained_run):
  """The tokenizer's table is read from assets/ (models/vocab_files.py), not built from
  constants in saved_model.pb."""
  cfg, result = trained_run
  import keras
  model = keras.saving.load_model(os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))
  vocabulary = model.get_layer("tokenizer").vocabulary()
  with open(os.path.join(result["saved_model"], "assets", "tokenizer.txt"), encoding="utf-8") as f:
    assert f.read().splitlines() == vocabulary[2:]  # Padding and OOV are the layer's own.
  tokens = {t.encode("utf-8") for t in vocabulary[2:]}
  strings = [tf.make_ndarray(n.attr["value"].tensor).ravel().tolist()
             for n in graph_nodes(result["saved_model"])
             if n.op == "Const" and n.attr["value"].tensor.dtype == tf.string.as_datatype_enum]
  assert strings and not any(tokens.intersection(values) for values in strings)


def test_saved_model_pb_holds_each_graph_once(trained_run):
  """ExportArchive.write_out signed one trace of each endpoint and saved another (export.py
  add_endpoint): the same function bodies twice, under two names."""
  _, result = trained_run
  library = signatures.read_saved_model(result["saved_model"]).meta_graphs[0].graph_def.library
  # A trace's name less its number, and its ops: a BiLSTM's two loops differ in name only.
  bodies = [(re.sub(r"_\d+$", "", f.signature.name), tuple(sorted(n.op for n in f.node_def)))
            for f in library.function if len(f.node_def) > 20]  # Not Keras' thin wrappers.
  assert {"__inference_serve", "__inference_classify"} <= {name for name, _ in bodies}
  assert len(set(bodies)) == len(bodies)


def test_versions_increment_and_existing_version_is_refused(trained_run, tmp_path):
  cfg, result = trained_run
  import keras
  model = keras.saving.load_model(os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))
  export_cfg = config.ExportConfig(export_dir=str(tmp_path), model_name="m", explain_steps=0)
  first = export.export_model(model, ["negative", "positive"], export_cfg)
  second = export.export_model(model, ["negative", "positive"], export_cfg)
  assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
  assert sorted(os.listdir(tmp_path / "m")) == [  # No temporary directory left.
      "1", "2", "batching_parameters.txt", "models.config"]
  assert versions.resolve_saved_model(str(tmp_path / "m")) == second
  with pytest.raises(ConfigError, match="--version=1: .* already exists"):
    export.export_model(model, ["negative", "positive"],
                        config.ExportConfig(export_dir=str(tmp_path), model_name="m", version=1))
  # Another run publishes version 3 while this one, staged as 3, scores its export: an
  # error (it was TensorFlow's AlreadyExistsError, the staged folder left behind; on an
  # object store the copy would have merged into the other run's version).
  with pytest.raises(ConfigError, match=r"m/3 appeared while this run scored its export"):
    with export.staged_export(model, ["negative", "positive"], export_cfg) as staged:
      assert staged.final == str(tmp_path / "m" / "3")
      os.makedirs(staged.final)
      (tmp_path / "m" / "3" / "theirs").write_text("another run's")
  assert os.listdir(tmp_path / "m" / "3") == ["theirs"]
  assert not [n for n in os.listdir(tmp_path / "m") if n.startswith(".tmp")]


def test_resolve_saved_model_explains_a_bad_path(tmp_path):
  with pytest.raises(ConfigError, match="no SavedModel here"):
    versions.resolve_saved_model(str(tmp_path))


def test_latest_version_is_the_latest_complete_one_and_a_new_one_skips_every_number(tmp_path):
  (tmp_path / "1").mkdir()
  (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
  (tmp_path / "2").mkdir()  # A copy in progress, or a failed one: no saved_model.pb yet.
  (tmp_path / "notes").mkdir()
  (tmp_path / "\u00b2").mkdir()  # "²": a digit to str.isdigit, not to int().
  (tmp_path / "\u00b2" / "saved_model.pb").write_bytes(b"")
  # No int64 (TF Serving skips it): it was served as the latest, and status answered 500.
  (tmp_path / "99999999999999999999").mkdir()
  (tmp_path / "99999999999999999999" / "saved_model.pb").write_bytes(b"")
  assert versions.list_versions(str(tmp_path)) == {1: str(tmp_path / "1")}
  assert versions.resolve_saved_model(str(tmp_path)) == str(tmp_path / "1")
  assert versions.next_version(str(tmp_path)) == 3  # Never reuses 2.
  assert versions.next_version(str(tmp_path / "absent")) == 1


def test_a_negative_version_is_refused_before_training(corpus_dir, tmp_path, monkeypatch):
  """--version=-3 made a folder `-3` that TF Serving never serves, and `tfagent predict` on
  the base path took an older version: one error instead, before the data is read."""
  from tfagent import training  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(training, "load_data", lambda *a: pytest.fail("data read"))
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm")
  cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, version=-3))
  with pytest.raises(ConfigError, match=r"--version=-3: expected 0 \(the next free version\)"):
    training.train_and_evaluate(cfg)


def test_export_is_ready_for_tf_serving(trained_run):
  """classify signature (method fixed), warm-up requests and the server configs."""
  cfg, result = trained_run
  path = result["saved_model"]
  sig = signatures.read_signature_defs(path)["classify"]
  assert tensor_infos(sig.inputs) == {"inputs": ("string", (-1,))}
  assert tensor_infos(sig.outputs) == {"classes": ("string", (-1, 2)),
                                       "scores": ("float32", (-1, 2))}
  assert sig.method_name == "tensorflow/serving/classify"
  classify = tf.saved_model.load(path).signatures["classify"]
  example = tf.train.Example()
  example.features.feature["text"].bytes_list.value.append("great movie".encode())
  out = classify(inputs=tf.constant([example.SerializeToString()]))
  assert [c.decode() for c in out["classes"].numpy()[0]] == ["negative", "positive"]
  np.testing.assert_allclose(out["scores"].numpy(), keras_probabilities(cfg, ["great movie"]),
                             atol=1e-5)
  from tensorflow_serving.apis import prediction_log_pb2
  logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
          tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))]
  assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "classify_log"]
  assert len(logs[0].predict_log.request.inputs["text"].string_val) == 4  # Real test texts.
  base = os.path.dirname(path)
  with open(os.path.join(base, "models.config")) as f:
    assert 'name: "tiny"' in f.read()
  assert "max_batch_size" in open(os.path.join(base, "batching_parameters.txt")).read()
