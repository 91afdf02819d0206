"""Dynamic batching and config parsing, in-process on plain numpy functions (fast).

Thread order is set with events, never with sleeps, so these tests mean the
same on a loaded machine."""

import threading
import time

import grpc
import numpy as np
import pytest

from tfagent.errors import ConfigError
from tfagent.serving import batching, manager, options as serve_options, tensors

WAIT = 3  # Seconds an event may take on a busy machine before the test fails.


def parse_batching_parameters(text: str, source: str = "batching parameters"):
  """BatchingOptions of a BatchingParameters text proto, as --batching_parameters_file holds."""
  params = serve_options.parse_text(text, "BatchingParameters", source)
  return batching.options_from_proto(params, source)


def record_calls():
  calls = []

  def fn(inputs):
    calls.append(len(inputs["x"]))
    return {"y": inputs["x"] * 2}
  return fn, calls


class Gate:
  """A model function that signals each call and blocks until released."""

  def __init__(self, fail_on=None):
    self.entered, self.release = threading.Event(), threading.Event()
    self.calls, self.fail_on = [], fail_on

  def __call__(self, inputs):
    self.calls.append(inputs["x"].tolist())
    self.entered.set()
    assert self.release.wait(WAIT)
    if self.fail_on is not None and self.fail_on in inputs["x"]:
      raise RuntimeError(f"model cannot take {self.fail_on}")
    return {"y": inputs["x"] * 2}


def in_thread(fn, *args):
  """Runs fn(*args) in a thread; returns (thread, box) where box gets 'result' or 'error'."""
  box = {}

  def run():
    try:
      box["result"] = fn(*args)
    except Exception as e:  # noqa: BLE001  The test inspects it.
      box["error"] = e
  thread = threading.Thread(target=run)
  thread.start()
  return thread, box


def wait_queued(b: batching.Batcher, examples: int) -> None:
  deadline = time.monotonic() + WAIT
  while b._queued < examples:  # pylint: disable=protected-access
    assert time.monotonic() < deadline, "request never queued"
    time.sleep(0.001)


def test_concurrent_requests_share_one_model_call_and_get_their_own_rows():
  gate = Gate()
  b = batching.Batcher(gate, batching.BatchingOptions(max_batch_size=8, num_batch_threads=1))
  first = in_thread(b.run, {"x": np.array([-1])}, 1)
  assert gate.entered.wait(WAIT)  # The only batch thread is busy with the first request...
  clients = [in_thread(b.run, {"x": np.array([i, i + 100])}, 2) for i in range(4)]
  wait_queued(b, 8)  # ...while four requests of two queue up,
  gate.release.set()
  for thread, _ in [first] + clients:
    thread.join(WAIT)
  b.close()
  assert gate.calls == [[-1], [0, 100, 1, 101, 2, 102, 3, 103]]  # then run as one batch,
  assert [box["result"]["y"].tolist() for _, box in clients] == [  # each answered its rows.
      [2 * i, 2 * (i + 100)] for i in range(4)]


def test_a_lone_request_waits_at_most_the_batch_timeout():
  fn, calls = record_calls()
  b = batching.Batcher(fn, batching.BatchingOptions(max_batch_size=32,
                                                    batch_timeout_micros=50_000))
  started = time.monotonic()
  assert b.run({"x": np.array([1])}, 1)["y"].tolist() == [2]
  assert 0.04 < time.monotonic() - started < WAIT and calls == [1]
  b.close()


def test_oversized_task_full_queue_and_deadline_are_tf_serving_errors():
  gate = Gate()
  b = batching.Batcher(gate, batching.BatchingOptions(max_batch_size=2, max_enqueued_batches=1,
                                                      num_batch_threads=1))
  with pytest.raises(tensors.ServingError, match="Task size 3 is larger than maximum input "
                     "batch size 2") as e:
    b.run({"x": np.arange(3)}, 3)
  assert e.value.http_status == 400
  busy = in_thread(b.run, {"x": np.arange(2)}, 2)
  assert gate.entered.wait(WAIT)  # The only batch thread is taken.
  with pytest.raises(tensors.ServingError) as e:  # Queued, and its deadline passes.
    b.run({"x": np.arange(2)}, 2, deadline=time.monotonic() + 0.05)
  assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and e.value.http_status == 504
  filler = in_thread(b.run, {"x": np.arange(2)}, 2)
  wait_queued(b, 2)  # One batch's worth waits: the queue is full.
  with pytest.raises(tensors.ServingError, match="queue .* is full") as e:
    b.run({"x": np.arange(2)}, 2)
  assert e.value.http_status == 503
  gate.release.set()
  for thread, box in (busy, filler):
    thread.join(WAIT)
    assert box["result"]["y"].tolist() == [0, 2]
  b.close()


def test_a_model_error_in_a_batch_fails_only_its_request_and_the_thread_serves_on(caplog):
  # The model refuses any batch holding 7: run alone, the other requests succeed.
  gate = Gate(fail_on=7)
  b = batching.Batcher(gate, batching.BatchingOptions(max_batch_size=8, num_batch_threads=1))
  first = in_thread(b.run, {"x": np.array([0])}, 1)
  assert gate.entered.wait(WAIT)
  clients = [in_thread(b.run, {"x": np.array([v])}, 1) for v in (5, 7, 9)]
  wait_queued(b, 3)
  gate.release.set()
  for thread, _ in [first] + clients:
    thread.join(WAIT)
  good, bad, other = (box for _, box in clients)
  assert good["result"]["y"].tolist() == [10] and other["result"]["y"].tolist() == [18]
  assert bad["error"].code == grpc.StatusCode.INTERNAL
  assert "model cannot take 7" in bad["error"].message  # Its own error, nobody else's.
  assert gate.calls[1] == [5, 7, 9] and sorted(gate.calls[2:]) == [[5], [7], [9]]
  assert "model cannot take 7" in caplog.text  # Logged, not swallowed.
  assert b.run({"x": np.array([4])}, 1)["y"].tolist() == [8]  # The next request is served.
  b.close()


def test_a_failing_completion_callback_does_not_stop_the_batch_thread(caplog):
  fn, _ = record_calls()
  b = batching.Batcher(fn, batching.BatchingOptions(max_batch_size=4, num_batch_threads=1))
  done = threading.Event()

  def explode(task):
    raise RuntimeError("callback blew up")
  b.submit({"x": np.array([1])}, 1).future.add_done_callback(explode)
  b.submit({"x": np.array([2])}, 1).future.add_done_callback(lambda _: done.set())
  assert done.wait(WAIT)  # The same (only) thread went on to the next request.
  assert b.run({"x": np.array([3])}, 1)["y"].tolist() == [6]
  assert "callback blew up" in caplog.text
  b.close()


def test_large_batch_splitting_runs_a_big_request_in_slices():
  fn, calls = record_calls()
  options = parse_batching_parameters(
      "max_batch_size { value: 10 }\nenable_large_batch_splitting { value: true }\n"
      "max_execution_batch_size { value: 4 }\nnum_batch_threads { value: 1 }\n")
  b = batching.Batcher(fn, options)
  assert b.run({"x": np.arange(10)}, 10)["y"].tolist() == list(range(0, 20, 2))
  assert max(calls) <= 4 and sum(calls) == 10
  b.close()


def test_a_split_request_cancelled_while_its_slices_run_ends_quietly(caplog):
  # asyncio.wait_for cancels the request's future at its deadline; slices already running
  # still finish, and must not fail setting the cancelled future (a logged traceback).
  gate = Gate()
  b = batching.Batcher(gate, batching.BatchingOptions(
      max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=4,
      num_batch_threads=2))
  task = b.submit({"x": np.arange(8)}, 8)
  deadline = time.monotonic() + WAIT
  while not all(part.future.running() for part in task.parts):
    assert time.monotonic() < deadline, "slices never ran"
    time.sleep(0.001)
  assert task.future.cancel()  # What the event loop does at the deadline.
  b.cancel(task)
  gate.release.set()
  assert [part.future.result(WAIT)["y"].tolist() for part in task.parts] == [
      [0, 2, 4, 6], [8, 10, 12, 14]]
  b.close()
  for thread in threading.enumerate():  # Done with the slices' callbacks too.
    if thread.name == "batcher":
      thread.join(WAIT)
  assert task.future.cancelled() and "Traceback" not in caplog.text


def test_batches_are_padded_to_the_allowed_sizes():
  fn, calls = record_calls()
  b = batching.Batcher(fn, batching.BatchingOptions(max_batch_size=8, num_batch_threads=1,
                                                    allowed_batch_sizes=(2, 4, 8)))
  assert b.run({"x": np.arange(3)}, 3)["y"].tolist() == [0, 2, 4]  # Padding cut off.
  assert calls == [4]
  b.close()


def test_with_batching_inputs_of_other_sizes_are_refused_as_tf_serving_refuses_them(tmp_path):
  """TF Serving's batching session checks every signature's inputs (batching_util.h): they
  ran unbatched here, b broadcast against a's two rows, and answered 200."""
  from serving_util import write_synthetic_model  # pylint: disable=import-outside-toplevel
  from tfagent.serving import servable  # pylint: disable=import-outside-toplevel
  path = write_synthetic_model(str(tmp_path / "1"))
  batched = servable.Servable("synth", 1, path, servable.LoadOptions(
      batching=batching.BatchingOptions(max_batch_size=8, num_batch_threads=1)))
  plain = servable.Servable("synth", 1, path)
  mixed = {"a": np.array([1, 2]), "b": np.array([b"xyz"], dtype=object)}
  scalars = {"a": np.array(1), "b": np.array(b"xyz", dtype=object)}
  try:
    for inputs, message in ((mixed, "must have equal 0th-dimension size"),
                            (scalars, "must have at least one dimension")):
      with pytest.raises(tensors.ServingError, match=f"Batching Run\\(\\) input tensors "
                         f"{message}") as e:
        batched.run("pair", inputs)
      assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    np.testing.assert_array_equal(plain.run("pair", mixed)["n"], [5, 7])  # Unbatched: runs.
    same = {"a": np.array([1, 2]), "b": np.array([b"x", b"yz"], dtype=object)}
    np.testing.assert_array_equal(batched.run("pair", same)["n"], [3, 6])
  finally:
    batched.close()


def test_batching_parameters_text_proto_and_tf_serving_defaults():
  opts = parse_batching_parameters(
      "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
      "num_batch_threads { value: 2 }\nthread_pool_name { value: 'p' }\n")
  assert (opts.max_batch_size, opts.batch_timeout_micros, opts.num_batch_threads,
          opts.max_enqueued_batches) == (32, 2000, 2, 10)
  # SharedBatchScheduler's defaults: 1000 a batch, no timeout, 10 batches queued, a thread a core.
  default = parse_batching_parameters("")
  assert (default.max_batch_size, default.batch_timeout_micros, default.max_enqueued_batches,
          default.num_batch_threads) == (1000, 0, 10, len(__import__("os").sched_getaffinity(0)))
  with pytest.raises(ConfigError, match="f.txt: .*max_batch_sise"):
    parse_batching_parameters("max_batch_sise { value: 3 }", "f.txt")
  with pytest.raises(ConfigError, match="allowed_batch_sizes"):
    parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")


def test_model_config_file_and_version_policies(tmp_path):
  models = manager.parse_model_config("""
    model_config_list {
      config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 1 versions: 3 } }
               version_labels { key: "stable" value: 1 } }
      config { name: "b" base_path: "/m/b" model_platform: "tensorflow" }
    }""", "models.config")
  assert [(m.name, m.model_version_policy.WhichOneof("policy_choice"),
           list(m.model_version_policy.specific.versions), dict(m.version_labels))
          for m in models] == [("a", "specific", [1, 3], {"stable": 1}), ("b", None, [], {})]
  assert manager.aspired(models[0], [1, 2, 3, 4]) == {1, 3}
  assert manager.aspired(models[1], [1, 2, 3, 4]) == {4}
  with pytest.raises(ConfigError, match="models.config: .*model_config_list"):
    manager.parse_model_config("config { name: 'x' }", "models.config")
  # As ServerCore: a platform is required, and a name may appear once.
  with pytest.raises(ConfigError, match="model_platform, model name is b"):
    manager.parse_model_config("model_config_list { config { name: 'b' base_path: '/b' } }",
                               "c")
  with pytest.raises(ConfigError, match="Illegal to list model a multiple times"):
    manager.parse_model_config("model_config_list { config { name: 'a' base_path: '/a' "
                               "model_platform: 'tensorflow' } config { name: 'a' "
                               "base_path: '/b' model_platform: 'tensorflow' } }", "c")


def test_status_to_http_follows_tf_serving():
  assert {c.name: tensors.HTTP_STATUS[c] for c in (
      grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
      grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION,
      grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED)} == {
      "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
      "FAILED_PRECONDITION": 400, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501}
