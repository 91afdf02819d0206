"""One loaded SavedModel version: its SignatureDefs, warm-up, and calls."""

import functools
import os
import time

import grpc
import tensorflow as tf

from tfagent.serving import batching, status

DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit.
_GRPC_CODE = {code.value[0]: code for code in grpc.StatusCode}


def read_signature_defs(path: str) -> dict:
  """The SignatureDef protos of the `serve` MetaGraph, as TF Serving reports them."""
  from tensorflow.core.protobuf import saved_model_pb2
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  for meta_graph in saved_model.meta_graphs:
    if "serve" in meta_graph.meta_info_def.tags:
      return dict(meta_graph.signature_def)
  raise ValueError(f"{path}: no MetaGraph tagged 'serve'")


def call_function(fn, inputs: dict, specs: dict) -> dict:
  """Calls a concrete function on numpy inputs; TF errors become ServingErrors."""
  try:
    out = fn(**{k: tf.constant(v, tf.as_dtype(specs[k].dtype)) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}
  except tf.errors.OpError as e:
    raise status.ServingError(_GRPC_CODE.get(e.error_code, grpc.StatusCode.UNKNOWN),
                              e.message) from None
  except (TypeError, ValueError) as e:
    raise status.invalid_argument(str(e)) from None


def check_inputs(inputs: dict, signature) -> None:
  """Names, ranks and fixed dimensions of `inputs` against the SignatureDef."""
  expected, sent = set(signature.inputs), set(inputs)
  if expected != sent:
    raise status.invalid_argument(
        f"input size does not match signature: {len(sent)}!={len(expected)} "
        f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
        f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
        f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
  for name, value in inputs.items():
    shape = signature.inputs[name].tensor_shape
    if shape.unknown_rank:
      continue
    dims = [d.size for d in shape.dim]
    if value.ndim != len(dims) or any(d >= 0 and d != n for d, n in zip(dims, value.shape)):
      raise status.invalid_argument(
          f"input tensor alias: {name} has shape {list(value.shape)}; the signature "
          f"expects {['?' if d < 0 else d for d in dims]}")


def _call_before(fn, inputs: dict, deadline: float | None) -> dict:
  """`fn(inputs)`; DEADLINE_EXCEEDED if it ends after `deadline` (time.monotonic)."""
  result = fn(inputs)
  if deadline is not None and time.monotonic() > deadline:
    raise status.deadline_exceeded()
  return result


class Servable:
  """A SavedModel version loaded for serving, with one batcher per signature."""

  def __init__(self, name: str, version: int, path: str,
               batching_options: batching.BatchingOptions | None = None, on_batch=None):
    try:
      import tensorflow_text  # noqa: F401  Registers the ops a BERT export uses.
    except ImportError:
      pass
    self.name, self.version, self.path = name, version, path
    self.signature_defs = read_signature_defs(path)
    self._loaded = tf.saved_model.load(path)
    self._functions = dict(self._loaded.signatures)
    self._batching, self._on_batch = batching_options, on_batch
    self._batchers = {}

  def signature(self, name: str):
    """The SignatureDef called `name` ('' is serving_default)."""
    name = name or DEFAULT_SIGNATURE
    if name not in self._functions or name not in self.signature_defs:
      raise status.invalid_argument(
          f'Serving signature name: "{name}" not found in signature def')
    return self.signature_defs[name]

  def _prepare(self, signature_name: str, inputs: dict) -> tuple:
    """(signature name, unbatched call, batcher or None, batch size) after input checks."""
    name = signature_name or DEFAULT_SIGNATURE
    signature = self.signature(name)
    check_inputs(inputs, signature)
    fn = lambda x: call_function(self._functions[name], x, signature.inputs)  # noqa: E731
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    if self._batching is None or len(sizes) != 1 or None in sizes:
      return name, fn, None, None
    if name not in self._batchers:  # Races create at most a spare batcher, harmlessly.
      self._batchers[name] = batching.Batcher(
          fn, self._batching, lambda n: self._on_batch and self._on_batch(self.name, n))
    return name, fn, self._batchers[name], sizes.pop()

  def run(self, signature_name: str, inputs: dict, deadline: float | None = None) -> dict:
    """Runs one signature on `inputs` (name -> array), batched when enabled."""
    _, fn, batcher, size = self._prepare(signature_name, inputs)
    if batcher is not None:
      return batcher.run(inputs, size, deadline)
    return _call_before(fn, inputs, deadline)

  def submit(self, signature_name: str, inputs: dict, on_done,
             deadline: float | None = None) -> tuple:
    """Queues `inputs` on the signature's batcher without waiting.

    Returns `(batcher, task)` once queued. When this call is not batched (no
    batching, inputs of mixed sizes, or the batcher closing), returns `(None,
    call)`: `call()` runs it unbatched, blocking, so off the event loop.
    """
    _, fn, batcher, size = self._prepare(signature_name, inputs)
    task = batcher.submit(inputs, size, on_done) if batcher is not None else None
    if task is None:
      return None, functools.partial(_call_before, fn, inputs, deadline)
    return batcher, task

  def warm_up(self) -> int:
    """Replays assets.extra/tf_serving_warmup_requests, as TF Serving does; returns the count."""
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(self.path, WARMUP_FILE)
    if not os.path.isfile(path):
      return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS).as_numpy_iterator():
      log = prediction_log_pb2.PredictionLog.FromString(record)
      kind = log.WhichOneof("log_type")
      if kind == "predict_log":
        request = log.predict_log.request
        self.run(request.model_spec.signature_name,
                 {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
      elif kind == "classify_log":
        from tfagent.serving import api
        api.run_classify(self, log.classify_log.request)
      else:
        raise ValueError(f"{path}: warm-up log type {kind!r} is not supported")
      count += 1
    return count

  def close(self) -> None:
    for batcher in self._batchers.values():
      batcher.close()
