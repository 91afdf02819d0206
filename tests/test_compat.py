"""tfagent/_compat.py: each shim's internal is still there, and still does what tfagent needs.

A failure here after a Keras, keras-hub or TensorFlow upgrade names the shim
to revisit; the grep test keeps every internal inside _compat.py.
"""

import contextlib
import inspect
import os
import pathlib
import re

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import tfagent
from tfagent import _compat, distribute, optim

PACKAGE = pathlib.Path(tfagent.__file__).parent
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "great", "movie"]


def tiny_classifier() -> keras.Model:
  inputs = keras.Input((4,))
  model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
  model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  return model


def test_internals_appear_only_in_compat():
  pattern = re.compile(r"keras\.src|keras_hub\.src|tensorflow\.python")
  found = [f"{path.relative_to(PACKAGE)}:{n}"
           for path in sorted(PACKAGE.rglob("*.py")) if path.name != "_compat.py"
           for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
           if pattern.search(line)]
  assert not found, f"Keras/keras-hub/TF internals outside tfagent/_compat.py: {found}"


def test_private_keras_and_tf_names_appear_only_in_compat():
  names = re.compile(r"\._(symbolic_build|maybe_symbolic_build|var_key|use_weight_decay|"
                     r"apply_weight_decay|in_multi_worker_mode|allow_python_workflow)\b|"
                     r"_allow_python_workflow")
  found = [f"{path.relative_to(PACKAGE)}:{n}"
           for path in sorted(PACKAGE.rglob("*.py")) if path.name != "_compat.py"
           for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
           if names.search(line)]
  assert not found, found


def test_checked_versions_are_the_installed_minor_versions():
  installed = {"keras": keras.__version__, "keras_hub": keras_hub.__version__,
               "tensorflow": tf.__version__}
  for name, checked in _compat.CHECKED_VERSIONS.items():
    assert installed[name].split(".")[:2] == checked.split(".")[:2], (name, installed[name])


def test_setup_pins_keras_and_keras_hub_to_the_checked_minor():
  setup = (PACKAGE.parent / "setup.py").read_text(encoding="utf-8")
  keras_minor = ".".join(_compat.CHECKED_VERSIONS["keras"].split(".")[:2])
  hub_minor = ".".join(_compat.CHECKED_VERSIONS["keras_hub"].split(".")[:2])
  assert f'"keras=={keras_minor}.*"' in setup
  assert f'"keras-hub=={hub_minor}.*"' in setup


def test_build_from_spec_builds_and_disables_the_trainers_own_build():
  from keras.src.trainers import trainer
  assert list(inspect.signature(trainer.Trainer._symbolic_build).parameters) == [
      "self", "iterator", "data_batch"]
  assert list(inspect.signature(keras.Model._maybe_symbolic_build).parameters) == [
      "self", "iterator", "data_batch"]
  model = tiny_classifier()
  spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))
  _compat.build_from_spec(model, spec)
  assert model.optimizer.built and len(model.optimizer.variables) > 2
  assert model._maybe_symbolic_build(data_batch=None) is None
  other = tiny_classifier()
  assert other._maybe_symbolic_build is not model._maybe_symbolic_build  # This model only.
  history = model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), verbose=0)
  assert np.isfinite(history.history["loss"][0])


def test_keras_reduce_per_replica_is_scoped_and_used_by_fit():
  from keras.src.backend.tensorflow import trainer as tf_trainer
  original = tf_trainer.reduce_per_replica
  assert list(inspect.signature(original).parameters) == ["values", "strategy", "reduction"]
  calls = []

  def replacement(values, strategy, reduction, keras_reduce):
    calls.append(reduction)
    return keras_reduce(values, strategy, reduction)
  model = tiny_classifier()
  with _compat.keras_reduce_per_replica(replacement):
    model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), verbose=0)
  assert calls, "Keras' fit no longer reduces its logs through reduce_per_replica"
  assert tf_trainer.reduce_per_replica is original  # Restored on exit.
  calls.clear()
  model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), verbose=0)
  assert not calls


def test_keras_logs_agree_leaves_keras_alone_off_multi_worker():
  from keras.src.backend.tensorflow import trainer as tf_trainer
  original = tf_trainer.reduce_per_replica
  with distribute.keras_logs_agree(tf.distribute.get_strategy()):
    assert tf_trainer.reduce_per_replica is original


def test_num_workers_counts_chief_and_workers_from_the_public_resolver():
  class Strategy:
    cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"chief": ["a:1"], "worker": ["b:1", "c:1"], "evaluator": ["d:1"]}))
  assert distribute.num_workers(Strategy()) == 3
  assert distribute.num_workers(tf.distribute.get_strategy()) == 1


def test_optimizer_variable_key_is_the_same_for_keras_variable_and_replica_copy():
  assert "variable" in inspect.signature(keras.optimizers.Adam._var_key).parameters
  strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
  with strategy.scope():
    variable = keras.Variable(np.ones(3, "float32"), name="w")
    other = keras.Variable(np.ones(3, "float32"), name="w")
  opt = optim.TwoRateAdamW(1e-3)
  copies = [variable, variable.value] + list(strategy.experimental_local_results(variable.value))
  keys = {_compat.optimizer_variable_key(opt, v) for v in copies}
  assert len(keys) == 1
  assert _compat.optimizer_variable_key(opt, other) not in keys


class Tokenize(keras.layers.Layer):
  """`<string>[batch] -> <int32>[batch, len]` through a nested keras-hub tokenizer."""

  def __init__(self, tokenizer, **kwargs):
    super().__init__(**kwargs)
    self.tokenizer = tokenizer

  @_compat.preprocessing_function
  def call(self, text):
    return tf.cast(self.tokenizer(text), tf.int32).to_tensor(0)


def test_graph_only_tokenizer_kwargs_select_the_tf_text_path():
  from keras_hub.src.layers.preprocessing import preprocessing_layer
  assert "_allow_python_workflow" in inspect.getsource(preprocessing_layer.PreprocessingLayer)
  plain = keras_hub.models.BertTokenizer(vocabulary=VOCAB)
  graph = keras_hub.models.BertTokenizer(vocabulary=VOCAB,
                                         **_compat.graph_only_tokenizer_kwargs())
  assert plain._use_tf_workflow() is False
  assert graph._use_tf_workflow() is True
  assert Tokenize(graph)(tf.constant(["great movie", "movie"])).numpy().tolist() == [[5, 6], [6, 0]]


def test_preprocessing_function_keeps_nested_tokenizer_outputs_as_tensors_eagerly():
  from keras_hub.src.utils import tensor_utils
  assert list(inspect.signature(tensor_utils.preprocessing_function).parameters) == ["fn"]
  graph = keras_hub.models.BertTokenizer(vocabulary=VOCAB,
                                         **_compat.graph_only_tokenizer_kwargs())
  out = Tokenize(graph)(tf.constant(["great movie"]))
  assert isinstance(out, tf.Tensor) and out.numpy().tolist() == [[5, 6]]

  class Undecorated(Tokenize):
    def call(self, text):
      return tf.cast(self.tokenizer(text), tf.int32).to_tensor(0)
  with pytest.raises((AttributeError, TypeError, ValueError)):  # A list comes back without it.
    Undecorated(graph)(tf.constant(["great movie"]))


def test_saved_model_fingerprint_matches_tf_and_follows_a_rewrite(tmp_path):
  module = tf.Module()
  module.v = tf.Variable(1.0)
  module.f = tf.function(lambda x: x * module.v, input_signature=[tf.TensorSpec([], tf.float32)])
  path = str(tmp_path / "m")
  tf.saved_model.save(module, path, signatures={"serving_default": module.f})
  written = tf.saved_model.experimental.read_fingerprint(path)
  from tensorflow.core.protobuf import fingerprint_pb2
  ours = fingerprint_pb2.FingerprintDef.FromString(_compat.saved_model_fingerprint(path))
  assert ours.saved_model_checksum == written.saved_model_checksum
  assert ours.signature_def_hash == written.signature_def_hash
  # What export.set_method_name does: rewrite saved_model.pb, then the fingerprint.
  pb = os.path.join(path, "saved_model.pb")
  from tensorflow.core.protobuf import saved_model_pb2
  proto = saved_model_pb2.SavedModel.FromString(open(pb, "rb").read())
  proto.meta_graphs[0].signature_def["serving_default"].method_name = "tensorflow/serving/classify"
  with open(pb, "wb") as f:
    f.write(proto.SerializeToString())
  with open(os.path.join(path, "fingerprint.pb"), "wb") as f:
    f.write(_compat.saved_model_fingerprint(path))
  again = tf.saved_model.experimental.read_fingerprint(path)
  assert again.saved_model_checksum != written.saved_model_checksum
  assert again.graph_def_program_hash == written.graph_def_program_hash
  tf.saved_model.load(path)  # Loads with the new fingerprint.


class CountingDense(keras.layers.Dense):
  """A Dense layer that counts the times its call runs in Python (once per trace)."""
  calls = 0

  def call(self, inputs):
    CountingDense.calls += 1
    return super().call(inputs)


def export_traces(path: str, scoped: bool) -> tuple:
  """(model, traces of its layer during write_out) when it is exported as
  export.export_model does: the model tracked, one tf.function endpoint."""
  inputs = keras.Input((4,))
  model = keras.Model(inputs, CountingDense(2)(inputs))
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("serve", tf.function(lambda x: model(x),
                                            input_signature=[tf.TensorSpec([None, 4])]))
  CountingDense.calls = 0
  with _compat.no_default_save_signatures() if scoped else contextlib.nullcontext():
    archive.write_out(path, verbose=False)
  return model, CountingDense.calls


def test_no_default_save_signatures_skips_tracing_each_models_serving_default(tmp_path):
  _, keras_traces = export_traces(str(tmp_path / "keras"), scoped=False)
  model, traces = export_traces(str(tmp_path / "ours"), scoped=True)
  # Keras traces the tracked model's default signature too (if not, the shim is not needed).
  assert keras_traces == traces + 1
  # Restored on exit, and the scoped export still serves its endpoint.
  assert isinstance(model._default_save_signature, tf.types.experimental.GenericFunction)
  x = np.ones((2, 4), np.float32)
  loaded = tf.saved_model.load(str(tmp_path / "ours"))
  np.testing.assert_allclose(loaded.serve(x), model(x), rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_two_rate_adamw_matches_keras_adamw_on_the_head(scale):
  """On head variables (rate scale 1) one step equals keras.optimizers.AdamW's, decay included."""
  keras.utils.set_random_seed(0)
  kernel = keras.Variable(np.random.RandomState(0).randn(3, 2).astype("float32"), name="kernel")
  bias = keras.Variable(np.ones(2, "float32"), name="bias")
  ref = [keras.Variable(kernel.numpy(), name="kernel"), keras.Variable(bias.numpy(), name="bias")]
  grads = [np.full((3, 2), 0.5, "float32"), np.full(2, -0.25, "float32")]
  ours = optim.TwoRateAdamW(0.1, weight_decay=0.5, backbone_scale=scale)
  ours.set_backbone_variables([])
  ours.exclude_from_weight_decay(var_names=["bias"])
  theirs = keras.optimizers.AdamW(0.1, weight_decay=0.5)
  theirs.exclude_from_weight_decay(var_names=["bias"])
  for _ in range(3):
    ours.apply(grads, [kernel, bias])
    theirs.apply(grads, ref)
  np.testing.assert_allclose(kernel.numpy(), ref[0].numpy(), rtol=1e-6)
  np.testing.assert_allclose(bias.numpy(), ref[1].numpy(), rtol=1e-6)
