"""The server keeps its promises (issue 26, item 6): deadlines and a bounded queue without
batching, and large gRPC requests converted off the event loop.

The server runs in this process (tfagent.serving.server.Server on loopback ports), so its
model can be a test-only SavedModel whose function is Python: `tf.py_function` waits on a
gate (a threading.Event) and counts its calls. One model thread per protocol
(--rest_api_num_threads=1, --grpc_max_threads=1) makes "running" and "queued" exact.
"""

import concurrent.futures
import gc
import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench import launch
from tfagent.serving import server, servable, tensors

TIMEOUT_MS = 3000  # --rest_api_timeout_in_ms: long enough for rejections to come first.
GATE_SECONDS = 30  # The gated model answers after this long at most, gate or not.
WAIT = 15  # Seconds a client waits; far less than the gate, far more than a deadline.
ROOM = 1 + servable.QUEUED_PER_THREAD  # Calls let in with one model thread: one runs, the
# rest wait.
LARGE = servable.INLINE_BYTES + 1  # A request this large is converted on the thread pool.


class Gate:
  """A test-only SavedModel's function: counts its calls, waits until released."""

  def __init__(self):
    self.open, self.calls = threading.Event(), 0

  def __call__(self, text):
    self.calls += 1
    self.open.wait(GATE_SECONDS)
    return tf.strings.length(text)


def write_gated_model(path: str, gate: Gate) -> None:
  """serving_default: text <string>[b] -> n <int32>[b], once `gate` is open."""

  class Gated(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
      n = tf.py_function(gate, [text], tf.int32)
      n.set_shape([None])
      return {"n": n}
  module = Gated()
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  gate = Gate()
  base = tmp_path_factory.mktemp("gated") / "gated"
  write_gated_model(str(base / "1"), gate)
  rest_port, grpc_port = launch.free_port(), launch.free_port()
  srv = server.Server(server.ServerOptions(
      model_name="gated", model_base_path=str(base), bind_address="127.0.0.1",
      port=grpc_port, rest_api_port=rest_port, rest_api_num_threads=1, grpc_max_threads=1,
      rest_api_timeout_in_ms=TIMEOUT_MS, file_system_poll_wait_seconds=-1,
      enable_model_warmup=False))
  srv.start()
  try:
    yield {"url": f"http://127.0.0.1:{rest_port}", "grpc": f"127.0.0.1:{grpc_port}",
           "gate": gate, "server": srv}
  finally:
    gate.open.set()
    srv.stop()
    gc.unfreeze()  # The server froze this process's heap when it loaded the model.


def predict(served, text: str = "x"):
  """(status code, error text or "") of one REST predict; a client timeout is ("timeout", "")."""
  try:
    r = requests.post(f"{served['url']}/v1/models/gated:predict",
                      json={"instances": [text]}, timeout=WAIT)
  except requests.Timeout:
    return "timeout", ""
  return r.status_code, r.json().get("error", "")


def timed_predict(served) -> tuple:
  """(status code, error text, seconds taken) of one REST predict."""
  started = time.monotonic()
  return (*predict(served), time.monotonic() - started)


def settle(gate: Gate) -> None:
  """Opens the gate until every call let in has finished, then closes it again."""
  gate.open.set()
  time.sleep(0.5)
  gate.open.clear()


def test_the_rest_deadline_holds_without_batching_and_a_late_call_never_runs(served):
  gate = served["gate"]
  calls = gate.calls
  with concurrent.futures.ThreadPoolExecutor(2) as clients:
    started = time.monotonic()
    running = clients.submit(predict, served)
    time.sleep(0.3)  # The first call holds the only model thread; the second queues.
    queued = clients.submit(predict, served)
    answers = [running.result(), queued.result()]
    elapsed = time.monotonic() - started
  # Both are answered at the deadline: 504, as TF Serving's RunOptions.timeout_in_ms.
  assert answers == [(504, "Deadline exceeded")] * 2, answers
  assert elapsed < TIMEOUT_MS / 1000 + 3, elapsed
  settle(gate)
  assert gate.calls == calls + 1  # The queued call's deadline passed before it started.
  gate.open.set()
  assert predict(served, "four") == (200, "")
  gate.open.clear()


def test_a_full_unbatched_queue_answers_503_at_once(served):
  gate = served["gate"]
  with concurrent.futures.ThreadPoolExecutor(ROOM + 3) as clients:
    answers = list(clients.map(lambda _: timed_predict(served), range(ROOM + 3)))
  codes = sorted(code for code, _, _ in answers)
  assert codes == [503] * 3 + [504] * ROOM, answers
  for code, error, seconds in answers:
    if code == 503:  # UNAVAILABLE, as TF Serving's full batch queue; before any deadline.
      assert error.startswith("The request queue to which this call was submitted is full")
      assert "--rest_api_num_threads" in error and seconds < TIMEOUT_MS / 1000, error
  settle(gate)
  gate.open.set()
  assert predict(served) == (200, "")  # The queue drained: the server serves on.
  gate.open.clear()


def test_a_large_grpc_predict_is_converted_off_the_event_loop(served, monkeypatch):
  """As REST parses a body over servable.INLINE_BYTES on its thread pool."""
  gate = served["gate"]
  gate.open.set()
  threads = []
  to_ndarray = tensors.to_ndarray

  def spy(*args):
    threads.append(threading.current_thread().name)
    return to_ndarray(*args)
  monkeypatch.setattr(tensors, "to_ndarray", spy)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(
      grpc.insecure_channel(served["grpc"]))
  for size in (16, LARGE):
    request = predict_pb2.PredictRequest(model_spec={"name": "gated"})
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["y" * size]))
    response = stub.Predict(request, timeout=WAIT)
    assert tf.make_ndarray(response.outputs["n"]).tolist() == [size]
  gate.open.clear()
  # The gRPC event loop runs on the thread named "grpc"; its pool's threads are "grpc_N".
  assert threads[0] == "grpc" and threads[1].startswith("grpc_"), threads
