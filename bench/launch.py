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


def server_command(args: list, ports: tuple | None = None) -> tuple:
  """(command, rest port, grpc port): `python -m tfagent.serve` on loopback.

  With `ports`, the caller's args name them already (an entrypoint's own
  command line); else free ports are picked and passed first.
  """
  if ports:
    return [sys.executable, "-m", "tfagent.serve", *args, "--bind_address=127.0.0.1"], *ports
  rest, grpc_port = free_port(), free_port()
  return [sys.executable, "-m", "tfagent.serve", f"--rest_api_port={rest}",
          f"--port={grpc_port}", "--bind_address=127.0.0.1", *args], rest, grpc_port


@contextlib.contextmanager
def serve_in_subprocess(args: list, model: str, log_path: str, timeout: float = 120.0,
                        ports: tuple | None = None, python_path: str | None = None):
  """Yields (rest_url, grpc_address, pid) once `model` answers GET /v1/models/{model}.

  The server binds 127.0.0.1 only; it is stopped (SIGTERM, then SIGKILL) on exit.
  `python_path` runs the server from another source tree (bench: before and after).
  """
  cmd, rest, grpc_port = server_command(args, ports)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
  if python_path:
    env["PYTHONPATH"] = python_path
  with open(log_path, "w") as log:  # Local: the child process writes it through the OS.
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
