"""One loaded SavedModel version: its SignatureDefs, warm-up, and calls."""

import dataclasses
import functools
import os
import threading
import time

import grpc
import tensorflow as tf

from tfagent import signatures
from tfagent.serving import batching, status
from tfagent.serving.batching import BatchingOptions

_GRPC_CODE = {code.value[0]: code for code in grpc.StatusCode}


@dataclasses.dataclass(frozen=True)
class LoadOptions:
  """How versions are loaded: what tensorflow_model_server's load flags set."""
  batching: BatchingOptions | None = None  # None: no batching.
  tags: frozenset = frozenset({signatures.SERVE_TAG})  # --saved_model_tags
  warmup: bool = True  # --enable_model_warmup
  warmup_iterations: int = 1  # --num_request_iterations_for_warmup (0 counts as 1)
  max_load_retries: int = 5  # --max_num_load_retries
  load_retry_interval_seconds: float = 60.0  # --load_retry_interval_micros / 1e6
  settle_seconds: float = 0.2  # A version's files must stay unchanged this long.
  freeze_heap: bool = False  # For a server process; see manager._freeze_heap.
  on_batch: object = None  # on_batch(model_name, examples): batch-size metrics.


def error_code(error: Exception) -> grpc.StatusCode:
  """The status code of an exception: its own for TF and serving errors, else UNKNOWN."""
  if isinstance(error, status.ServingError):
    return error.code
  if isinstance(error, tf.errors.OpError):
    return _GRPC_CODE.get(error.error_code, grpc.StatusCode.UNKNOWN)
  if isinstance(error, FileNotFoundError):
    return grpc.StatusCode.NOT_FOUND
  if isinstance(error, ValueError):
    return grpc.StatusCode.INVALID_ARGUMENT
  return grpc.StatusCode.UNKNOWN


def call_function(fn, inputs: dict, specs: dict) -> dict:
  """Calls a concrete function on numpy inputs; TF errors become ServingErrors."""
  try:
    out = fn(**{k: tf.constant(v, tf.as_dtype(specs[k].dtype)) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}
  except tf.errors.OpError as e:
    raise status.ServingError(error_code(e), e.message) from None
  except (TypeError, ValueError) as e:
    raise status.invalid_argument(str(e)) from None


def check_shapes(inputs: dict, signature) -> None:
  """Ranks and fixed dimensions of `inputs` against the SignatureDef (names are checked before)."""
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

  def __init__(self, name: str, version: int, path: str, options: LoadOptions = LoadOptions()):
    signatures.register_text_ops()
    self.name, self.version, self.path, self.options = name, version, path, options
    self.signature_defs = signatures.read_signature_defs(path, options.tags)
    self._loaded = tf.saved_model.load(path, tags=sorted(options.tags))
    self._functions = dict(self._loaded.signatures)
    self._batchers = {}
    self._batchers_lock = threading.Lock()

  def signature_def(self, name: str):
    """The SignatureDef called `name` ('' is serving_default), or None."""
    name = name or signatures.DEFAULT_SIGNATURE
    if name not in self._functions:
      return None
    return self.signature_defs.get(name)

  def _batcher(self, name: str, fn):
    """The signature's batcher, made once (under a lock, so racing requests share it)."""
    with self._batchers_lock:
      if name not in self._batchers:
        on_batch = self.options.on_batch
        self._batchers[name] = batching.Batcher(
            fn, self.options.batching, on_batch and functools.partial(on_batch, self.name))
      return self._batchers[name]

  def _prepare(self, signature_name: str, inputs: dict) -> tuple:
    """(unbatched call, batcher or None, batch size) after shape checks."""
    name = signature_name or signatures.DEFAULT_SIGNATURE
    signature = self.signature_def(name)
    if signature is None:
      raise status.invalid_argument(
          f'Serving signature name: "{name}" not found in signature def')
    check_shapes(inputs, signature)
    fn = functools.partial(call_function, self._functions[name], specs=signature.inputs)
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    if self.options.batching is None or len(sizes) != 1 or None in sizes:
      return fn, None, None
    return fn, self._batcher(name, fn), sizes.pop()

  def run(self, signature_name: str, inputs: dict, deadline: float | None = None) -> dict:
    """Runs one signature on `inputs` (name -> array), batched when enabled."""
    fn, batcher, size = self._prepare(signature_name, inputs)
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
    fn, batcher, size = self._prepare(signature_name, inputs)
    task = batcher.submit(inputs, size, on_done) if batcher is not None else None
    if task is None:
      return None, functools.partial(_call_before, fn, inputs, deadline)
    return batcher, task

  def warm_up(self, replay) -> int:
    """Replays assets.extra/tf_serving_warmup_requests as TF Serving does; returns the count.

    `replay(servable, prediction_log)` runs one record. Like TF Serving, a
    record that fails fails the load, and more than 1,000 records fail it too.
    """
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(self.path, signatures.WARMUP_FILE)
    if not tf.io.gfile.exists(path):
      return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      count += 1
      if count > signatures.MAX_WARMUP_RECORDS:
        raise status.invalid_argument(
            f"Number of warmup records exceeds the maximum "
            f"({signatures.MAX_WARMUP_RECORDS}) at {path}")
      try:
        log = prediction_log_pb2.PredictionLog.FromString(record)
      except Exception:  # noqa: BLE001  protobuf's DecodeError
        raise status.invalid_argument(f"Failed to parse warmup record from {path}") from None
      for _ in range(max(1, self.options.warmup_iterations)):
        replay(self, log)
    return count

  def close(self) -> None:
    with self._batchers_lock:
      for batcher in self._batchers.values():
        batcher.close()
