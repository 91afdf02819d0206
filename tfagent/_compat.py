"""The one place that touches Keras, keras-hub or TensorFlow internals.

Everything else in tfagent uses public APIs only; tests/test_compat.py greps
the package to keep it so. Each shim below says what it works around, the
versions it was checked against, and has a test in tests/test_compat.py that
fails when the internal it relies on moves or stops having the intended
effect. Process-wide state is patched only inside a `with` scope.

Checked against: keras 3.15.1, keras-hub 0.32.0, tensorflow 2.21.0 (setup.py
pins keras 3.15.* and keras-hub 0.32.*).
"""

import contextlib

import keras

CHECKED_VERSIONS = {"keras": "3.15.1", "keras_hub": "0.32.0", "tensorflow": "2.21.0"}


# --- keras: build a compiled model from an element spec ----------------------

def build_from_spec(model: keras.Model, element_spec) -> None:
  """Builds `model`'s metrics, loss and optimizer from shapes and dtypes; fit skips its build.

  Keras 3.15's TF trainer builds at the start of fit/evaluate by MEAN-reducing
  the first distributed batch across replicas (Trainer._maybe_symbolic_build),
  which fails when replicas' batches differ in shape. `Trainer._symbolic_build`
  takes a `data_batch` of KerasTensor-like specs; the per-instance override
  makes the trainer's own build a no-op for this model only (no global patch).
  Call inside `strategy.scope()`. Checked: keras 3.15.1.
  """
  model._symbolic_build(data_batch=element_spec)  # pylint: disable=protected-access
  model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None  # pylint: disable=W0212


# --- keras: scalar logs under MultiWorkerMirroredStrategy --------------------

@contextlib.contextmanager
def keras_reduce_per_replica(replacement):
  """Within the scope, Keras' TF trainer reduces step logs with `replacement`.

  `replacement(values, strategy, reduction, keras_reduce)` gets Keras' own
  `keras.src.backend.tensorflow.trainer.reduce_per_replica` as its last
  argument, to fall back on. The module attribute is restored on exit.
  Checked: keras 3.15.1 (train_function and test_function look the name up in
  that module at call time).
  """
  from keras.src.backend.tensorflow import trainer as tf_trainer  # pylint: disable=C0415
  keras_reduce = tf_trainer.reduce_per_replica

  def reduce_per_replica(values, strategy, reduction="auto"):
    return replacement(values, strategy, reduction, keras_reduce)
  tf_trainer.reduce_per_replica = reduce_per_replica
  try:
    yield
  finally:
    tf_trainer.reduce_per_replica = keras_reduce


# --- keras: the optimizer's key of a variable --------------------------------

def optimizer_variable_key(optimizer: keras.optimizers.Optimizer, variable):
  """The key under which `optimizer` knows `variable`, the same for every replica's copy.

  `update_step` receives, under a distribution strategy, one replica's
  tf.Variable rather than the Keras variable it was built with; the TF
  backend's `Optimizer._var_key` maps both (and every mirrored component) to
  the container's unique id. Checked: keras 3.15.1.
  """
  return optimizer._var_key(variable)  # pylint: disable=protected-access


# --- keras-hub: tokenizers that run TF Text ops also eagerly -----------------

def graph_only_tokenizer_kwargs() -> dict:
  """Constructor kwargs that keep a keras-hub tokenizer on its TF Text (graph) path.

  keras-hub 0.32 tokenizes eagerly in Python (the `tokenizers` package) unless
  a layer is made with the private `_allow_python_workflow=False`; the export
  serves the TF Text op, so tfagent trains on the same one. Checked:
  keras-hub 0.32.0.
  """
  return {"_allow_python_workflow": False}


def preprocessing_function(fn):
  """keras-hub's decorator for preprocessing `call`s (ragged outputs stay tensors eagerly).

  keras_hub.src.utils.tensor_utils.preprocessing_function, which keras-hub's
  own preprocessors use; it has no public name. Checked: keras-hub 0.32.0.
  """
  from keras_hub.src.utils import tensor_utils  # pylint: disable=C0415
  return tensor_utils.preprocessing_function(fn)


# --- keras: no default signature per sub-model in a SavedModel --------------

@contextlib.contextmanager
def no_default_save_signatures():
  """Within the scope, Keras models offer SavedModel no default `serving_default`.

  Keras 3.15's TF backend gives every Model a `_default_save_signature` property
  (backend/tensorflow/layer.py) that returns a new tf.function over the model's
  inputs; SavedModel's object-graph walk finds it on each Model it reaches (the
  string model, its classifier, each ensemble member) and traces it, in Keras'
  ExportArchive.write_out and again in tf.saved_model.save. An ExportArchive
  serves only its own endpoints, so those traces are unused work (about half of
  a tiny ensemble's export) and unused functions in saved_model.pb. The class
  attribute is restored on exit. Checked: keras 3.15.1, tensorflow 2.21.0.
  """
  owner = next(c for c in type.mro(keras.Model) if "_default_save_signature" in vars(c))
  original = vars(owner)["_default_save_signature"]
  owner._default_save_signature = None  # pylint: disable=protected-access
  try:
    yield
  finally:
    owner._default_save_signature = original  # pylint: disable=protected-access


# --- tensorflow: the fingerprint of a rewritten SavedModel -------------------

def saved_model_fingerprint(export_dir: str) -> bytes:
  """A serialized FingerprintDef of `export_dir` as it is now on disk.

  tf.saved_model.save writes fingerprint.pb with a checksum of saved_model.pb;
  after saved_model.pb is rewritten, TF has no public API to compute it anew.
  Checked: tensorflow 2.21.0.
  """
  # pylint: disable-next=import-outside-toplevel
  from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting
  return fingerprinting.CreateFingerprintDef(export_dir)
