"""SavedModel export for TensorFlow Serving: raw strings in, labels and probabilities out."""

import contextlib
import dataclasses
import os
import uuid

from absl import logging
import keras
import tensorflow as tf

from tfagent import _compat, explain, fileio, multilabel_export, progress, signatures
from tfagent.errors import ConfigError
from tfagent.models import vocab_files
from tfagent.versions import next_version

# At most 32 texts per model call (and per request). No waiting for a batch to
# fill, as TF Serving's batching guide advises on CPU: under load requests queue
# while the previous batch runs, so batches form anyway and the serving loop's work
# overlaps the model's; one batch thread, as on 2 cores the other is the server's
# (one BiLSTM, 32 REST clients from wrk: 3,975 requests/s with timeout 0, 3,668 with 2 ms).
BATCHING_PARAMETERS = """max_batch_size { value: 32 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
"""


def check_version(export_cfg) -> None:
  """--version: 0 (the next free one) or a positive integer, as TF Serving reads folders."""
  if export_cfg.version < 0:
    raise ConfigError(f"--version={export_cfg.version}: expected 0 (the next free version) or "
                      "a positive integer; TF Serving and tfagent read versions from folders "
                      "named by integers >= 0, so this export would never be served.")


def make_serving_fns(model: keras.Model, class_names) -> tuple:
  """The export's two endpoints, `(serve, classify)`; the model is traced once, in `serve`.

  serve: `text: <string>[batch] -> {probabilities, class_ids, classes}`.
  classify: TF Serving's classify API, serialized tf.Example with `text` -> classes and
  scores; it parses the examples and calls `serve`.
  A sentence-pair model (--text_pair_field) takes `text_pair` `<string>[batch]` beside `text`,
  in both (`signatures.input_spec`).
  """
  names = tf.constant(list(class_names), tf.string)
  spec = signatures.input_spec(model)

  @tf.function(input_signature=[spec])
  def serve(text):
    probabilities = tf.nn.softmax(tf.cast(model(text, training=False), tf.float32), -1)
    class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    return {"probabilities": probabilities,   # <float32>[batch, C]
            "class_ids": class_ids,            # <int64>[batch]
            "classes": tf.gather(names, class_ids)}  # <string>[batch]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name=signatures.CLASSIFY_INPUTS)])
  def classify(inputs):
    scores = serve(signatures.example_texts(inputs, spec))["probabilities"]
    return {signatures.CLASSIFY_CLASSES: tf.tile(names[tf.newaxis], [tf.shape(scores)[0], 1]),
            signatures.CLASSIFY_SCORES: scores}  # <string>[batch, C], <float32>[batch, C]
  return serve, classify


def add_explain_endpoint(archive, model: keras.Model, class_names, steps: int) -> None:
  """Adds the explain and explain_class signatures (method predict, Keras' default) where
  the model supports them; `steps` 0 leaves them out."""
  if steps == 0:
    logging.info("No %s signatures: --explain_steps=0.", signatures.EXPLAIN_SIGNATURE)
    return
  if not explain.supported(model):
    logging.warning("No %s signature: %s has no tokenizer layer that explain.py knows.",
                    signatures.EXPLAIN_SIGNATURE, model.name)
    return
  fns = explain.make_explain_fns(model, class_names, steps)
  for name, fn in zip((signatures.EXPLAIN_SIGNATURE, signatures.EXPLAIN_CLASS_SIGNATURE), fns):
    add_endpoint(archive, name, fn)


def add_endpoint(archive, name: str, fn) -> None:
  """Adds the tf.function `fn` as endpoint `name`, so that saved_model.pb holds its graph once.

  Handed a tf.function alone, ExportArchive.write_out signs the trace it took before
  tf.saved_model.save, and the save traces `fn` again for the object graph (the trace cache
  keys on the save context's variable policy): each graph twice. With the input signature, the
  archive passes the save its own tf.function over `fn`, traced once for both.
  """
  archive.add_endpoint(name, fn, input_signature=fn.input_signature)


def set_method_name(export_dir: str, signature: str, method: str) -> None:
  """Rewrites one SignatureDef's method_name (Keras writes every one as predict).

  The fingerprint holds a checksum of saved_model.pb, so it is written anew.
  """
  saved_model = signatures.read_saved_model(export_dir)
  for meta_graph in saved_model.meta_graphs:
    meta_graph.signature_def[signature].method_name = method
  # Written anew, not opened for writing: ram:// appends to an existing file.
  fileio.write_bytes_atomically(signatures.saved_model_path(export_dir),
                                saved_model.SerializeToString())
  fileio.write_bytes_atomically(os.path.join(export_dir, "fingerprint.pb"),
                                _compat.saved_model_fingerprint(export_dir))


def write_warmup_requests(export_dir: str, model_name: str, texts) -> None:
  """Writes TF Serving's warm-up file: one predict and one classify request of `texts`
  (strings, or sentence pairs' `(text, text_pair)`)."""
  from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2
  columns = signatures.text_columns(texts)
  predict = predict_pb2.PredictRequest()
  predict.model_spec.name, predict.model_spec.signature_name = model_name, signatures.DEFAULT_SIGNATURE
  for name, column in columns.items():
    predict.inputs[name].CopyFrom(tf.make_tensor_proto(column, tf.string))
  classify = classification_pb2.ClassificationRequest()
  classify.model_spec.name, classify.model_spec.signature_name = model_name, signatures.CLASSIFY_SIGNATURE
  for row in zip(*columns.values()):
    example = classify.input.example_list.examples.add()
    for name, text in zip(columns, row):
      example.features.feature[name].bytes_list.value.append(text.encode("utf-8"))
  tf.io.gfile.makedirs(os.path.join(export_dir, "assets.extra"))
  with tf.io.TFRecordWriter(os.path.join(export_dir, signatures.WARMUP_FILE)) as writer:
    for log in (prediction_log_pb2.PredictionLog(predict_log={"request": predict}),
                prediction_log_pb2.PredictionLog(classify_log={"request": classify})):
      writer.write(log.SerializeToString())


def write_server_configs(base: str, model_name: str) -> None:
  """Writes `models.config` and `batching_parameters.txt` beside the versions.

  Paths are those of the official image (`/models/NAME`), as the README's
  `docker run` and deploy/ manifest mount them.
  """
  model_config = (f'model_config_list {{\n  config {{\n    name: "{model_name}"\n'
                  f'    base_path: "/models/{model_name}"\n'
                  '    model_platform: "tensorflow"\n  }\n}\n')
  for name, text in (("models.config", model_config),
                     ("batching_parameters.txt", BATCHING_PARAMETERS)):
    fileio.write_text_atomically(os.path.join(base, name), text)


def lookup_resources(model: keras.Model) -> list:
  """The lookup tables (and other TF resources) `model` holds, without its variables.

  `ExportArchive.track(model)` would also track every Keras variable, which the
  SavedModel then stores beside the tf.Variables the endpoints capture: each
  weight twice (keras-team/keras#23553). The endpoints' variables are tracked
  by the archive anyway; only resources need naming.
  """
  return [t for t in tf.train.TrackableView(model).descendants()
          if isinstance(t, tf.saved_model.experimental.TrackableResource)]


@dataclasses.dataclass(frozen=True)
class Staged:
  """An export written under a temporary name (`path`), to be published as `final`."""
  path: str
  final: str
  model_name: str


def write_archive(model: keras.Model, class_names, export_cfg, thresholds, path: str) -> None:
  """Writes the SavedModel of `model`'s endpoints (write_staged's) to `path`."""
  archive = keras.export.ExportArchive()
  if thresholds is None:
    serve, classify = make_serving_fns(model, class_names)
  else:  # The thresholds' variable also as a collection: multilabel_export.read_thresholds.
    serve, classify, cut = multilabel_export.make_serving_fns(model, class_names, thresholds)
    archive.add_variable_collection(multilabel_export.THRESHOLDS, [cut])
  for resource in lookup_resources(model):
    archive.track(resource)
  add_endpoint(archive, signatures.DEFAULT_SIGNATURE, serve)
  add_endpoint(archive, signatures.CLASSIFY_SIGNATURE, classify)
  if thresholds is None:
    add_explain_endpoint(archive, model, class_names, export_cfg.explain_steps)
  else:
    logging.info("No %s signature: it attributes one softmax class; a multilabel export "
                 "has none.", signatures.EXPLAIN_SIGNATURE)
  with _compat.no_default_save_signatures():  # Only the endpoints are traced.
    archive.write_out(path, verbose=False)


@progress.stage("Exporting the SavedModel")
def write_staged(model: keras.Model, class_names, export_cfg, warmup_texts=None,
                 thresholds=None) -> Staged:
  """Writes the SavedModel, its method names and warm-up file into a hidden folder.

  The folder sits beside the versions; TF Serving, which polls the base path for
  integer directories, does not see it. `warmup_texts` (a few real texts) become
  the warm-up requests TF Serving replays before serving. `thresholds` `<float>[C]`
  make a multilabel export (tfagent/multilabel_export.py); None, a multiclass one.
  """
  base = os.path.join(export_cfg.export_dir, export_cfg.model_name)
  version = export_cfg.version or next_version(base)
  final = os.path.join(base, str(version))
  if tf.io.gfile.exists(final):
    raise ConfigError(f"--version={version}: {final} already exists; pick another "
                      "version or leave --version=0 for the next free one.")
  tmp = os.path.join(base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
  tf.io.gfile.makedirs(tmp)
  try:
    with vocab_files.as_assets(model):  # Vocabularies in assets/, not graph constants.
      write_archive(model, class_names, export_cfg, thresholds, tmp)
    set_method_name(tmp, signatures.CLASSIFY_SIGNATURE, signatures.CLASSIFY_METHOD)
    write_warmup_requests(tmp, export_cfg.model_name, warmup_texts or ["warm-up"])
  except BaseException:
    fileio.remove_tree(tmp)
    raise
  return Staged(tmp, final, export_cfg.model_name)


def publish(staged: Staged) -> str:
  """Makes a complete staged export visible as its version; nothing is written into it after."""
  fileio.publish_folder(staged.path, staged.final)
  write_server_configs(os.path.dirname(staged.final), staged.model_name)
  logging.info("Exported SavedModel version %s to %s", os.path.basename(staged.final),
               staged.final)
  return staged.final


@contextlib.contextmanager
def published(staged: Staged):
  """Yields `staged` to add files to (a model card); publishes it when the block ends,
  removes it when the block fails, or when its version appeared meanwhile (another run
  exporting under the same name): an error, never a merge into that version."""
  try:
    yield staged
    if tf.io.gfile.exists(staged.final):
      raise ConfigError(
          f"{staged.final} appeared while this run scored its export (another run exporting "
          f"--model_name={staged.model_name} there?); it is left as it is. This run's backup "
          "is kept: run the same command again to export as the next free version.")
  except BaseException:
    fileio.remove_tree(staged.path)
    raise
  publish(staged)


@contextlib.contextmanager
def staged_export(model: keras.Model, class_names, export_cfg, warmup_texts=None,
                  thresholds=None):
  """Writes the export staged, yields it to add files to, then publishes it (`published`).
  `thresholds`: as write_staged's."""
  with published(write_staged(model, class_names, export_cfg, warmup_texts,
                              thresholds)) as staged:
    yield staged


def export_model(model: keras.Model, class_names, export_cfg, warmup_texts=None,
                 thresholds=None) -> str:
  """Writes `<export_dir>/<model_name>/<version>/` completely, then publishes it; its path."""
  return publish(write_staged(model, class_names, export_cfg, warmup_texts, thresholds))
