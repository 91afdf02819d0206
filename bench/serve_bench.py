"""Serving benchmark: REST and gRPC at 1, 8 and 32 concurrent clients, batching on
and off, beside the in-process latency of the same SavedModel, in one run.

  python -m tfagent.train --flagfile=configs/lstm.flags
  python bench/serve_bench.py --model_base_path=saved_models/lstm --model_name=lstm \
      [--baseline_tree=/tmp/main]   # e.g. git archive main | tar -x -C /tmp/main
      [--signature_name=explain --output=bench/results/serve_bench_explain.json]

Each client sends one text per request, back to back, for --seconds (at most
--max_requests each); clients run in --client_processes processes so the
load generator's GIL does not cap the server. Where `wrk` is installed (Debian
package), the REST cells are run again with it (rows `rest-wrk`), and where
`h2load` is (package nghttp2-client), the gRPC Predict cells (rows `grpc-h2load`):
C load generators that leave the shared cores to the server. Everything targets
127.0.0.1.
"""

import concurrent.futures
import contextlib
import functools
import json
import multiprocessing
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
TEXTS = ["这本书写得很好，推荐", "质量太差了，很失望", "物流很快，包装完好", "a great movie, loved it",
         "屏幕有划痕，客服态度差", "性价比高，下次还买", "terrible, waste of money", "还行吧，一般般"]


def percentile(values: list, q: float) -> float:
  values = sorted(values)
  return values[min(len(values) - 1, int(q * len(values)))]


def in_process_latency(path: str, seconds: float, signature_name: str) -> dict:
  """The measured signature called directly on one text: the floor to compare with."""
  import tensorflow as tf
  from tfagent import signatures
  serve = signatures.load_signature(path, signature_name)
  for text in TEXTS:
    serve(text=tf.constant([text]))
  latencies, start, i = [], time.perf_counter(), 0
  while time.perf_counter() - start < seconds and i < 5000:
    t = time.perf_counter()
    [v.numpy() for v in serve(text=tf.constant([TEXTS[i % len(TEXTS)]])).values()]
    latencies.append(time.perf_counter() - t)
    i += 1
  return summary(latencies, time.perf_counter() - start, 0)


def summary(latencies: list, wall: float, errors: int) -> dict:
  if not latencies:
    return {"requests": 0, "errors": errors, "rps": 0.0, "p50_ms": float("nan"),
            "p99_ms": float("nan")}
  return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / wall,
          "p50_ms": 1000 * statistics.median(latencies),
          "p99_ms": 1000 * percentile(latencies, 0.99)}


def warm_worker(_) -> int:
  """Imports the clients' modules (TensorFlow with the gRPC stubs) before any timing."""
  from tfagent import client  # noqa: F401
  import tensorflow  # noqa: F401
  from tensorflow_serving.apis import predict_pb2  # noqa: F401
  time.sleep(1.0)  # Holds this process so the next warm-up lands on another.
  return os.getpid()


def client_worker(target: tuple, threads: int, start_at: float, seconds: float,
                  max_requests: int) -> tuple:
  """One load-generating process: `threads` clients of `target = (server, protocol, model,
  signature_name)` from `start_at` for `seconds`."""
  import threading
  from tfagent import client
  server, protocol, model, signature_name = target
  c = client.make_client(server, model, protocol)
  for text in TEXTS[:2]:
    c.predict([text], signature_name)  # Connect and warm this process's client.
  latencies, errors, lock = [], [0], threading.Lock()

  def loop(k):
    mine, n = [], 0
    while time.time() < start_at:
      time.sleep(0.001)
    while time.time() < start_at + seconds and n < max_requests:
      t = time.perf_counter()
      try:
        c.predict([TEXTS[(k + n) % len(TEXTS)]], signature_name)
        mine.append(time.perf_counter() - t)
      except Exception:  # noqa: BLE001  Counted, reported.
        errors[0] += 1
      n += 1
    with lock:
      latencies.extend(mine)
  pool = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
  for t in pool:
    t.start()
  for t in pool:
    t.join()
  return latencies, errors[0], time.time() - start_at


def load(pool, server: str, protocol: str, clients: int) -> dict:
  """`clients` concurrent clients spread over the worker processes; one summary."""
  procs = min(clients, FLAGS.client_processes)
  shares = [clients // procs + (i < clients % procs) for i in range(procs)]
  start_at = time.time() + 2.0
  target = (server, protocol, FLAGS.model_name, FLAGS.signature_name)
  futures = [pool.submit(client_worker, target, n, start_at, FLAGS.seconds, FLAGS.max_requests)
             for n in shares]
  results = [f.result() for f in futures]
  latencies = [x for r in results for x in r[0]]
  return summary(latencies, max(r[2] for r in results), sum(r[1] for r in results))


def cpu_seconds(pid: int) -> float:
  """User + system CPU time of a process so far (Linux /proc)."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"signature_name": "%s", "instances": ["%s"]}'
"""


def wrk_load(url: str, clients: int, tmp: str) -> dict:
  """The same REST load from wrk (C, Debian package `wrk`): almost no client CPU.

  On a shared 2-core machine the Python clients' own CPU competes with the
  server; wrk shows what the server does with the cores to itself.
  """
  script = os.path.join(tmp, "predict.lua")
  with open(script, "w", encoding="utf-8") as f:
    f.write(WRK_SCRIPT % (FLAGS.signature_name, TEXTS[0]))
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


def grpc_body(path: str) -> None:
  """Writes one PredictRequest in gRPC's framing (flag byte, big-endian length) for h2load."""
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = (FLAGS.model_name,
                                                                FLAGS.signature_name)
  request.inputs["text"].CopyFrom(tf.make_tensor_proto([TEXTS[0]]))
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


def h2load_load(url: str, address: str, clients: int, tmp: str) -> dict:
  """The gRPC Predict load from h2load (C, Debian package `nghttp2-client`), as wrk for REST."""
  body, log = os.path.join(tmp, "predict.grpc"), os.path.join(tmp, "h2load.log")
  grpc_body(body)
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


def cell_plan(pool) -> list:
  """(cell name, load(url, grpc_address, tmp)) for every cell a server is measured on."""
  plan = []
  for protocol in ("rest", "grpc"):
    for clients in FLAGS.concurrency:
      plan.append((f"{protocol}/{clients}", functools.partial(
          lambda p, c, url, address, tmp: load(
              pool, url.removeprefix("http://") if p == "rest" else address, p, int(c)),
          protocol, clients)))
  if shutil.which("wrk"):
    for clients in FLAGS.concurrency:
      plan.append((f"rest-wrk/{clients}", functools.partial(
          lambda c, url, address, tmp: wrk_load(url, int(c), tmp), clients)))
  if shutil.which("h2load"):
    for clients in FLAGS.concurrency:
      plan.append((f"grpc-h2load/{clients}", functools.partial(
          lambda c, url, address, tmp: h2load_load(url, address, int(c), tmp), clients)))
  return plan


def run_server_cells(pool, base: str, batching: bool, tmp: str) -> dict:
  """Starts one server per source tree and loads each at every cell, in turn, cell by cell.

  Returns {tree: {cell: figures}}; with --baseline_tree the earlier code is
  measured beside this one in the same run, so machine load hits both alike.
  """
  from bench.launch import serve_in_subprocess
  args = [f"--model_name={FLAGS.model_name}", f"--model_base_path={base}",
          "--file_system_poll_wait_seconds=0", *thread_flags()]
  if batching:
    args += ["--enable_batching",
             f"--batching_parameters_file={os.path.join(base, 'batching_parameters.txt')}"]
  trees = {"current": None}
  if FLAGS.baseline_tree:
    trees["baseline"] = os.path.abspath(FLAGS.baseline_tree)
  runs = {tree: {} for tree in trees}
  with contextlib.ExitStack() as stack:
    servers = {tree: stack.enter_context(serve_in_subprocess(
        args, FLAGS.model_name, os.path.join(tmp, f"server-{tree}-{batching}.log"),
        python_path=path)) for tree, path in trees.items()}
    for round_index in range(FLAGS.rounds):
      for cell_index, (name, run_load) in enumerate(cell_plan(pool)):
        order = list(servers.items())
        if (round_index + cell_index) % 2:
          order.reverse()  # Neither tree always goes first.
        for tree, (url, grpc_address, pid) in order:
          before = cpu_seconds(pid)
          cell = run_load(url, grpc_address, tmp)
          # Includes each client's warm-up requests; CPU is what a shared machine hides.
          cell["server_cpu_ms_per_request"] = (1000 * (cpu_seconds(pid) - before) /
                                               max(1, cell["requests"]))
          runs[tree].setdefault(name, []).append(cell)
          logging.info("%s, batching %s, %s: %s", tree, "on" if batching else "off", name,
                       json.dumps(cell))
  return {tree: {name: median_cell(cells) for name, cells in by_name.items()}
          for tree, by_name in runs.items()}


def median_cell(cells: list) -> dict:
  """Each figure's median over the rounds (errors summed)."""
  out = {key: statistics.median(c[key] for c in cells) for key in cells[0] if key != "errors"}
  out["errors"] = sum(c["errors"] for c in cells)
  out["rounds"] = len(cells)
  return out


def table(result: dict) -> str:
  rows = ["| protocol | clients | batching | requests/s | p50 ms | p99 ms | server CPU ms/request "
          "| errors |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for batching in ("off", "on"):
    for key, cell in result[f"batching_{batching}"].items():
      protocol, clients = key.split("/")
      rows.append(f"| {protocol} | {clients} | {batching} | {cell['rps']:.0f} | "
                  f"{cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | "
                  f"{cell['server_cpu_ms_per_request']:.2f} | {cell['errors']} |")
  ip = result["in_process"]
  rows.append(f"| in-process `{result['signature_name']}` | 1 | - | {ip['rps']:.0f} | {ip['p50_ms']:.2f} | "
              f"{ip['p99_ms']:.2f} | - | 0 |")
  return "\n".join(rows)


def side_by_side(result: dict) -> str:
  """Each cell before (--baseline_tree) and after, then the ratios of both."""
  rows = ["| cell | batching | before req/s | after req/s | before p50 ms | after p50 ms | "
          "before p99 ms | after p99 ms |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for batching in ("off", "on"):
    for key, after in result[f"batching_{batching}"].items():
      before = result["baseline"][f"batching_{batching}"][key]
      rows.append(f"| {key} | {batching} | {before['rps']:.0f} | {after['rps']:.0f} | "
                  f"{before['p50_ms']:.2f} | {after['p50_ms']:.2f} | {before['p99_ms']:.2f} | "
                  f"{after['p99_ms']:.2f} |")
  rows += ["", "| ratio | before | after |", "| --- | --- | --- |"]
  for name, value in result["ratios"].items():
    rows.append(f"| {name} | {result['baseline']['ratios'][name]:.2f} | {value:.2f} |")
  return "\n".join(rows)


def ratios(result: dict) -> dict:
  top = max(FLAGS.concurrency, key=int)
  out = {}
  for protocol in ("rest", "grpc", "rest-wrk", "grpc-h2load"):
    if f"{protocol}/{top}" not in result["batching_on"]:
      continue
    on, off = result["batching_on"][f"{protocol}/{top}"], result["batching_off"][f"{protocol}/{top}"]
    out[f"{protocol} batching on/off throughput at {top} clients"] = on["rps"] / off["rps"]
    out[f"{protocol} server CPU a request, batching off/on at {top} clients"] = (
        off["server_cpu_ms_per_request"] / on["server_cpu_ms_per_request"])
    out[f"{protocol} p50 at 1 client (batching off) / in-process p50"] = (
        result["batching_off"][f"{protocol}/1"]["p50_ms"] / result["in_process"]["p50_ms"])
  return out


def thread_flags() -> list:
  """The server's TensorFlow thread flags; the in-process figure uses the same pools."""
  return [f"--tensorflow_{kind}_op_parallelism={FLAGS[f'tensorflow_{kind}_op_parallelism'].value}"
          for kind in ("intra", "inter")]


def define_flags() -> None:
  """Defines this entry point's flags; called only when run as a program."""
  flags.DEFINE_string("model_base_path", "saved_models/lstm", "Exported model (base path); "
                      "configs/lstm.flags writes it.")
  flags.DEFINE_string("model_name", "lstm", "Name to serve it under.")
  flags.DEFINE_string("signature_name", "serving_default", "Signature every request (and the "
                      "in-process floor) calls, e.g. `explain` to measure what an explanation "
                      "costs beside serving_default.")
  flags.DEFINE_list("concurrency", ["1", "8", "32"], "Concurrent clients per cell.")
  flags.DEFINE_float("seconds", 8.0, "Load time per cell.")
  flags.DEFINE_integer("max_requests", 2000, "Cap on requests per client per cell.")
  flags.DEFINE_integer("client_processes", 4, "Processes the clients are spread over.")
  flags.DEFINE_string("output", "bench/results/serve_bench.json", "Where the JSON goes.")
  flags.DEFINE_integer("rounds", 1, "Times each cell is measured (trees alternating which "
                       "goes first); figures are the medians.")
  flags.DEFINE_string("baseline_tree", "", "A source tree of earlier code (e.g. `git archive` "
                      "of main): its server is measured beside this one, cell by cell, in the "
                      "same run.")
  flags.DEFINE_integer("tensorflow_intra_op_parallelism", 0, "For the server and the "
                       "in-process calls alike; 0 lets TensorFlow pick.")
  flags.DEFINE_integer("tensorflow_inter_op_parallelism", 0, "For the server and the "
                       "in-process calls alike; 0 lets TensorFlow pick.")


def main(argv):
  del argv
  from tfagent.versions import resolve_saved_model
  from tfagent.serving.options import set_tensorflow_threads
  set_tensorflow_threads(FLAGS.tensorflow_intra_op_parallelism,
                         FLAGS.tensorflow_inter_op_parallelism)
  base = os.path.abspath(FLAGS.model_base_path)
  path = resolve_saved_model(base)
  result = {"saved_model": path, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "seconds_per_cell": FLAGS.seconds, "server_flags": thread_flags(),
            "signature_name": FLAGS.signature_name}
  result["in_process"] = in_process_latency(path, FLAGS.seconds, FLAGS.signature_name)
  logging.info("in-process: %s", json.dumps(result["in_process"]))
  ctx = multiprocessing.get_context("spawn")
  with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ProcessPoolExecutor(
      FLAGS.client_processes, mp_context=ctx) as pool:
    logging.info("Client processes: %s", sorted(set(pool.map(warm_worker,
                                                           range(FLAGS.client_processes)))))
    for batching in (False, True):
      cells = run_server_cells(pool, base, batching, tmp)
      result[f"batching_{'on' if batching else 'off'}"] = cells["current"]
      if "baseline" in cells:
        result.setdefault("baseline", {"tree": FLAGS.baseline_tree})[
            f"batching_{'on' if batching else 'off'}"] = cells["baseline"]
  result["ratios"] = ratios(result)
  if "baseline" in result:
    result["baseline"]["ratios"] = ratios({**result["baseline"],
                                           "in_process": result["in_process"]})
  os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
  print(table(result))
  for name, value in result["ratios"].items():
    print(f"{name}: {value:.2f}")
  if "baseline" in result:
    print(side_by_side(result))


if __name__ == "__main__":
  define_flags()
  app.run(main)
