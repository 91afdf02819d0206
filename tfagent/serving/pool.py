"""Model calls from an event loop: a thread pool with a bounded queue, and deadlines.

TF Serving gives each call RunOptions.timeout_in_ms (--rest_api_timeout_in_ms
over REST, the call's deadline over gRPC: http_server.cc,
prediction_service_impl.cc); past it the answer is DEADLINE_EXCEEDED, HTTP 504.
Here a call waiting for a thread is dropped once its deadline passes, before it
starts, and the caller is answered at its deadline even while the model runs
(the thread finishes that call: a running TensorFlow function cannot be
stopped). A pool lets at most QUEUED_PER_THREAD calls a thread wait; past that
a call is refused at once with UNAVAILABLE (503), as TF Serving refuses a task
whose batch scheduling queue is full.
"""

import asyncio
from concurrent import futures
import threading
import time

from tfagent.serving import status

INLINE_BYTES = 64 << 10  # Larger requests are parsed and converted on a pool, off the loop.
QUEUED_PER_THREAD = 10  # As batching's default max_enqueued_batches: 10 waiting a thread.


def queued_calls(threads: int) -> int:
  """Calls that may wait for one of `threads` before more are refused."""
  return threads * QUEUED_PER_THREAD


def _passed(deadline: float | None) -> bool:
  return deadline is not None and time.monotonic() >= deadline


def _unless_late(deadline: float | None, fn, args: tuple):
  """`fn(*args)`, unless the deadline passed while the call waited for a thread."""
  if _passed(deadline):
    raise status.deadline_exceeded()
  return fn(*args)


class CallPool(futures.ThreadPoolExecutor):
  """Threads for calls off the event loop: a bounded queue, and calls that keep deadlines."""

  def __init__(self, threads: int, name: str, flag: str):
    """`flag`: the server flag that sets `threads`, named when the queue is full."""
    super().__init__(threads, name)
    waiting = queued_calls(threads)
    self._room = threading.BoundedSemaphore(threads + waiting)
    self._full = ("The request queue to which this call was submitted is full: "
                  f"{threads} calls running and {waiting} waiting (--{flag}={threads})")

  async def call(self, deadline: float | None, fn, *args):
    """`fn(*args)` on a thread, awaited until `deadline` (time.monotonic; None: no limit)."""
    if _passed(deadline):
      raise status.deadline_exceeded()
    if not self._room.acquire(blocking=False):
      raise status.unavailable(self._full)
    try:
      future = self.submit(_unless_late, deadline, fn, args)
    except BaseException:
      self._room.release()
      raise
    future.add_done_callback(lambda _: self._room.release())
    timeout = None if deadline is None else deadline - time.monotonic()
    try:  # On timeout wait_for cancels the future: a call not started never starts.
      return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError:
      raise status.deadline_exceeded() from None


async def run_async(servable, signature_name: str, inputs: dict, deadline,
                    executor: CallPool) -> dict:
  """`servable.run` for an event loop: batched calls wait on a future, not a thread.

  The batch thread resolves the future on the loop; unbatched calls run on
  `executor`, as model calls must never block the loop.
  """
  loop = asyncio.get_running_loop()
  future = loop.create_future()

  def resolve(task):
    if not future.done():
      if task.error is not None:
        future.set_exception(task.error)
      else:
        future.set_result(task.result)
  batcher, pending = servable.submit(signature_name, inputs,
                                     lambda t: loop.call_soon_threadsafe(resolve, t), deadline)
  if batcher is None:  # Not batched: `pending` is the call, run off the loop.
    return await executor.call(deadline, pending)
  timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
  try:
    return await asyncio.wait_for(future, timeout)
  except TimeoutError:
    batcher.cancel(pending)
    raise status.deadline_exceeded() from None
