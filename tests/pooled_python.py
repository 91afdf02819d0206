"""Long-lived Pythons, one of each kind a test worker, that run scripts as `python -c SCRIPT
ARG...` would (sys.argv, a fresh `__main__` namespace, the script's stdout returned).

Starting a Python that imports TensorFlow costs about 6 CPU-seconds on the CI machines, and
the suite did it two dozen times for two kinds of check (bench/results/ci_time.md):
- `clean`: an export loads "in a clean process": a Python that imports TensorFlow and the
  modules named, never tfagent, keras_hub or gensim (every answer checks that none of them, nor
  a module not asked for such as tensorflow_text, was imported; one that was ends that Python);
- `mirrored`: training under MirroredStrategy over two logical CPUs, which must be set before
  TensorFlow first runs an op, so once a process.
A script that fails is reported with its traceback as a CompletedProcess's stderr; a Python
that dies or hangs (past `timeout`) is started again for the next script.
"""

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = ("tfagent", "keras_hub", "gensim")
OPTIONAL = ("tensorflow_text",)  # Imported only where a kind asks for it.

_SERVER = r"""
import contextlib, importlib, io, json, sys, traceback
_kind, _modules = sys.argv[1], json.loads(sys.argv[2])
import tensorflow as tf
if _kind == "mirrored":
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
for _module in _modules:
  importlib.import_module(_module)
_forbidden = set() if _kind == "mirrored" else set(json.loads(sys.argv[3])) - set(_modules)
_answers, sys.stdout = sys.stdout, sys.stderr  # Stray prints go to the log, not the answers.
for _line in sys.stdin:
  _job = json.loads(_line)
  sys.argv, _out, _rc, _error = ["-c", *_job["args"]], io.StringIO(), 0, ""
  try:
    with contextlib.redirect_stdout(_out):
      exec(compile(_job["script"], "<script>", "exec"), {"__name__": "__main__"})
  except SystemExit as e:
    _rc = e.code if isinstance(e.code, int) else int(e.code is not None)
  except BaseException:
    _rc, _error = 1, traceback.format_exc()
  _leaked = sorted({m.split(".")[0] for m in sys.modules} & _forbidden)
  _answers.write(json.dumps({"stdout": _out.getvalue(), "rc": _rc, "error": _error,
                             "leaked": _leaked}) + "\n")
  _answers.flush()
"""

_pythons = {}


class _Python:
  """One long-lived Python of a kind, its log (stderr) in a temporary file."""

  def __init__(self, kind: str, modules: tuple):
    self.log = tempfile.NamedTemporaryFile("w+", prefix=f"pooled_{kind}_", suffix=".log")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if kind == "mirrored":  # Imports tfagent and the tests' helpers from the checkout.
      env["PYTHONPATH"], cwd = ROOT, ROOT
      env.pop("TF_CONFIG", None)
    else:  # Nothing of the checkout is importable from here.
      env.pop("PYTHONPATH", None)
      cwd = tempfile.gettempdir()
    self.proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, kind, json.dumps(modules), json.dumps(PROJECT + OPTIONAL)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=cwd,
        env=env)

  def run(self, script: str, args: list, timeout: float) -> dict | None:
    """The answer to one script, or None when the Python died or hung (it is then ended)."""
    try:
      self.proc.stdin.write(json.dumps({"script": script, "args": args}) + "\n")
      self.proc.stdin.flush()
    except BrokenPipeError:
      return None
    ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
    line = self.proc.stdout.readline() if ready else ""
    if not line:
      self.close()
      return None
    return json.loads(line)

  def log_tail(self) -> str:
    self.log.seek(0)
    return self.log.read()[-3000:]

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()


def run(kind: str, script: str, *args, modules=(), timeout: float = 600):
  """Runs `script` with `args` in the worker's long-lived Python of `kind` ("clean" or
  "mirrored") that also imported `modules`; returns a CompletedProcess (stdout: the
  script's; stderr: its traceback, or why the Python ended)."""
  key = (kind, tuple(modules))
  python = _pythons.get(key)
  if python is None or python.proc.poll() is not None:
    python = _pythons[key] = _Python(kind, tuple(modules))
  args = [str(a) for a in args]
  answer = python.run(script, args, timeout)
  command = [sys.executable, "-c", "<script>", *args]
  if answer is None:
    del _pythons[key]
    return subprocess.CompletedProcess(command, 1, "", f"the pooled {kind} Python ended (or "
                                       f"ran past {timeout} s); its log:\n{python.log_tail()}")
  if answer["leaked"]:  # That Python is no longer clean: the next script gets a new one.
    python.close()
    del _pythons[key]
    return subprocess.CompletedProcess(command, 1, answer["stdout"], "the script imported "
                                       f"{answer['leaked']} into a clean Python")
  return subprocess.CompletedProcess(command, answer["rc"], answer["stdout"], answer["error"])


@atexit.register
def _close_all() -> None:
  for python in _pythons.values():
    python.close()


def clean_json(script: str, *args, modules=(), timeout: float = 600):
  """The JSON of the last line `script` printed in the worker's clean Python (with
  `modules`); the script's failure fails the calling test with its traceback."""
  proc = run("clean", script, *args, modules=modules, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def mirrored_result(script: str, *args, timeout: float = 900) -> dict:
  """The JSON after "RESULT " in the last such line `script` printed in the worker's Python
  with two logical CPUs; the script's failure fails the calling test with its traceback."""
  proc = run("mirrored", script, *args, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])
