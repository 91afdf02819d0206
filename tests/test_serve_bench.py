"""bench/serve_bench.py: requests of --instances_per_request texts, and two models measured
in one run (--compare_base_path), against real servers on loopback."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

import serving_util
from serving_util import run_server

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import serve_bench  # noqa: E402

pytestmark = pytest.mark.slow
BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "serve_bench.py")


def synthetic_base(root, max_batch_size: int) -> str:
  """A synthetic export's base path, with its batching_parameters.txt."""
  serving_util.write_synthetic_model(str(root / "1"))
  (root / "batching_parameters.txt").write_text(
      f"max_batch_size {{ value: {max_batch_size} }}\nbatch_timeout_micros {{ value: 0 }}\n")
  return str(root)


def batched_examples(url: str) -> float:
  """Examples the server's dynamic batcher has passed to the model so far (its metrics)."""
  with urllib.request.urlopen(url + "/monitoring/prometheus/metrics", timeout=10) as response:
    page = response.read().decode()
  return float(re.search(r"^tfagent_serving_batch_size_sum\{.*\} (\S+)$", page, re.M).group(1))


def test_each_request_carries_instances_per_request_texts(tmp_path):
  """The server's batcher counts 5 texts a request, warm-up included, REST and gRPC."""
  base = synthetic_base(tmp_path / "synth", 32)
  args = ["--model_name=synth", f"--model_base_path={base}", "--enable_batching",
          f"--batching_parameters_file={base}/batching_parameters.txt"]
  with run_server(args, "synth", str(tmp_path / "server.log")) as (url, address, _):
    sent = 0
    for protocol, server in (("rest", url.removeprefix("http://")), ("grpc", address)):
      latencies, errors, _ = serve_bench.client_worker((server, protocol, "synth", "", 5), 1,
                                                       time.time(), 5.0, 3)
      assert errors == 0 and len(latencies) == 3
      sent += 2 + len(latencies)  # Two warm-up requests a client.
    assert batched_examples(url) == 5 * sent


def run_bench(tmp_path, model: str, other: str, batching: str) -> subprocess.CompletedProcess:
  """serve_bench.py with 3 texts a request, `other` compared with `model`, short cells."""
  return subprocess.run([sys.executable, BENCH, f"--batching={batching}",
                         f"--model_base_path={model}",
                         "--model_name=synth", f"--compare_base_path={other}",
                         "--instances_per_request=3", "--concurrency=1", "--seconds=0.5",
                         "--client_processes=1", f"--output={tmp_path / 'bench.json'}"],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_compare_base_path_loads_both_models_cell_by_cell(tmp_path):
  """Both models answer every cell of one run; the ratios are of their own figures."""
  model = synthetic_base(tmp_path / "model", 32)
  other = synthetic_base(tmp_path / "other", 32)
  proc = run_bench(tmp_path, model, other, "off")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "bench.json").read_text())
  assert result["compare"]["saved_model"] == os.path.join(other, "1")
  assert result["compare"]["in_process"]["requests"] > 0
  assert "batching_on" not in result
  for batching in ("off",):
    for key in ("rest/1", "grpc/1"):
      mine, theirs = (r[f"batching_{batching}"][key] for r in (result, result["compare"]))
      for cell in (mine, theirs):
        assert cell["errors"] == 0 and cell["requests"] > 0
        assert cell["examples_per_second"] == pytest.approx(3 * cell["rps"])
      assert result["compare"]["throughput_ratios"][f"{key}, batching {batching}"] == (
          pytest.approx(mine["rps"] / theirs["rps"]))


def test_compared_model_is_served_from_its_own_base_path(tmp_path):
  """Its batcher takes at most 2 texts a request: 3 are refused there, and only there."""
  model = synthetic_base(tmp_path / "model", 32)
  other = synthetic_base(tmp_path / "other", 2)
  proc = run_bench(tmp_path, model, other, "on")
  assert proc.returncode != 0
  assert "Task size 3 is larger than maximum input batch size 2" in proc.stderr
  assert "current, batching on" in proc.stderr  # The model's own cells answered first.


def worker_texts(n: int) -> list:
  return serve_bench.request_texts(0, n)


def test_texts_file_gives_every_client_process_its_texts(tmp_path):
  """--texts_file: a csv.gz's `text` column or one text a line, first 64; spawned client
  processes send the same texts (the pool's initializer), not the built-in short ones."""
  import concurrent.futures
  import csv
  import gzip
  import multiprocessing
  reviews = [f"review {i}, long enough, with a comma" for i in range(70)]
  with gzip.open(tmp_path / "r.csv.gz", "wt", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["label", "text"])
    writer.writerows([[i % 2, text] for i, text in enumerate(reviews)])
  (tmp_path / "lines.txt").write_text("first\nsecond\n", encoding="utf-8")
  assert serve_bench.read_texts(str(tmp_path / "r.csv.gz")) == reviews[:64]
  assert serve_bench.read_texts(str(tmp_path / "lines.txt")) == ["first", "second"]
  built_in = list(serve_bench.TEXTS)
  try:
    serve_bench.use_texts(reviews[:3])
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=serve_bench.use_texts,
        initargs=(list(serve_bench.TEXTS),)) as pool:
      assert pool.submit(worker_texts, 4).result() == [reviews[0], reviews[1], reviews[2],
                                                       reviews[0]]
  finally:
    serve_bench.use_texts(built_in)


def cell(rps: float, p50_ms: float) -> dict:
  return {"rps": rps, "p50_ms": p50_ms, "server_cpu_ms_per_request": 1000 / rps, "errors": 0}


def test_ratios_without_a_one_client_cell_skip_the_in_process_ratio_and_say_so():
  """--concurrency=2,4: the batching ratios at 4 clients; the 1-client p50 ratio is named as
  skipped, not a KeyError."""
  result = {"in_process": cell(100, 2.0), "signature_name": "serving_default",
            "batching_off": {"rest/2": cell(50, 4.0), "rest/4": cell(60, 8.0)},
            "batching_on": {"rest/2": cell(40, 5.0), "rest/4": cell(90, 6.0)}}
  skipped = []
  out = serve_bench.ratios(result, skipped)
  assert out == {"rest batching on/off throughput at 4 clients": pytest.approx(1.5),
                 "rest server CPU a request, batching off/on at 4 clients": pytest.approx(1.5)}
  assert skipped == ["rest p50 at 1 client (batching off) / in-process p50: no 1-client cell "
                     "(clients measured: 2, 4)"]
  result["batching_off"]["rest/1"] = result["batching_on"]["rest/1"] = cell(30, 3.0)
  assert serve_bench.ratios(result)[
      "rest p50 at 1 client (batching off) / in-process p50"] == pytest.approx(1.5)
