"""Mixed load with malformed requests: the server never crashes, hangs or fails a good one.

  python -m tfagent.train --flagfile=configs/lstm.flags
  python bench/serve_hostile.py --model_base_path=saved_models/lstm --model_name=lstm

--clients clients (half REST over keep-alive connections, half gRPC with the
official stubs) send requests back to back for --seconds; a --malformed_ratio
share of them is malformed, drawn from the hostile cases of issue 18 (bad JSON,
a lone surrogate, JSON nested 1,000 deep, 70 dimensions, a version past int64,
wrong dtypes, an example without its feature, an integer feature past int64,
too many instances, bad base64, a TensorProto declaring 4e9 values...). The
server runs with batching (the export's batching_parameters.txt), on
127.0.0.1. Pass: no 5xx, no hung request, no failed good request, no traceback
in the server's log. Figures go to --output (Markdown).
"""

import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
GOOD_TEXTS = ["这本书写得很好，推荐", "质量太差了，很失望", "a great movie, loved it", "还行吧"]


def rest_malformed(model: str) -> list:
  """(path, body) pairs TF Serving answers with a 4xx."""
  predict = f"/v1/models/{model}:predict"
  return [
      (predict, b'{"instances": ['),
      (predict, b'{"instances": ["\\ud800"]}'),
      (predict, b'{"instances": [' + b"[" * 1000 + b'"a"' + b"]" * 1000 + b"]}"),
      (predict, b'{"instances": [' + b"[" * 69 + b'"a"' + b"]" * 69 + b"]}"),
      (predict, b'{"instances": ["a", 5]}'),
      (predict, b'{"instances": 5}'),
      (predict, json.dumps({"instances": ["x"] * 40}).encode()),
      (predict, b'{"instances": [{"b64": "a*"}]}'),
      (predict, b'{"signature_name": "nope", "instances": ["a"]}'),
      (f"/v1/models/{model}/versions/9223372036854775808:predict", b'{"instances": ["a"]}'),
      (f"/v1/models/{model}:classify",
       b'{"signature_name": "classify", "examples": [{"txt": "no text"}]}'),
      (f"/v1/models/{model}:classify", json.dumps(
          {"signature_name": "classify", "examples": [{"text": "a", "n": 2**63}]}).encode()),
      (f"/v1/models/{model}:regress", b'{"examples": [{"text": "a"}]}'),
      ("/v1/modelz/x:predict", b"{}"),
  ]


def grpc_malformed(model: str) -> list:
  """PredictRequests TF Serving answers with INVALID_ARGUMENT, NOT_FOUND or FAILED_PRECONDITION."""
  import tensorflow as tf
  from tensorflow.core.framework import tensor_pb2, types_pb2
  from tensorflow_serving.apis import predict_pb2
  huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
  huge.tensor_shape.dim.add(size=4_000_000_000)
  huge.float_val.append(1.0)
  extra = predict_pb2.PredictRequest(model_spec={"name": model})
  extra.inputs["text"].CopyFrom(tf.make_tensor_proto(["a"]))
  extra.inputs["junk"].CopyFrom(huge)
  wrong_dtype = predict_pb2.PredictRequest(model_spec={"name": model})
  wrong_dtype.inputs["text"].CopyFrom(tf.make_tensor_proto([1.0], tf.float32))
  declared = predict_pb2.PredictRequest(model_spec={"name": model})
  declared.inputs["text"].CopyFrom(huge)
  return [extra, wrong_dtype, declared,
          predict_pb2.PredictRequest(model_spec={"name": model, "signature_name": "nope"}),
          predict_pb2.PredictRequest(model_spec={"name": "nope"}), predict_pb2.PredictRequest()]


class Tally:
  """Answers by kind, under a lock."""

  def __init__(self):
    self.lock, self.counts, self.samples = threading.Lock(), {}, {}

  def add(self, key: str, sample: str = "") -> None:
    with self.lock:
      self.counts[key] = self.counts.get(key, 0) + 1
      if sample and key not in self.samples:
        self.samples[key] = sample[:300]


def rest_client(url: str, model: str, stop_at: float, ratio: float, seed: int, tally: Tally):
  import requests
  rng, bad = random.Random(seed), rest_malformed(model)
  session = requests.Session()
  while time.monotonic() < stop_at:
    malformed = rng.random() < ratio
    path, body = rng.choice(bad) if malformed else (
        f"/v1/models/{model}:predict", json.dumps({"instances": [rng.choice(GOOD_TEXTS)]}))
    try:
      r = session.post(url + path, data=body, timeout=30)
    except requests.Timeout:
      tally.add("hung")
      continue
    except requests.RequestException as e:
      tally.add("connection error", repr(e))
      continue
    if r.status_code >= 500:
      tally.add("5xx", f"{path}: {r.status_code} {r.text}")
    elif malformed:
      tally.add("malformed 4xx" if 400 <= r.status_code < 500 else "malformed not refused",
                f"{path} {body[:80]!r}: {r.status_code}")
    else:
      tally.add("good ok" if r.status_code == 200 else "good failed", f"{r.status_code} {r.text}")


def grpc_client(address: str, model: str, stop_at: float, ratio: float, seed: int,
                tally: Tally):
  import grpc
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
  rng, bad = random.Random(seed), grpc_malformed(model)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
  refused = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.FAILED_PRECONDITION}
  while time.monotonic() < stop_at:
    malformed = rng.random() < ratio
    if malformed:
      request = rng.choice(bad)
    else:
      request = predict_pb2.PredictRequest(model_spec={"name": model})
      request.inputs["text"].CopyFrom(tf.make_tensor_proto([rng.choice(GOOD_TEXTS)]))
    try:
      stub.Predict(request, timeout=30)
      tally.add("malformed not refused" if malformed else "good ok")
    except grpc.RpcError as e:
      if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        tally.add("hung")
      elif e.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                        grpc.StatusCode.UNAVAILABLE):
        tally.add("5xx", f"{e.code()}: {e.details()}")
      elif malformed and e.code() in refused:
        tally.add("malformed 4xx")
      else:
        tally.add("good failed" if not malformed else "malformed not refused",
                  f"{e.code()}: {e.details()}")


def mixed_load(url: str, address: str, model: str, clients: int, seconds: float,
               ratio: float) -> dict:
  """Runs the clients; returns counts by kind, requests/s and sample answers."""
  tally = Tally()
  stop_at = time.monotonic() + seconds
  threads = [threading.Thread(target=rest_client if i % 2 == 0 else grpc_client,
                              args=(url if i % 2 == 0 else address, model, stop_at, ratio,
                                    i, tally)) for i in range(clients)]
  started = time.monotonic()
  for t in threads:
    t.start()
  for t in threads:
    t.join(seconds + 120)
  wall = time.monotonic() - started
  hung_threads = sum(t.is_alive() for t in threads)
  total = sum(tally.counts.values())
  return {"counts": dict(sorted(tally.counts.items())), "samples": tally.samples,
          "requests": total, "requests_per_second": total / wall, "seconds": wall,
          "hung_clients": hung_threads}


def verdict(result: dict, log_text: str) -> list:
  """What failed: 5xx, hung requests, failed good requests, unrefused malformed, tracebacks."""
  counts = result["counts"]
  problems = [f"{k}: {counts[k]}" for k in ("5xx", "hung", "good failed", "connection error",
                                              "malformed not refused") if counts.get(k)]
  if result["hung_clients"]:
    problems.append(f"{result['hung_clients']} clients still waiting")
  if "Traceback" in log_text:
    problems.append("a traceback in the server log")
  return problems


def report(result: dict, problems: list, command: str) -> str:
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
  rows = "\n".join(f"| {k} | {v} |" for k, v in result["counts"].items())
  return (f"# Mixed load with malformed requests (`bench/serve_hostile.py`)\n\n"
          f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
          f"- commit: {commit}\n- command: `{command}`\n"
          f"- machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}),"
          f" shared; load average at the end {os.getloadavg()[0]:.2f}; loopback only\n"
          f"- {FLAGS.clients} clients (half REST, half gRPC), {FLAGS.malformed_ratio:.0%} "
          f"malformed, {result['seconds']:.0f} s, {result['requests']} requests "
          f"({result['requests_per_second']:.0f}/s)\n\n| answer | requests |\n| --- | --- |\n"
          f"{rows}\n\nVerdict: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}"
          " (no 5xx, no hung request, no failed good request, no traceback in the log).\n")


def define_flags() -> None:
  """Defines this entry point's flags; called only when run as a program."""
  flags.DEFINE_string("model_base_path", "saved_models/lstm", "Exported model (base path).")
  flags.DEFINE_string("model_name", "lstm", "Name to serve it under.")
  flags.DEFINE_integer("clients", 16, "Concurrent clients, half REST and half gRPC.")
  flags.DEFINE_float("seconds", 60.0, "Load time.")
  flags.DEFINE_float("malformed_ratio", 0.1, "Share of malformed requests.")
  flags.DEFINE_string("output", "bench/results/serve_hostile.md", "Where the figures go.")


def main(argv):
  del argv
  from bench.launch import serve_in_subprocess
  base = os.path.abspath(FLAGS.model_base_path)
  args = [f"--model_name={FLAGS.model_name}", f"--model_base_path={base}", "--enable_batching",
          f"--batching_parameters_file={os.path.join(base, 'batching_parameters.txt')}"]
  with tempfile.TemporaryDirectory() as tmp:
    log = os.path.join(tmp, "server.log")
    with serve_in_subprocess(args, FLAGS.model_name, log) as (url, address, _):
      result = mixed_load(url, address, FLAGS.model_name, FLAGS.clients, FLAGS.seconds,
                          FLAGS.malformed_ratio)
    with open(log) as f:
      problems = verdict(result, f.read())
  command = "python " + " ".join(sys.argv)
  text = report(result, problems, command)
  os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
  with open(FLAGS.output, "w") as f:
    f.write(text)
  print(text)
  print(json.dumps(result["samples"], indent=1, ensure_ascii=False))
  if problems:
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
