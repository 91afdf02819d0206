"""Starts `python -m tfagent.serve` in a subprocess on free loopback ports."""

import contextlib
import os
import socket
import subprocess
import sys
import time

import requests


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def run_server(args: list, model: str, log_path: str, timeout: float = 120.0):
  """Yields (rest_url, grpc_address) once `model` answers its status; stops it after."""
  rest, grpc_port = free_port(), free_port()
  cmd = [sys.executable, "-m", "tfagent.serve", f"--rest_api_port={rest}",
         f"--port={grpc_port}", "--bind_address=127.0.0.1", *args]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
  url = f"http://127.0.0.1:{rest}"
  try:
    deadline = time.monotonic() + timeout
    while True:
      if proc.poll() is not None:
        raise RuntimeError(f"server exited {proc.returncode}:\n{open(log_path).read()[-3000:]}")
      try:
        if requests.get(f"{url}/v1/models/{model}", timeout=2).status_code == 200:
          break
      except requests.ConnectionError:
        pass
      if time.monotonic() > deadline:
        raise RuntimeError(f"server not ready in {timeout} s:\n{open(log_path).read()[-3000:]}")
      time.sleep(0.3)
    yield url, f"127.0.0.1:{grpc_port}"
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
