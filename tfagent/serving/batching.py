"""Dynamic batching: concurrent requests merged into one model call.

Semantics follow TF Serving's BatchingParameters: a batch closes when it holds
`max_batch_size` examples or `batch_timeout_micros` after its first request,
whichever comes first; `num_batch_threads` batches run at once; a queue longer
than `max_enqueued_batches` batches turns requests away with UNAVAILABLE.

Unlike TF Serving, one bad request does not fail its batch: a batch whose
model call fails is run again one request at a time, so each request gets its
own answer (TF Serving's BatchingSession gives every task the batch's error).
Every failure is logged, and a failing callback never stops a batch thread.
"""

import collections
import dataclasses
import os
import threading
import time

from absl import logging
import grpc
import numpy as np

from tfagent.errors import ConfigError
from tfagent.serving import protos, status


def _cpu_count() -> int:
  """Cores this process may run on: SharedBatchScheduler's default thread count."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """BatchingParameters with TF Serving's defaults (SharedBatchScheduler's options)."""
  max_batch_size: int = 1000  # Largest request; largest batch unless split.
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = dataclasses.field(default_factory=_cpu_count)
  allowed_batch_sizes: tuple = ()  # Batches are padded up to the next one.
  enable_large_batch_splitting: bool = False
  max_execution_batch_size: int = 0  # With splitting; 0 means max_batch_size.
  pad_variable_length_inputs: bool = False  # Accepted; not implemented (warned).

  @property
  def batch_limit(self) -> int:
    """Most examples in one model call."""
    if self.enable_large_batch_splitting and self.max_execution_batch_size:
      return self.max_execution_batch_size
    return self.max_batch_size


_WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
            "num_batch_threads", "enable_large_batch_splitting", "max_execution_batch_size")


def options_from_proto(params, source: str) -> BatchingOptions:
  """BatchingOptions from a BatchingParameters message; unset fields keep the defaults."""
  values = {name: getattr(params, name).value for name in _WRAPPED if params.HasField(name)}
  values["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
  values["pad_variable_length_inputs"] = params.pad_variable_length_inputs
  options = BatchingOptions(**values)
  if options.max_batch_size < 1 or options.num_batch_threads < 1:
    raise ConfigError(f"{source}: max_batch_size and num_batch_threads must be >= 1.")
  if options.max_execution_batch_size > options.max_batch_size:
    raise ConfigError(f"{source}: max_execution_batch_size "
                      f"({options.max_execution_batch_size}) must be at most max_batch_size "
                      f"({options.max_batch_size}).")
  sizes = options.allowed_batch_sizes
  if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != options.batch_limit):
    raise ConfigError(f"{source}: allowed_batch_sizes {list(sizes)} must increase and end "
                      f"with the largest batch ({options.batch_limit}).")
  if options.pad_variable_length_inputs:
    logging.warning("%s: pad_variable_length_inputs is accepted and ignored "
                    "(inputs of one batch must have equal shapes here).", source)
  return options


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingOptions:
  """Parses a BatchingParameters text proto, as --batching_parameters_file holds."""
  return options_from_proto(protos.parse_text(text, "BatchingParameters", source), source)


class _Task:
  """One request (or one slice of a split request) and a slot for its answer."""
  __slots__ = ("inputs", "size", "on_done", "done", "result", "error", "cancelled")

  def __init__(self, inputs: dict, size: int, on_done=None):
    self.inputs, self.size, self.on_done = inputs, size, on_done
    self.done = threading.Event()
    self.result = self.error = None
    self.cancelled = False


class _SplitTask(_Task):
  """A request larger than one model call, run as slices (enable_large_batch_splitting)."""
  __slots__ = ("parts", "_left", "_lock")

  def __init__(self, inputs: dict, size: int, limit: int, on_done=None):
    super().__init__(inputs, size, on_done)
    self.parts = [_Task({k: v[i:i + limit] for k, v in inputs.items()}, min(limit, size - i),
                        self._part_done) for i in range(0, size, limit)]
    self._left, self._lock = len(self.parts), threading.Lock()

  def _part_done(self, part) -> None:
    with self._lock:
      self._left -= 1
      if self._left:
        return
    errors = [p.error for p in self.parts if p.error is not None]
    if errors:
      self.error = errors[0]
    else:
      self.result = {k: np.concatenate([p.result[k] for p in self.parts])
                     for k in self.parts[0].result}
    _finish(self)


def _finish(task: _Task) -> None:
  """Wakes the task's waiter and runs its callback; a failing callback is logged, not raised."""
  task.done.set()
  if task.on_done is not None:
    try:
      task.on_done(task)
    except Exception:  # noqa: BLE001  One caller's failure must not stop the batch thread.
      logging.exception("A request's completion callback failed")


def as_serving_error(error: Exception) -> status.ServingError:
  """A model call's exception as the error its requests get (and a log line)."""
  if isinstance(error, status.ServingError):
    logging.warning("Model call failed: %s: %s", error.code.name, error.message)
    return error
  logging.error("Model call raised %s", type(error).__name__, exc_info=error)
  return status.ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


class Batcher:
  """Merges concurrent `run(inputs)` calls of one signature along dimension 0."""

  def __init__(self, fn, options: BatchingOptions, on_batch=None):
    """`fn(inputs: dict of arrays [n, ...]) -> dict of arrays [n, ...]`."""
    self.fn, self.options, self.on_batch = fn, options, on_batch
    self._queue = collections.deque()
    self._queued = 0  # Examples waiting.
    self._cond = threading.Condition()
    self._closed = False
    self._threads = [threading.Thread(target=self._work, daemon=True, name="batcher")
                     for _ in range(options.num_batch_threads)]
    for t in self._threads:
      t.start()

  def submit(self, inputs: dict, size: int, on_done=None) -> "_Task | None":
    """Queues one request; `on_done(task)` runs on a batch thread once it has an answer.

    Returns None when the batcher is closed (a version unloading): the caller
    then runs that one request unbatched.
    """
    if size > self.options.max_batch_size:
      raise status.task_size_error(size, self.options.max_batch_size)
    limit = self.options.batch_limit
    task = (_SplitTask(inputs, size, limit, on_done) if size > limit else
            _Task(inputs, size, on_done))
    parts = task.parts if isinstance(task, _SplitTask) else [task]
    with self._cond:
      if self._closed:
        return None
      if self._queued + size > self.options.max_enqueued_batches * limit:
        raise status.unavailable("The batch scheduling queue to which this task was "
                                 "submitted is full")
      self._queue.extend(parts)
      self._queued += size
      self._cond.notify(len(parts))
    return task

  def cancel(self, task: _Task) -> None:
    """Its deadline passed: drop it (or its slices) if no batch has taken it yet."""
    with self._cond:
      for part in task.parts if isinstance(task, _SplitTask) else [task]:
        part.cancelled = True
        if part in self._queue:
          self._queue.remove(part)
          self._queued -= part.size

  def run(self, inputs: dict, size: int, deadline: float | None = None) -> dict:
    """Queues one request and waits for its share of a batch's outputs."""
    task = self.submit(inputs, size)
    if task is None:
      return self.fn(inputs)
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not task.done.wait(timeout):
      self.cancel(task)
      raise status.deadline_exceeded()
    if task.error is not None:
      raise task.error
    return task.result

  def close(self) -> None:
    """Lets the threads finish the queue and exit."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()

  def _next_batch(self) -> list | None:
    """Blocks for a first task, then gathers more until full or timed out."""
    limit = self.options.batch_limit
    with self._cond:
      while not self._queue:
        if self._closed:
          return None
        self._cond.wait()
      batch, size = [], 0
      close_at = time.monotonic() + self.options.batch_timeout_micros / 1e6
      while True:
        while self._queue and size + self._queue[0].size <= limit:
          task = self._queue.popleft()
          self._queued -= task.size
          if not task.cancelled:
            batch.append(task)
            size += task.size
        remaining = close_at - time.monotonic()
        if self._queue or size >= limit or remaining <= 0 or self._closed:
          return batch
        self._cond.wait(remaining)

  def _work(self) -> None:
    while (batch := self._next_batch()) is not None:
      if batch:
        self._run_batch(batch)

  def _padded_size(self, size: int) -> int:
    """The allowed batch size `size` examples are padded to (itself if none are set)."""
    return next((s for s in self.options.allowed_batch_sizes if s >= size), size)

  def _call(self, tasks: list) -> dict:
    """One model call on the tasks' inputs, padded to an allowed size with copies of row 0."""
    size = sum(t.size for t in tasks)
    pad = self._padded_size(size) - size
    merged = {}
    for k in tasks[0].inputs:
      parts = [t.inputs[k] for t in tasks]
      if pad:
        parts.append(np.repeat(parts[0][:1], pad, axis=0))
      merged[k] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if self.on_batch:  # Every model call counts, the ones that fail too.
      try:
        self.on_batch(size + pad)
      except Exception:  # noqa: BLE001  Metrics must not fail requests.
        logging.exception("Batch-size callback failed")
    return self.fn(merged)

  def _run_batch(self, batch: list) -> None:
    """One model call for the whole batch, outputs split back by task size.

    If the call fails, each task is run alone, so a request that the model
    rejects fails by itself and the others still get their answers.
    """
    try:
      outputs = self._call(batch)
      start = 0
      for t in batch:
        t.result = {k: v[start:start + t.size] for k, v in outputs.items()}
        start += t.size
    except Exception as e:  # noqa: BLE001  Every waiting request gets an answer.
      if len(batch) == 1:
        batch[0].error = as_serving_error(e)
      else:
        logging.warning("A batch of %d requests failed (%s); running each alone", len(batch), e)
        for t in batch:
          self._run_alone(t)
    for t in batch:
      _finish(t)

  def _run_alone(self, task: _Task) -> None:
    try:
      task.result = self._call([task])
    except Exception as e:  # noqa: BLE001
      task.error = as_serving_error(e)
