"""One loaded SavedModel version (SignatureDefs, warm-up, calls), and model calls from an event
loop. As TF Serving's RunOptions.timeout_in_ms, a call past its deadline is answered
DEADLINE_EXCEEDED (504) at once, even while the model runs on (a running TensorFlow function
cannot be stopped); one still waiting for a thread never starts. Past QUEUED_PER_THREAD calls
waiting a thread, calls get UNAVAILABLE (503), as from a full batch scheduling queue."""

import asyncio
from concurrent import futures
import dataclasses
import functools
import os
import threading
import time

import grpc
import tensorflow as tf

from tfagent import signatures
from tfagent.serving.batching import Batcher, BatchingOptions
from tfagent.serving.tensors import ServingError, deadline_exceeded, invalid_argument

INLINE_BYTES = 64 << 10  # Larger requests are converted on a pool thread, off the event loop.
QUEUED_PER_THREAD = 10  # As batching's default max_enqueued_batches: 10 waiting a thread.
_C = grpc.StatusCode
_GRPC_CODE = {code.value[0]: code for code in _C}
_CODE_OF_TYPE = ((FileNotFoundError, _C.NOT_FOUND), (ValueError, _C.INVALID_ARGUMENT))


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
  freeze_heap: bool = False  # For a server process; see manager.freeze_heap.
  on_batch: object = None  # on_batch(model_name, examples): batch-size metrics.


def error_code(error: Exception) -> grpc.StatusCode:
  """The status code of an exception: its own for TF and serving errors, else by its type."""
  if isinstance(error, ServingError):
    return error.code
  if isinstance(error, tf.errors.OpError):
    return _GRPC_CODE.get(error.error_code, _C.UNKNOWN)
  return next((code for kind, code in _CODE_OF_TYPE if isinstance(error, kind)), _C.UNKNOWN)


def call_function(fn, inputs: dict, specs: dict, deadline: float | None = None) -> dict:
  """A concrete function on numpy inputs; TF errors become ServingErrors, and an answer after
  `deadline` (time.monotonic) DEADLINE_EXCEEDED."""
  try:
    out = fn(**{k: tf.constant(v, tf.as_dtype(specs[k].dtype)) for k, v in inputs.items()})
    out = {k: v.numpy() for k, v in out.items()}
  except tf.errors.OpError as e:
    raise ServingError(error_code(e), e.message) from None
  except (TypeError, ValueError) as e:
    raise invalid_argument(str(e)) from None
  if deadline is not None and time.monotonic() > deadline:
    raise deadline_exceeded()
  return out


def check_shapes(inputs: dict, signature) -> None:
  """Ranks and fixed dimensions of `inputs` against the SignatureDef (names checked before)."""
  for name, value in inputs.items():
    shape = signature.inputs[name].tensor_shape
    dims = [d.size for d in shape.dim]
    if not shape.unknown_rank and (value.ndim != len(dims) or any(
        d >= 0 and d != n for d, n in zip(dims, value.shape))):
      raise invalid_argument(f"input tensor alias: {name} has shape {list(value.shape)}; the "
                             f"signature expects {['?' if d < 0 else d for d in dims]}")


class Servable:
  """A SavedModel version loaded for serving, with one batcher per signature."""

  def __init__(self, name: str, version: int, path: str, options: LoadOptions = LoadOptions()):
    signatures.register_text_ops()
    self.name, self.version, self.path, self.options = name, version, path, options
    self.signature_defs = signatures.read_signature_defs(path, options.tags)
    self._loaded = tf.saved_model.load(path, tags=sorted(options.tags))
    self._functions = dict(self._loaded.signatures)
    self._batchers, self._lock = {}, threading.Lock()

  def signature_def(self, name: str):
    """The SignatureDef called `name` ('' is serving_default), or None."""
    name = name or signatures.DEFAULT_SIGNATURE
    return self.signature_defs.get(name) if name in self._functions else None

  def submit(self, signature_name: str, inputs: dict, deadline: float | None = None):
    """(batcher, task) once `inputs` are queued on the signature's batcher; (None, call) when
    the call is not batched (no batching, the batcher closing; with batching, inputs of mixed
    sizes are refused as TF Serving's batching session refuses them):
    `call()` then runs it, blocking, so off the event loop."""
    name = signature_name or signatures.DEFAULT_SIGNATURE
    signature = self.signature_def(name)
    if signature is None:
      raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    unbatchable = ("must have at least one input tensor" if not sizes else
                   "input tensors must have at least one dimension" if None in sizes else
                   "input tensors must have equal 0th-dimension size" if len(sizes) > 1 else "")
    if self.options.batching is not None and unbatchable:  # BatchingSession's checks.
      raise invalid_argument(f"Batching Run() {unbatchable}")
    check_shapes(inputs, signature)
    fn = functools.partial(call_function, self._functions[name], specs=signature.inputs)
    if self.options.batching is not None:
      with self._lock:  # Made once; racing requests share it.
        if name not in self._batchers:
          on_batch = self.options.on_batch
          self._batchers[name] = Batcher(
              fn, self.options.batching, on_batch and functools.partial(on_batch, self.name))
        batcher = self._batchers[name]
      task = batcher.submit(inputs, sizes.pop())
      if task is not None:
        return batcher, task
    return None, functools.partial(fn, inputs, deadline=deadline)

  def run(self, signature_name: str, inputs: dict, deadline: float | None = None) -> dict:
    """Runs one signature on `inputs` (name -> array), batched when enabled; blocks."""
    batcher, pending = self.submit(signature_name, inputs, deadline)
    return pending() if batcher is None else batcher.wait(pending, deadline)

  def warm_up(self, replay) -> int:
    """Replays assets.extra/tf_serving_warmup_requests, each record by `replay(servable, log)`;
    as TF Serving, a record that fails fails the load, and so do more than 1,000 records."""
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(self.path, signatures.WARMUP_FILE)
    if not tf.io.gfile.exists(path):
      return 0
    count = 0
    for count, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator(), 1):
      if count > signatures.MAX_WARMUP_RECORDS:
        raise invalid_argument(f"Number of warmup records exceeds the maximum "
                               f"({signatures.MAX_WARMUP_RECORDS}) at {path}")
      try:
        log = prediction_log_pb2.PredictionLog.FromString(record)
      except Exception:  # noqa: BLE001  protobuf's DecodeError
        raise invalid_argument(f"Failed to parse warmup record from {path}") from None
      for _ in range(max(1, self.options.warmup_iterations)):
        replay(self, log)
    return count

  def close(self) -> None:
    with self._lock:
      for batcher in self._batchers.values():
        batcher.close()


def _unless_late(deadline: float | None, fn, args: tuple):
  """`fn(*args)`, unless the deadline passed while the call waited for a thread."""
  if deadline is not None and time.monotonic() >= deadline:
    raise deadline_exceeded()
  return fn(*args)


def _timeout(deadline: float | None) -> float | None:
  return None if deadline is None else max(0.0, deadline - time.monotonic())


class CallPool(futures.ThreadPoolExecutor):
  """Threads for calls off the event loop: a bounded queue, and calls that keep deadlines."""

  def __init__(self, threads: int, name: str, flag: str):
    """`flag`: the server flag that sets `threads`, named when the queue is full."""
    super().__init__(threads, name)
    waiting = threads * QUEUED_PER_THREAD
    self._room = threading.BoundedSemaphore(threads + waiting)
    self._full = ("The request queue to which this call was submitted is full: "
                  f"{threads} calls running and {waiting} waiting (--{flag}={threads})")

  async def call(self, deadline: float | None, fn, *args):
    """`fn(*args)` on a thread, awaited until `deadline` (time.monotonic; None: no limit)."""
    if _timeout(deadline) == 0:
      raise deadline_exceeded()
    if not self._room.acquire(blocking=False):
      raise ServingError(grpc.StatusCode.UNAVAILABLE, self._full)
    try:
      future = self.submit(_unless_late, deadline, fn, args)
    except BaseException:
      self._room.release()
      raise
    future.add_done_callback(lambda _: self._room.release())
    try:  # On timeout wait_for cancels the future: a call not started never starts.
      return await asyncio.wait_for(asyncio.wrap_future(future), _timeout(deadline))
    except TimeoutError:
      raise deadline_exceeded() from None


async def run_async(servable, signature_name: str, inputs: dict, deadline,
                    executor: CallPool) -> dict:
  """`servable.run` for an event loop: a batched call waits on its future, not a thread; an
  unbatched one runs on `executor`, as model calls must never block the loop."""
  batcher, pending = servable.submit(signature_name, inputs, deadline)
  if batcher is None:
    return await executor.call(deadline, pending)
  try:
    return await asyncio.wait_for(asyncio.wrap_future(pending.future), _timeout(deadline))
  except TimeoutError:
    batcher.cancel(pending)
    raise deadline_exceeded() from None
