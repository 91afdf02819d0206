"""Dynamic batching: concurrent requests merged into one model call.

Semantics follow TF Serving's BatchingParameters: a batch closes when it holds
`max_batch_size` examples or `batch_timeout_micros` after its first request,
whichever comes first; `num_batch_threads` batches run at once; a queue longer
than `max_enqueued_batches` batches turns requests away with UNAVAILABLE.
"""

import collections
import dataclasses
import threading
import time

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2  # noqa: F401  Registers wrappers.proto in the pool.
import grpc
import numpy as np

from tfagent.errors import ConfigError
from tfagent.serving import status


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """TF Serving's defaults (session_bundle_config.proto, batching_session.h)."""
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 100
  num_batch_threads: int = 4


def _batching_parameters_class():
  """BatchingParameters, built from its field list: the PyPI package does not ship it."""
  wrapper = {"max_batch_size": "Int64Value", "batch_timeout_micros": "Int64Value",
             "max_enqueued_batches": "Int64Value", "num_batch_threads": "Int64Value",
             "thread_pool_name": "StringValue"}
  msg = descriptor_pb2.DescriptorProto(name="BatchingParameters")
  F = descriptor_pb2.FieldDescriptorProto
  for number, (name, kind) in enumerate(wrapper.items(), 1):
    msg.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                  type_name=f".google.protobuf.{kind}")
  msg.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
  msg.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL,
                label=F.LABEL_OPTIONAL)
  msg.field.add(name="enable_large_batch_splitting", number=8, type=F.TYPE_BOOL,
                label=F.LABEL_OPTIONAL)
  file = descriptor_pb2.FileDescriptorProto(
      name="tfagent_batching_parameters.proto", package="tensorflow.serving.tfagent",
      dependency=["google/protobuf/wrappers.proto"], message_type=[msg])
  pool = descriptor_pool.Default()
  try:
    pool.Add(file)
  except TypeError:  # Already added by an earlier call.
    pass
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.tfagent.BatchingParameters"))


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingOptions:
  """Parses a BatchingParameters text proto; unset fields keep TF Serving's defaults."""
  params = _batching_parameters_class()()
  try:
    text_format.Parse(text, params)
  except text_format.ParseError as e:
    raise ConfigError(f"{source}: {e}; expected a BatchingParameters text proto, e.g. "
                      "'max_batch_size { value: 32 }'.") from None
  values = {f.name: getattr(params, f.name).value for f in dataclasses.fields(BatchingOptions)
            if params.HasField(f.name)}
  options = BatchingOptions(**values)
  if options.max_batch_size < 1 or options.num_batch_threads < 1:
    raise ConfigError(f"{source}: max_batch_size and num_batch_threads must be >= 1.")
  return options


class _Task:
  """One request: its inputs, example count, and a slot for the answer."""
  __slots__ = ("inputs", "size", "on_done", "done", "result", "error", "cancelled")

  def __init__(self, inputs: dict, size: int, on_done=None):
    self.inputs, self.size, self.on_done = inputs, size, on_done
    self.done = threading.Event()
    self.result = self.error = None
    self.cancelled = False


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
    """Queues one request; `on_done(task)` runs on the batch thread once it has an answer.

    Returns None when the batcher is closed (a version unloading): the caller
    then runs that one request unbatched.
    """
    if size > self.options.max_batch_size:
      raise status.invalid_argument(f"Task size {size} is larger than maximum input batch "
                                    f"size {self.options.max_batch_size}")
    task = _Task(inputs, size, on_done)
    with self._cond:
      if self._closed:
        return None
      limit = self.options.max_enqueued_batches * self.options.max_batch_size
      if self._queued + size > limit:
        raise status.unavailable("The batch scheduling queue to which this task was "
                                 "submitted is full")
      self._queue.append(task)
      self._queued += size
      self._cond.notify()
    return task

  def cancel(self, task: "_Task") -> None:
    """Its deadline passed: drop it if no batch has taken it yet."""
    with self._cond:
      task.cancelled = True
      if task in self._queue:
        self._queue.remove(task)
        self._queued -= task.size

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
    with self._cond:
      while not self._queue:
        if self._closed:
          return None
        self._cond.wait()
      batch, size = [], 0
      close_at = time.monotonic() + self.options.batch_timeout_micros / 1e6
      while True:
        while self._queue and size + self._queue[0].size <= self.options.max_batch_size:
          task = self._queue.popleft()
          self._queued -= task.size
          if not task.cancelled:
            batch.append(task)
            size += task.size
        remaining = close_at - time.monotonic()
        if (self._queue or size >= self.options.max_batch_size or remaining <= 0
            or self._closed):
          return batch
        self._cond.wait(remaining)

  def _work(self) -> None:
    while (batch := self._next_batch()) is not None:
      if batch:
        self._run_batch(batch)

  def _run_batch(self, batch: list) -> None:
    """One model call for the whole batch; outputs split back by task size."""
    try:
      names = batch[0].inputs.keys()
      merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in names}
      outputs = self.fn(merged)
      if self.on_batch:
        self.on_batch(sum(t.size for t in batch))
      start = 0
      for t in batch:
        t.result = {k: v[start:start + t.size] for k, v in outputs.items()}
        start += t.size
    except Exception as e:  # noqa: BLE001  Every waiting request gets the error.
      for t in batch:
        t.error = e if isinstance(e, status.ServingError) else status.ServingError(
            grpc.StatusCode.INTERNAL, str(e))
    for t in batch:
      t.done.set()
      if t.on_done:
        t.on_done(t)
