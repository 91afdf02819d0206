"""Runs `python -m tfagent.serve` as a child process on free loopback ports (tests, bench)."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port() -> int:
  """A TCP port free on 127.0.0.1 now (the OS picks it)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _ready(url: str) -> bool:
  try:
    with urllib.request.urlopen(url, timeout=2) as response:
      return response.status == 200
  except (urllib.error.URLError, ConnectionError, OSError):
    return False


@contextlib.contextmanager
def serve_in_subprocess(args: list, model: str, log_path: str, timeout: float = 120.0):
  """Yields (rest_url, grpc_address, pid) once `model` answers GET /v1/models/{model}.

  The server binds 127.0.0.1 only; it is stopped (SIGTERM, then SIGKILL) on exit.
  """
  rest, grpc_port = free_port(), free_port()
  cmd = [sys.executable, "-m", "tfagent.serve", f"--rest_api_port={rest}",
         f"--port={grpc_port}", "--bind_address=127.0.0.1", *args]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
  url = f"http://127.0.0.1:{rest}"
  try:
    deadline = time.monotonic() + timeout
    while not _ready(f"{url}/v1/models/{model}"):
      if proc.poll() is not None or time.monotonic() > deadline:
        with open(log_path) as f:
          tail = f.read()[-3000:]
        raise RuntimeError(f"server not ready (exit code {proc.poll()}):\n{tail}")
      time.sleep(0.3)
    yield url, f"127.0.0.1:{grpc_port}", proc.pid
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
