"""Hostile and careless input (issue 18), each case sent to a server in a subprocess.

For every case: the answer's code and message; the server's memory growth,
bounded (each bound stated beside its case, as growth of the process's peak
resident memory); the next good request served on the same keep-alive
connection (or, where the server must close it, a `Connection: close` header
and a new connection served); the request counted in the Prometheus metrics;
and no traceback in the server's log.
"""

import concurrent.futures
import json
import re
import socket
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import serving_util
from serving_util import Connection, metric_total, peak_rss_bytes, reset_peak_rss, run_server

pytestmark = pytest.mark.slow
MB = 1 << 20
READ_TIMEOUT, KEEP_ALIVE, MAX_CONNECTIONS = 2, 3, 24
GOOD = {"instances": ["great"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("hostile")
  serving_util.write_synthetic_model(str(tmp / "synth" / "1"))
  (tmp / "batching.txt").write_text("max_batch_size { value: 32 }\n"
                                    "batch_timeout_micros { value: 50000 }\n"
                                    "num_batch_threads { value: 1 }\n")
  args = ["--model_name=synth", f"--model_base_path={tmp / 'synth'}", "--enable_batching",
          f"--batching_parameters_file={tmp / 'batching.txt'}",
          f"--rest_api_read_timeout_seconds={READ_TIMEOUT}",
          f"--rest_api_keep_alive_timeout_seconds={KEEP_ALIVE}",
          f"--rest_api_max_connections={MAX_CONNECTIONS}"]
  log = tmp / "server.log"
  with run_server(args, "synth", str(log)) as (url, address, pid):
    yield {"url": url, "grpc": address, "pid": pid, "log": log}


def metrics_page(served) -> str:
  return requests.get(served["url"] + "/monitoring/prometheus/metrics", timeout=60).text


class Checked:
  """Records the metrics, peak memory and log length before a case; checks them after."""

  def __init__(self, served, statuses=(), **labels):
    self.served, self.labels, self.statuses = served, labels, statuses
    self.count = self._count()
    self.peak = reset_peak_rss(served["pid"])
    self.log_size = len(served["log"].read_text())

  def _count(self) -> float:
    page = metrics_page(self.served)
    if not self.statuses:
      return metric_total(page, **self.labels)
    return sum(metric_total(page, status=s, **self.labels) for s in self.statuses)

  def growth(self) -> int:
    return peak_rss_bytes(self.served["pid"]) - self.peak

  def done(self, max_growth: int, requests_counted: int = 1) -> None:
    print(f"peak memory growth {self.growth() / MB:.0f} MB (bound {max_growth / MB:.0f} MB)")
    assert self.growth() < max_growth, f"peak memory grew {self.growth() / MB:.0f} MB"
    after = self._count()
    assert after - self.count == requests_counted, (self.labels, after - self.count)
    new_log = self.served["log"].read_text()[self.log_size:]
    assert "Traceback" not in new_log, new_log[-3000:]


def send_on_keep_alive(served, body, path="/v1/models/synth:predict") -> tuple:
  """(status, error message) of `body`, after checking the connection serves a good one next."""
  conn = Connection(served["url"])
  code, headers, payload = conn.request("POST", path, body)
  assert headers.get("connection", "").lower() != "close"
  good, _, answer = conn.request("POST", "/v1/models/synth:predict", GOOD)
  assert good == 200 and conn.same_socket(), answer  # Same socket: not reconnected.
  conn.close()
  return code, json.loads(payload)["error"]


def nested(depth: int) -> bytes:
  return b'{"instances": [' + b"[" * depth + b'"a"' + b"]" * depth + b"]}"


UNHANDLED_BEFORE = [
    # (case, body or path, status, message), each was a 500 with a traceback before.
    ("JSON nested 1,000 levels", nested(1000), 400, "tensor parsing error: text"),
    ("array of 70 dimensions", nested(69), 400, "tensor parsing error: text"),
    ("lone surrogate", b'{"instances": ["\\ud800"]}', 400,
     "JSON Parse error: The surrogate pair in string is invalid. at offset: 16"),
    ("classify integer feature of 2**63", {"signature_name": "classify", "examples": [
        {"text": "a", "n": 2**63}]}, 400,
     "Feature: n has uint64_t element. Only int64_t is supported."),
    ("deep JSON outside the tensor", b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b', '
     b'"instances": ["great"]}', 200, None),
]


@pytest.mark.parametrize("case,body,code,message", UNHANDLED_BEFORE,
                         ids=[c[0] for c in UNHANDLED_BEFORE])
def test_input_that_crashed_a_handler_is_a_400_and_the_connection_lives(served, case, body,
                                                                         code, message):
  verb = "classify" if b"classify" in (body if isinstance(body, bytes)
                                       else json.dumps(body).encode()) else "predict"
  status = "OK" if code == 200 else "INVALID_ARGUMENT"
  checked = Checked(served, protocol="rest", method=verb, status=status)
  conn = Connection(served["url"])
  got, headers, payload = conn.request("POST", f"/v1/models/synth:{verb}", body)
  assert got == code, payload[:500]
  if message:
    assert json.loads(payload)["error"].startswith(message)
  good, _, _ = conn.request("POST", "/v1/models/synth:predict", GOOD)
  assert good == 200 and conn.same_socket()
  conn.close()
  checked.done(max_growth=64 * MB, requests_counted=2 if code == 200 else 1)


def test_a_version_past_int64_in_the_path_is_a_400(served):
  checked = Checked(served, protocol="rest", status="INVALID_ARGUMENT")
  conn = Connection(served["url"])
  code, _, payload = conn.request("GET", "/v1/models/synth/versions/9223372036854775808")
  assert (code, json.loads(payload)["error"]) == (
      400, "Failed to convert version: 9223372036854775808 to numeric.")
  assert conn.request("GET", "/v1/models/synth")[0] == 200 and conn.same_socket()
  checked.done(max_growth=16 * MB)


def test_a_52_byte_grpc_request_cannot_ask_for_gigabytes(served):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(served["grpc"]))
  huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
  huge.tensor_shape.dim.add(size=4_000_000_000)
  huge.float_val.append(1.0)
  checked = Checked(served, protocol="grpc", method="predict", status="INVALID_ARGUMENT")
  extra = predict_pb2.PredictRequest(model_spec={"name": "synth"})
  extra.inputs["text"].CopyFrom(tf.make_tensor_proto(["a"]))
  extra.inputs["junk"].CopyFrom(huge)
  assert extra.ByteSize() < 64  # The 52-byte request, give or take the names.
  with pytest.raises(grpc.RpcError) as e:  # Names and count are checked before conversion.
    stub.Predict(extra, timeout=60)
  assert e.value.details().startswith("input size does not match signature: 2!=1")
  named = predict_pb2.PredictRequest(model_spec={"name": "synth", "signature_name": "floats"})
  named.inputs["x"].CopyFrom(huge)  # The right name: the declared size is checked instead.
  with pytest.raises(grpc.RpcError) as e:
    stub.Predict(named, timeout=60)
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "declares shape [4000000000] (4000000000 values) but carries 1" in e.value.details()
  good = predict_pb2.PredictRequest(model_spec={"name": "synth"})
  good.inputs["text"].CopyFrom(tf.make_tensor_proto(["great"]))
  assert stub.Predict(good, timeout=60).outputs["classes"].string_val == [b"negative"]
  checked.done(max_growth=32 * MB, requests_counted=2)  # 16 GB if the shape were honoured.


def test_an_oversize_batch_is_refused_before_its_strings_are_decoded(served):
  # 30 MB of two-character strings: 6.4 million instances for max_batch_size 32.
  body = b'{"instances": [' + b",".join([b'"ab"'] * 6_400_000) + b"]}"
  assert 30 * MB < len(body) < 32 * MB
  checked = Checked(served, protocol="rest", method="predict", status="INVALID_ARGUMENT")
  code, message = send_on_keep_alive(served, body)
  assert (code, message) == (400, "Task size 6400000 is larger than maximum input batch size 32")
  # Counted on the bytes, never parsed: the 32 MB body's copies in the HTTP layer and the
  # count's arrays (0.9 GB before; parsing it alone takes 0.5 GB).
  checked.done(max_growth=256 * MB, requests_counted=1)
  # (The good request of send_on_keep_alive is counted under status OK.)


def test_one_huge_text_is_refused_by_its_size(served):
  body = json.dumps({"instances": ["x" * (30 * MB)]}).encode()
  checked = Checked(served, protocol="rest", method="predict", status="INVALID_ARGUMENT")
  started = time.monotonic()
  code, message = send_on_keep_alive(served, body)
  assert (code, message) == (400, f"input tensor alias: text holds a string of {30 * MB} bytes; "
                             "the limit is 1048576 bytes (--max_input_string_bytes)")
  assert time.monotonic() - started < 20  # Was 9 s of model time and 2 GB.
  checked.done(max_growth=160 * MB)


def test_a_bad_example_batched_with_good_ones_fails_alone(served):
  good = {"signature_name": "classify", "examples": [{"text": "great"}]}
  bad = {"signature_name": "classify", "examples": [{"txt": "no text"}]}
  checked = Checked(served, protocol="rest", method="classify", status="OK")
  before = metrics_page(served)

  def post(body):
    r = requests.post(served["url"] + "/v1/models/synth:classify", json=body, timeout=60)
    return r.status_code, r.json()
  with concurrent.futures.ThreadPoolExecutor(9) as pool:
    answers = list(pool.map(post, [good] * 4 + [bad] + [good] * 4))
  assert [code for code, _ in answers] == [200] * 4 + [400] + [200] * 4
  assert "Feature: text (data type: string) is required" in answers[4][1]["error"]
  for _, answer in answers[:4] + answers[5:]:  # Nobody else sees its error.
    assert np.float32(answer["results"][0][1][1]) == serving_util.expected_probabilities(
        ["great"])[0][1]
  after = metrics_page(served)
  batches = batch_stats(after)[0] - batch_stats(before)[0]
  examples = batch_stats(after)[1] - batch_stats(before)[1]
  assert examples > batches  # Requests were merged, then the failed batch re-run alone.
  checked.done(max_growth=32 * MB, requests_counted=8)


def batch_stats(page: str) -> tuple:
  """(model calls, examples) the batcher has made so far."""
  return tuple(float(re.search(rf'^tfagent_serving_batch_size_{kind}\{{model_name="synth"\}} '
                               r"(\S+)$", page, re.M).group(1)) for kind in ("count", "sum"))


def raw_socket(served) -> socket.socket:
  host, port = served["url"].removeprefix("http://").split(":")
  return socket.create_connection((host, int(port)), timeout=30)


def read_all(sock: socket.socket) -> bytes:
  chunks = []
  while chunk := sock.recv(65536):
    chunks.append(chunk)
  return b"".join(chunks)


def test_half_sent_requests_are_answered_408_and_closed(served):
  # More sockets than the connection cap: while they are held, new requests get 503
  # (the cap bounds them); the read timeout frees them all.
  checked = Checked(served, statuses=("HTTP_408", "HTTP_503"), protocol="rest")
  socks = [raw_socket(served) for _ in range(100)]
  started = time.monotonic()
  for i, sock in enumerate(socks):  # Stalled mid-header, mid-body, or silent.
    sock.sendall([b"POST /v1/models/synth:predict HTTP/1.1\r\nHost: x\r\n",
                  b"POST /v1/models/synth:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
                  b""][i % 3])
  answers = [read_all(sock) for sock in socks]  # Each ends: the server closed it.
  assert time.monotonic() - started < READ_TIMEOUT + 10
  timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408 Request Timeout")]
  capped = [a for a in answers if a.startswith(b"HTTP/1.1 503 Service Unavailable")]
  assert len(timed_out) + len(capped) == len(answers) and len(timed_out) >= 2 * len(socks) // 3
  assert all(b"connection: close" in a for a in answers)
  for sock in socks:
    sock.close()
  assert requests.post(served["url"] + "/v1/models/synth:predict", json=GOOD,
                       timeout=60).status_code == 200
  checked.done(max_growth=32 * MB, requests_counted=100)


def test_a_huge_header_is_refused_431_and_closed(served):
  checked = Checked(served, protocol="rest", status="HTTP_431")
  sock = raw_socket(served)
  sock.sendall(b"GET /v1/models/synth HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * MB) +
               b"\r\n\r\n")
  answer = read_all(sock)
  sock.close()
  assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
  assert b"connection: close" in answer and b"--rest_api_max_header_bytes" in answer
  assert requests.get(served["url"] + "/v1/models/synth", timeout=60).status_code == 200
  checked.done(max_growth=32 * MB)


def test_idle_keep_alive_connections_are_closed(served):
  conn = Connection(served["url"])
  assert conn.request("GET", "/v1/models/synth")[0] == 200
  started = time.monotonic()
  assert conn.sock.recv(1) == b""  # The server closes it...
  assert KEEP_ALIVE - 0.5 < time.monotonic() - started < KEEP_ALIVE + 10  # ...when idle.
  conn.close()


def test_connections_past_the_cap_get_503_and_the_server_recovers(served):
  checked = Checked(served, protocol="rest", status="HTTP_503")
  held = [raw_socket(served) for _ in range(MAX_CONNECTIONS)]  # Open, not yet sending.
  try:
    extra = Connection(served["url"])
    code, headers, _ = extra.request("GET", "/v1/models/synth")
    assert code == 503 and headers["connection"] == "close"
    extra.close()
  finally:
    for sock in held:
      sock.close()
  deadline = time.monotonic() + 30
  while requests.get(served["url"] + "/v1/models/synth", timeout=60).status_code != 200:
    assert time.monotonic() < deadline
    time.sleep(0.1)
  checked.done(max_growth=32 * MB)
