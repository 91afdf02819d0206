"""REST and gRPC Predict loads from C load generators, for bench/serve_bench.py.

Where `wrk` is installed (Debian package), serve_bench runs its REST cells again with it,
and where `h2load` is (package nghttp2-client), its gRPC Predict cells: on a shared 2-core
machine the Python clients' own CPU competes with the server; these leave the cores to it.
Each request carries the same texts as serve_bench's own clients (`texts`).
"""

import json
import os
import re
import struct
import subprocess
import time
import urllib.request

from absl import flags

FLAGS = flags.FLAGS


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
"""


def wrk_load(url: str, clients: int, tmp: str, texts: list) -> dict:
  """The same REST load from wrk (C, Debian package `wrk`): almost no client CPU.

  On a shared 2-core machine the Python clients' own CPU competes with the
  server; wrk shows what the server does with the cores to itself.
  """
  script = os.path.join(tmp, "predict.lua")
  with open(script, "w", encoding="utf-8") as f:
    f.write(WRK_SCRIPT % json.dumps({"signature_name": FLAGS.signature_name,
                                     "instances": list(texts)}))
  out = subprocess.run(
      ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{int(FLAGS.seconds)}s", "--latency",
       "-s", script, f"{url}/v1/models/{FLAGS.model_name}:predict"],
      capture_output=True, text=True, check=True, timeout=FLAGS.seconds + 60).stdout
  scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}

  def latency(q):
    value, unit = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
    return float(value) * scale[unit]
  errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
  errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
  return {"requests": int(re.search(r"(\d+) requests in", out).group(1)), "errors": errors,
          "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
          "p50_ms": latency(50), "p99_ms": latency(99)}


GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"


def grpc_body(path: str, texts: list) -> None:
  """Writes one PredictRequest of `texts` in gRPC's framing (flag byte, big-endian length)."""
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = (FLAGS.model_name,
                                                                FLAGS.signature_name)
  request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(texts), tf.string))
  message = request.SerializeToString()
  with open(path, "wb") as f:
    f.write(b"\x00" + struct.pack(">I", len(message)) + message)


def grpc_failures(url: str) -> float:
  """gRPC predicts the server answered with a status other than OK, from its metrics.

  h2load sees only HTTP/2 status 200; gRPC puts its own status in the trailers.
  """
  with urllib.request.urlopen(url + "/monitoring/prometheus/metrics", timeout=10) as response:
    page = response.read().decode()
  return sum(float(value) for labels, value in re.findall(
      r'^tfagent_serving_requests_total\{(.*)\} (\S+)$', page, re.M)
      if 'protocol="grpc"' in labels and 'method="predict"' in labels
      and 'status="OK"' not in labels)


def h2load_load(url: str, address: str, clients: int, tmp: str, texts: list,
                summary) -> dict:
  """The gRPC Predict load from h2load (C, Debian package `nghttp2-client`), as wrk for REST;
  `summary(latencies, wall seconds, errors)` makes the cell."""
  body, log = os.path.join(tmp, "predict.grpc"), os.path.join(tmp, "h2load.log")
  grpc_body(body, texts)
  failed_before, started = grpc_failures(url), time.time()
  out = subprocess.run(
      ["h2load", f"-c{clients}", "-m1", f"-D{int(FLAGS.seconds)}", "--warm-up-time=1",
       "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
       f"--log-file={log}", f"http://{address}{GRPC_PREDICT}"],
      capture_output=True, text=True, check=True, timeout=FLAGS.seconds + 60).stdout
  done = {k: int(v) for v, k in re.findall(r"(\d+) (succeeded|failed|errored|timeout)", out)}
  with open(log) as f:  # start (us since the epoch), HTTP status, duration (us).
    rows = [line.split() for line in f]
  latencies = [int(d) / 1e6 for t, _, d in rows if int(t) >= (started + 1.0) * 1e6]
  cell = summary(latencies, 1.0, 0)
  cell["rps"] = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
  cell["errors"] = (done["failed"] + done["errored"] + done["timeout"]
                    + int(grpc_failures(url) - failed_before))
  return cell
