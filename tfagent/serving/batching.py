"""Dynamic batching: concurrent requests of a signature merged into one model call, as TF
Serving's BatchingParameters say: a batch closes when it holds `max_batch_size` examples or
`batch_timeout_micros` after its first request; `num_batch_threads` batches run at once; past
`max_enqueued_batches` batches queued, requests get UNAVAILABLE. Unlike TF Serving, a batch whose
model call fails runs again a request at a time, so a bad request fails alone."""

from concurrent import futures
import collections
import dataclasses
import itertools
import os
import threading
import time

from absl import logging
import grpc
import numpy as np

from tfagent.errors import ConfigError
from tfagent.serving.tensors import ServingError, deadline_exceeded, task_size_error


def cpu_count() -> int:
  """Cores this process may run on: SharedBatchScheduler's default thread count."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """BatchingParameters with TF Serving's defaults (SharedBatchScheduler's options)."""
  max_batch_size: int = 1000  # Largest request; largest batch unless split.
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = dataclasses.field(default_factory=cpu_count)
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


def options_from_proto(params, source: str) -> BatchingOptions:
  """BatchingOptions from a BatchingParameters message; unset fields keep the defaults."""
  values = {f.name: getattr(params, f.name).value for f in dataclasses.fields(BatchingOptions)
            if f.name not in ("allowed_batch_sizes", "pad_variable_length_inputs")
            and params.HasField(f.name)}
  options = BatchingOptions(**values, allowed_batch_sizes=tuple(params.allowed_batch_sizes),
                            pad_variable_length_inputs=params.pad_variable_length_inputs)
  if options.max_batch_size < 1 or options.num_batch_threads < 1:
    raise ConfigError(f"{source}: max_batch_size and num_batch_threads must be >= 1.")
  if options.max_execution_batch_size > options.max_batch_size:
    raise ConfigError(f"{source}: max_execution_batch_size ({options.max_execution_batch_size}) "
                      f"must be at most max_batch_size ({options.max_batch_size}).")
  sizes = options.allowed_batch_sizes
  if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != options.batch_limit):
    raise ConfigError(f"{source}: allowed_batch_sizes {list(sizes)} must increase and end with "
                      f"the largest batch ({options.batch_limit}).")
  if options.pad_variable_length_inputs:
    logging.warning("%s: pad_variable_length_inputs is accepted and ignored (inputs of one "
                    "batch must have equal shapes here).", source)
  return options


class Task:
  """One request, or a slice of a split one, and the future of its outputs."""
  __slots__ = ("inputs", "size", "future", "parts", "_finished")

  def __init__(self, inputs: dict, size: int, limit: int):
    self.inputs, self.size, self.future = inputs, size, futures.Future()
    self.parts = [self]
    if size > limit:  # enable_large_batch_splitting: slices, joined once all are done.
      self.parts = [Task({k: v[i:i + limit] for k, v in inputs.items()}, min(limit, size - i),
                         limit) for i in range(0, size, limit)]
      self._finished = itertools.count(1)  # next() is atomic: one slice sees the last one.
      for part in self.parts:
        part.future.add_done_callback(self._part_done)

  def _part_done(self, _) -> None:
    if next(self._finished) < len(self.parts):
      return
    try:
      if any(p.future.cancelled() for p in self.parts):
        self.future.cancel()
      elif errors := list(filter(None, (p.future.exception() for p in self.parts))):
        self.future.set_exception(errors[0])
      else:
        results = [p.future.result() for p in self.parts]
        self.future.set_result({k: np.concatenate([r[k] for r in results]) for k in results[0]})
    except futures.InvalidStateError:
      pass  # Its waiter cancelled it at its deadline: nobody wants the answer.


def as_serving_error(error: Exception) -> ServingError:
  """A model call's exception as the error its requests get (and a log line)."""
  if isinstance(error, ServingError):
    logging.warning("Model call failed: %s: %s", error.code.name, error.message)
    return error
  logging.error("Model call raised %s", type(error).__name__, exc_info=error)
  return ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


class Batcher:
  """Merges concurrent calls of one signature along dimension 0."""

  def __init__(self, fn, options: BatchingOptions, on_batch=None):
    """`fn(inputs: dict of arrays [n, ...]) -> dict of arrays [n, ...]`; `on_batch(size)`."""
    self.fn, self.options, self.on_batch = fn, options, on_batch
    self._queue = collections.deque()
    self._queued = 0  # Examples waiting.
    self._cond = threading.Condition()
    self._closed = False
    for _ in range(options.num_batch_threads):
      threading.Thread(target=self._work, daemon=True, name="batcher").start()

  def submit(self, inputs: dict, size: int) -> Task | None:
    """Queues one request; its Task's future gets the outputs. None when the batcher is
    closed (its version unloading): the caller then runs the request unbatched."""
    if size > self.options.max_batch_size:
      raise task_size_error(size, self.options.max_batch_size)
    limit = self.options.batch_limit
    task = Task(inputs, size, limit)
    with self._cond:
      if self._closed:
        return None
      if self._queued + size > self.options.max_enqueued_batches * limit:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue to which "
                           "this task was submitted is full")
      self._queue.extend(task.parts)
      self._queued += size
      self._cond.notify(len(task.parts))
    return task

  def cancel(self, task: Task) -> None:
    """Its deadline passed: drop it (or its slices) if no batch has taken it yet."""
    with self._cond:
      for part in task.parts:
        if part.future.cancel() and part in self._queue:
          self._queue.remove(part)
          self._queued -= part.size

  def run(self, inputs: dict, size: int, deadline: float | None = None) -> dict:
    """Queues one request and waits for its share of a batch's outputs."""
    task = self.submit(inputs, size)
    return self.fn(inputs) if task is None else self.wait(task, deadline)

  def wait(self, task: Task, deadline: float | None = None) -> dict:
    """The task's outputs once its batch has run; past `deadline`, dropped and an error."""
    try:
      return task.future.result(None if deadline is None else deadline - time.monotonic())
    except TimeoutError:
      self.cancel(task)
      raise deadline_exceeded() from None

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
          if task.future.set_running_or_notify_cancel():  # False: cancelled.
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

  def _call(self, tasks: list) -> dict:
    """One model call on the tasks' inputs, padded to an allowed size with copies of row 0."""
    size = sum(t.size for t in tasks)
    pad = next((s for s in self.options.allowed_batch_sizes if s >= size), size) - size
    merged = {}
    for k in tasks[0].inputs:
      parts = [t.inputs[k] for t in tasks] + ([np.repeat(tasks[0].inputs[k][:1], pad, 0)]
                                              if pad else [])
      merged[k] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if self.on_batch:  # Every model call counts, the ones that fail too.
      try:
        self.on_batch(size + pad)
      except Exception:  # noqa: BLE001  Metrics must not fail requests.
        logging.exception("Batch-size callback failed")
    return self.fn(merged)

  def _run_batch(self, batch: list) -> None:
    """One model call for the whole batch, outputs split back by task; if it fails, each
    task runs alone, so a request the model rejects fails by itself."""
    try:
      outputs = self._call(batch)
    except Exception as e:  # noqa: BLE001  Every waiting request gets an answer.
      if len(batch) == 1:
        batch[0].future.set_exception(as_serving_error(e))
        return
      logging.warning("A batch of %d requests failed (%s); running each alone", len(batch), e)
      for task in batch:
        try:
          task.future.set_result({k: v[:task.size] for k, v in self._call([task]).items()})
        except Exception as alone:  # noqa: BLE001
          task.future.set_exception(as_serving_error(alone))
      return
    start = 0
    for task in batch:
      task.future.set_result({k: v[start:start + task.size] for k, v in outputs.items()})
      start += task.size
