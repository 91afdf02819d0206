"""Serving benchmark: REST and gRPC at 1, 8 and 32 concurrent clients, batching on
and off, beside the in-process latency of the same SavedModel, in one run.

  python -m tfagent.train --flagfile=configs/lstm.flags
  python bench/serve_bench.py --model_base_path=saved_models/lstm --model_name=lstm \
      [--baseline_tree=/tmp/main]   # e.g. git archive main | tar -x -C /tmp/main
      [--signature_name=explain --output=bench/results/serve_bench_explain.json]
  python bench/serve_bench.py --model_base_path=saved_models/distilled --model_name=m \
      --compare_base_path=saved_models/best_accuracy --instances_per_request=32

Each client sends --instances_per_request texts per request (1 by default), back to
back, for --seconds (at most
--max_requests each); clients run in --client_processes processes so the
load generator's GIL does not cap the server. Where `wrk` is installed (Debian
package), the REST cells are run again with it (rows `rest-wrk`), and where
`h2load` is (package nghttp2-client), the gRPC Predict cells (rows `grpc-h2load`):
C load generators that leave the shared cores to the server (bench/serve_c_loads.py).
With --compare_base_path a second model is served beside the first and every cell
loads the two in turn, so the ratio of their throughputs is measured side by side.
Everything targets 127.0.0.1.
"""

import concurrent.futures
import contextlib
import functools
import gzip
import itertools
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import serve_c_loads  # noqa: E402

FLAGS = flags.FLAGS
TEXTS = ["这本书写得很好，推荐", "质量太差了，很失望", "物流很快，包装完好", "a great movie, loved it",
         "屏幕有划痕，客服态度差", "性价比高，下次还买", "terrible, waste of money", "还行吧，一般般"]


def use_texts(texts: list) -> None:
  """Makes `texts` the requests' texts (in this process; the pool's initializer in others)."""
  TEXTS[:] = texts


def read_texts(path: str, count: int = 64) -> list:
  """The first `count` texts of `path`: the `text` field of a csv, tsv or jsonl file, read as
  `tfagent predict --input` reads it, or one text a line (either optionally .gz)."""
  from tfagent import predict
  name = path[:-3] if path.endswith(".gz") else path
  if os.path.splitext(name)[1].lower() in (".csv", ".tsv", ".jsonl"):
    texts = list(itertools.islice(predict.file_texts(path, "text"), count))
  else:
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
      texts = [line.rstrip("\n") for line in itertools.islice(f, count)]
  if not texts:
    raise app.UsageError(f"--texts_file={path}: no texts.")
  return texts


def percentile(values: list, q: float) -> float:
  values = sorted(values)
  return values[min(len(values) - 1, int(q * len(values)))]


def request_texts(k: int, n: int) -> list:
  """The `n` texts of request `k`: TEXTS in turn, from the k-th on."""
  return [TEXTS[(k + j) % len(TEXTS)] for j in range(n)]


def in_process_latency(paths: list, seconds: float, signature_name: str, n: int = 1) -> list:
  """Each export's signature called directly on `n` texts, the exports taking turns call by
  call for `seconds` in all: the floor to compare with. A summary an export."""
  import tensorflow as tf
  from tfagent import signatures
  serves = [signatures.load_signature(path, signature_name) for path in paths]
  for serve in serves:
    for k in range(len(TEXTS)):
      serve(text=tf.constant(request_texts(k, n)))
  latencies = [[] for _ in paths]
  start, i = time.perf_counter(), 0
  while time.perf_counter() - start < seconds and i < 5000:
    for latency, serve in zip(latencies, serves):
      t = time.perf_counter()
      [v.numpy() for v in serve(text=tf.constant(request_texts(i, n))).values()]
      latency.append(time.perf_counter() - t)
    i += 1
  # Each export's calls/s over its own busy time: the turns of the others do not count.
  return [summary(latency, sum(latency), 0) for latency in latencies]


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
  signature_name, texts a request)` from `start_at` for `seconds`."""
  import threading
  from tfagent import client
  server, protocol, model, signature_name, n = target
  c = client.make_client(server, model, protocol)
  for k in range(2):
    c.predict(request_texts(k, n), signature_name)  # Connect and warm this process's client.
  latencies, errors, lock = [], [0], threading.Lock()

  def loop(k):
    mine, sent = [], 0
    while time.time() < start_at:
      time.sleep(0.001)
    while time.time() < start_at + seconds and sent < max_requests:
      t = time.perf_counter()
      try:
        c.predict(request_texts(k + sent, n), signature_name)
        mine.append(time.perf_counter() - t)
      except Exception:  # noqa: BLE001  Counted, reported.
        errors[0] += 1
      sent += 1
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
  target = (server, protocol, FLAGS.model_name, FLAGS.signature_name,
            FLAGS.instances_per_request)
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


def cell_plan(pool) -> list:
  """(cell name, load(url, grpc_address, tmp)) for every cell a server is measured on."""
  plan = []
  for protocol in ("rest", "grpc"):
    for clients in FLAGS.concurrency:
      plan.append((f"{protocol}/{clients}", functools.partial(
          lambda p, c, url, address, tmp: load(
              pool, url.removeprefix("http://") if p == "rest" else address, p, int(c)),
          protocol, clients)))
  texts = request_texts(0, FLAGS.instances_per_request)
  if shutil.which("wrk"):
    for clients in FLAGS.concurrency:
      plan.append((f"rest-wrk/{clients}", functools.partial(
          lambda c, url, address, tmp: serve_c_loads.wrk_load(url, int(c), tmp, texts),
          clients)))
  if shutil.which("h2load"):
    for clients in FLAGS.concurrency:
      plan.append((f"grpc-h2load/{clients}", functools.partial(
          lambda c, url, address, tmp: serve_c_loads.h2load_load(url, address, int(c), tmp,
                                                                 texts, summary), clients)))
  return plan


def server_plan(base: str) -> dict:
  """{name: (model base path, source tree or None)} of every server a cell loads in turn:
  `current`, with --baseline_tree `baseline` (earlier code), with --compare_base_path
  `compare` (another model)."""
  servers = {"current": (base, None)}
  if FLAGS.baseline_tree:
    servers["baseline"] = (base, os.path.abspath(FLAGS.baseline_tree))
  if FLAGS.compare_base_path:
    servers["compare"] = (os.path.abspath(FLAGS.compare_base_path), None)
  return servers


def server_args(base: str, batching: bool) -> list:
  """The server's flags for the model at `base`."""
  args = [f"--model_name={FLAGS.model_name}", f"--model_base_path={base}",
          "--file_system_poll_wait_seconds=0", *thread_flags()]
  if batching:
    args += ["--enable_batching",
             f"--batching_parameters_file={os.path.join(base, 'batching_parameters.txt')}"]
  return args


def run_server_cells(pool, base: str, batching: bool, tmp: str) -> dict:
  """Starts every server of `server_plan` and loads each at every cell, in turn, cell by cell.

  Returns {server: {cell: figures}}; the earlier code (--baseline_tree) or another model
  (--compare_base_path) is measured beside this one in the same run, so machine load hits
  both alike.
  """
  from bench.launch import serve_in_subprocess
  plan = server_plan(base)
  runs = {tree: {} for tree in plan}
  with contextlib.ExitStack() as stack:
    servers = {tree: stack.enter_context(serve_in_subprocess(
        server_args(model_base, batching), FLAGS.model_name,
        os.path.join(tmp, f"server-{tree}-{batching}.log"), python_path=path))
        for tree, (model_base, path) in plan.items()}
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
          cell["examples_per_second"] = cell["rps"] * FLAGS.instances_per_request
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


def measured(result: dict) -> list:
  """The batching modes (off, on) of `result`'s cells."""
  return [b for b in ("off", "on") if f"batching_{b}" in result]


def table(result: dict) -> str:
  rows = ["| protocol | clients | batching | requests/s | p50 ms | p99 ms | server CPU ms/request "
          "| errors |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for batching in measured(result):
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
  for batching in measured(result):
    for key, after in result[f"batching_{batching}"].items():
      before = result["baseline"][f"batching_{batching}"][key]
      rows.append(f"| {key} | {batching} | {before['rps']:.0f} | {after['rps']:.0f} | "
                  f"{before['p50_ms']:.2f} | {after['p50_ms']:.2f} | {before['p99_ms']:.2f} | "
                  f"{after['p99_ms']:.2f} |")
  rows += ["", "| ratio | before | after |", "| --- | --- | --- |"]
  for name, value in result["ratios"].items():
    rows.append(f"| {name} | {result['baseline']['ratios'][name]:.2f} | {value:.2f} |")
  return "\n".join(rows)


def compare_ratios(result: dict) -> dict:
  """{cell: this model's examples/s / the compared model's}, every cell and in-process."""
  out = {"in-process": result["in_process"]["rps"] / result["compare"]["in_process"]["rps"]}
  for batching in measured(result):
    for key, cell in result[f"batching_{batching}"].items():
      other = result["compare"][f"batching_{batching}"][key]
      out[f"{key}, batching {batching}"] = cell["rps"] / max(other["rps"], 1e-9)
  return out


def compare_table(result: dict) -> str:
  """Each cell for both models (--compare_base_path) and the ratio, as Markdown."""
  n, ratio = result["instances_per_request"], result["compare"]["throughput_ratios"]
  rows = [f"| cell ({n} texts a request) | model examples/s (p50 ms) | compared examples/s "
          "(p50 ms) | model / compared |", "| --- | --- | --- | --- |"]
  cells = [("in-process", result["in_process"], result["compare"]["in_process"])]
  for batching in measured(result):
    for key, cell in result[f"batching_{batching}"].items():
      cells.append((f"{key}, batching {batching}", cell,
                    result["compare"][f"batching_{batching}"][key]))
  for name, mine, other in cells:
    rows.append(f"| {name} | {mine['examples_per_second']:.0f} ({mine['p50_ms']:.2f}) | "
                f"{other['examples_per_second']:.0f} ({other['p50_ms']:.2f}) | "
                f"{ratio[name]:.2f}x |")
  return "\n".join(rows)


def ratios(result: dict, skipped: list = None) -> dict:
  """Batching on/off at the most clients measured and, where a 1-client cell was measured,
  its p50 over the in-process p50; each ratio left out for want of its cells is named in
  `skipped` (when given)."""
  out = {}
  for protocol in ("rest", "grpc", "rest-wrk", "grpc-h2load"):
    if measured(result) != ["off", "on"]:
      continue
    clients = [int(key.split("/")[1]) for key in result["batching_on"]
               if key.split("/")[0] == protocol and key in result["batching_off"]]
    if not clients:
      continue
    top = max(clients)
    on, off = (result[f"batching_{b}"][f"{protocol}/{top}"] for b in ("on", "off"))
    out[f"{protocol} batching on/off throughput at {top} clients"] = on["rps"] / off["rps"]
    out[f"{protocol} server CPU a request, batching off/on at {top} clients"] = (
        off["server_cpu_ms_per_request"] / on["server_cpu_ms_per_request"])
    name = f"{protocol} p50 at 1 client (batching off) / in-process p50"
    if f"{protocol}/1" in result["batching_off"]:
      out[name] = result["batching_off"][f"{protocol}/1"]["p50_ms"] / result["in_process"]["p50_ms"]
    elif skipped is not None:
      skipped.append(f"{name}: no 1-client cell (clients measured: "
                     f"{', '.join(map(str, sorted(clients)))})")
  return out


def write_result(result: dict) -> None:
  """`result` as JSON to --output."""
  os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)


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
  flags.DEFINE_list("concurrency", ["1", "8", "32"], "Concurrent clients per cell (without "
                    "1 the 1-client p50 / in-process p50 ratios are skipped, and say so).")
  flags.DEFINE_multi_enum("batching", ["off", "on"], ["off", "on"], "Server batching modes "
                          "measured, each with its own servers.")
  flags.DEFINE_float("seconds", 8.0, "Load time per cell.")
  flags.DEFINE_integer("max_requests", 2000, "Cap on requests per client per cell.")
  flags.DEFINE_integer("client_processes", 4, "Processes the clients are spread over.")
  flags.DEFINE_string("output", "bench/results/serve_bench.json", "Where the JSON goes.")
  flags.DEFINE_integer("rounds", 1, "Times each cell is measured (trees alternating which "
                       "goes first); figures are the medians.")
  flags.DEFINE_string("texts_file", "", "Request texts: the first 64 of a csv(.gz) with a "
                      "`text` column or of a file with one text a line (e.g. IMDB reviews, "
                      "for a model whose cost grows with length); default: 8 short reviews.")
  flags.DEFINE_integer("instances_per_request", 1, "Texts in each request (REST `instances`, "
                       "gRPC `text` tensor) and each in-process call: with 1 the server's "
                       "fixed cost a request hides the model's.")
  flags.DEFINE_string("compare_base_path", "", "Another exported model (base path), served "
                      "beside --model_base_path under the same name and flags and measured "
                      "cell by cell, in turns, in the same run; its figures and the ratios "
                      "go under `compare`.")
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
  if FLAGS.texts_file:
    use_texts(read_texts(FLAGS.texts_file))
  base = os.path.abspath(FLAGS.model_base_path)
  path = resolve_saved_model(base)
  result = {"saved_model": path, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "texts_file": FLAGS.texts_file, "texts": len(TEXTS),
            "seconds_per_cell": FLAGS.seconds, "server_flags": thread_flags(),
            "signature_name": FLAGS.signature_name,
            "instances_per_request": FLAGS.instances_per_request}
  paths = [path]
  if FLAGS.compare_base_path:
    paths.append(resolve_saved_model(os.path.abspath(FLAGS.compare_base_path)))
    result["compare"] = {"saved_model": paths[1]}
  in_process = in_process_latency(paths, FLAGS.seconds, FLAGS.signature_name,
                                  FLAGS.instances_per_request)
  for target, cell in zip([result, result.get("compare")], in_process):
    cell["examples_per_second"] = cell["rps"] * FLAGS.instances_per_request
    target["in_process"] = cell
  logging.info("in-process: %s", json.dumps(in_process))
  ctx = multiprocessing.get_context("spawn")
  with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ProcessPoolExecutor(
      FLAGS.client_processes, mp_context=ctx, initializer=use_texts,
      initargs=(list(TEXTS),)) as pool:
    logging.info("Client processes: %s", sorted(set(pool.map(warm_worker,
                                                           range(FLAGS.client_processes)))))
    for batching in (mode == "on" for mode in FLAGS.batching):
      cells = run_server_cells(pool, base, batching, tmp)
      result[f"batching_{'on' if batching else 'off'}"] = cells["current"]
      if "baseline" in cells:
        result.setdefault("baseline", {"tree": FLAGS.baseline_tree})[
            f"batching_{'on' if batching else 'off'}"] = cells["baseline"]
      if "compare" in cells:
        result["compare"][f"batching_{'on' if batching else 'off'}"] = cells["compare"]
  write_result(result)  # The measurements first: no summary below can lose them.
  skipped = []
  result["ratios"] = ratios(result, skipped)
  if skipped:
    result["ratios_skipped"] = skipped
  if "compare" in result:
    result["compare"]["throughput_ratios"] = compare_ratios(result)
  if "baseline" in result:
    result["baseline"]["ratios"] = ratios({**result["baseline"],
                                           "in_process": result["in_process"]})
  write_result(result)
  print(table(result))
  for name, value in result["ratios"].items():
    print(f"{name}: {value:.2f}")
  for line in skipped:
    print(f"skipped: {line}")
  if "baseline" in result:
    print(side_by_side(result))
  if "compare" in result:
    print(compare_table(result))


if __name__ == "__main__":
  define_flags()
  app.run(main)
