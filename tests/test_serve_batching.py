"""Dynamic batching and config parsing, in-process on plain numpy functions (fast)."""

import threading
import time

import grpc
import numpy as np
import pytest

from tfagent.errors import ConfigError
from tfagent.serving import batching, manager, status


def record_calls(delay=0.0):
  calls = []

  def fn(inputs):
    calls.append(len(inputs["x"]))
    time.sleep(delay)
    return {"y": inputs["x"] * 2}
  return fn, calls


def test_concurrent_requests_share_one_model_call_and_get_their_own_rows():
  fn, calls = record_calls()
  b = batching.Batcher(fn, batching.BatchingOptions(max_batch_size=8,
                                                    batch_timeout_micros=200_000,
                                                    num_batch_threads=1))
  results = {}

  def client(i):
    results[i] = b.run({"x": np.array([i, i + 100])}, 2)["y"].tolist()
  threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  b.close()
  assert calls == [8]  # Four requests of two: one full batch, no waiting for the timeout.
  assert results == {i: [2 * i, 2 * (i + 100)] for i in range(4)}


def test_a_lone_request_waits_at_most_the_batch_timeout():
  fn, calls = record_calls()
  b = batching.Batcher(fn, batching.BatchingOptions(max_batch_size=32,
                                                    batch_timeout_micros=50_000))
  started = time.monotonic()
  assert b.run({"x": np.array([1])}, 1)["y"].tolist() == [2]
  assert 0.04 < time.monotonic() - started < 2.0 and calls == [1]
  b.close()


def test_oversized_task_full_queue_and_deadline_are_tf_serving_errors():
  fn, _ = record_calls(delay=0.3)
  b = batching.Batcher(fn, batching.BatchingOptions(max_batch_size=2, batch_timeout_micros=0,
                                                    max_enqueued_batches=1, num_batch_threads=1))
  with pytest.raises(status.ServingError, match="Task size 3 is larger than maximum input "
                     "batch size 2") as e:
    b.run({"x": np.arange(3)}, 3)
  assert e.value.http_status == 400
  slow = threading.Thread(target=b.run, args=({"x": np.arange(2)}, 2))
  slow.start()  # Occupies the only batch thread for 0.3 s.
  time.sleep(0.05)
  with pytest.raises(status.ServingError) as e:  # Queued, and its deadline passes.
    b.run({"x": np.arange(2)}, 2, deadline=time.monotonic() + 0.05)
  assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and e.value.http_status == 504
  filler = threading.Thread(target=b.run, args=({"x": np.arange(2)}, 2))
  filler.start()
  time.sleep(0.05)
  with pytest.raises(status.ServingError, match="queue .* is full") as e:
    b.run({"x": np.arange(2)}, 2)
  assert e.value.http_status == 503
  slow.join()
  filler.join()
  b.close()


def test_batching_parameters_text_proto():
  opts = batching.parse_batching_parameters(
      "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
      "num_batch_threads { value: 2 }\n")
  assert (opts.max_batch_size, opts.batch_timeout_micros, opts.num_batch_threads,
          opts.max_enqueued_batches) == (32, 2000, 2, 100)
  with pytest.raises(ConfigError, match="f.txt: .*max_batch_sise"):
    batching.parse_batching_parameters("max_batch_sise { value: 3 }", "f.txt")


def test_model_config_file_and_version_policies(tmp_path):
  models = manager.parse_model_config("""
    model_config_list {
      config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 1 versions: 3 } }
               version_labels { key: "stable" value: 1 } }
      config { name: "b" base_path: "/m/b" }
    }""", "models.config")
  assert [(m.name, m.policy, m.versions, m.labels) for m in models] == [
      ("a", "specific", (1, 3), (("stable", 1),)), ("b", "latest", (), ())]
  assert manager.aspired(models[0], [1, 2, 3, 4]) == {1, 3}
  assert manager.aspired(models[1], [1, 2, 3, 4]) == {4}
  with pytest.raises(ConfigError, match="models.config: .*model_config_list"):
    manager.parse_model_config("config { name: 'x' }", "models.config")


def test_status_to_http_follows_tf_serving():
  assert {c.name: status.HTTP_STATUS[c] for c in (
      grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
      grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION,
      grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED)} == {
      "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
      "FAILED_PRECONDITION": 400, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501}
