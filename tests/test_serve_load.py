"""Load with faults: no request hangs when model calls fail, none fails when input is bad.

Both run a server subprocess on loopback with batching on (one batch thread:
the configuration that used to hang when a batch thread died).
"""

import os
import re
import sys
import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import serving_util
from serving_util import run_server

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import serve_hostile  # noqa: E402

pytestmark = pytest.mark.slow
BATCHING = ("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 0 }\n"
            "num_batch_threads { value: 1 }\n")


def start(tmp_path, fail_every: int = 0):
  serving_util.write_synthetic_model(str(tmp_path / "synth" / "1"), fail_every=fail_every)
  (tmp_path / "batching.txt").write_text(BATCHING)
  args = ["--model_name=synth", f"--model_base_path={tmp_path / 'synth'}", "--enable_batching",
          f"--batching_parameters_file={tmp_path / 'batching.txt'}",
          "--enable_model_warmup=false"]
  return run_server(args, "synth", str(tmp_path / "server.log"))


def test_one_model_call_in_50_failing_hangs_no_request(tmp_path):
  """32 clients for 10 s (REST and gRPC alike); every 50th model call raises."""
  with start(tmp_path, fail_every=50) as (url, address, _):
    stop_at = time.monotonic() + 10
    answers = {"ok": 0, "failed": 0, "hung": 0, "other": []}
    lock = threading.Lock()

    def count(key, detail=None):
      with lock:
        if detail is None:
          answers[key] += 1
        else:
          answers["other"].append(detail)

    def rest_client():
      session = requests.Session()
      while time.monotonic() < stop_at:
        try:
          r = session.post(f"{url}/v1/models/synth:predict", json={"instances": ["great"]},
                           timeout=10)
        except requests.Timeout:
          count("hung")
          continue
        if r.status_code == 200:
          count("ok")
        elif r.status_code == 400 and "injected fault" in r.json()["error"]:
          count("failed")
        else:
          count("other", f"{r.status_code} {r.text[:200]}")

    def grpc_client():
      stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
      request = predict_pb2.PredictRequest(model_spec={"name": "synth"})
      request.inputs["text"].CopyFrom(tf.make_tensor_proto(["great"]))
      while time.monotonic() < stop_at:
        try:
          stub.Predict(request, timeout=10)
          count("ok")
        except grpc.RpcError as e:
          if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            count("hung")
          elif "injected fault" in (e.details() or ""):
            count("failed")
          else:
            count("other", f"{e.code()} {e.details()[:200]}")
    threads = [threading.Thread(target=rest_client if i % 2 else grpc_client)
               for i in range(32)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(60)
    assert not any(t.is_alive() for t in threads)
    page = requests.get(url + "/monitoring/prometheus/metrics", timeout=60).text
  print(f"load with faults: {answers['ok']} ok, {answers['failed']} failed by the injected "
        f"fault, {answers['hung']} hung")
  assert answers["hung"] == 0 and answers["other"] == []
  assert answers["failed"] > 0 and answers["ok"] > 20 * answers["failed"]
  # A failed batch is re-run one request at a time: only the requests alone in a failing
  # call fail, at most one per injected fault (one call in 50).
  calls = float(re.search(r'^tfagent_serving_batch_size_count\{model_name="synth"\} (\S+)$',
                          page, re.M).group(1))
  assert answers["failed"] <= calls / 50 + 1, (answers["failed"], calls)
  assert "injected fault" in (tmp_path / "server.log").read_text()  # Logged, not swallowed.
  assert serving_util.metric_total(page, status="OK") >= answers["ok"]


def test_mixed_load_with_malformed_requests_fails_no_good_one(tmp_path):
  """bench/serve_hostile.py's load for 5 s (the bench runs it for 60 s)."""
  with start(tmp_path) as (url, address, _):
    result = serve_hostile.mixed_load(url, address, "synth", clients=16, seconds=5, ratio=0.1)
  problems = serve_hostile.verdict(result, (tmp_path / "server.log").read_text())
  assert problems == [], (problems, result["samples"])
  assert result["counts"]["good ok"] > 100 and result["counts"]["malformed 4xx"] > 10
