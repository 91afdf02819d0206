"""CI: `.ci/pytest`, the test step of `.ci/run`, cannot pass by collecting nothing;
bench/suite_cpu.py, which measures where its CPU goes; and tests/pooled_python.py, the
long-lived Pythons the clean-process and Mirrored checks run in."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import suite_cpu  # noqa: E402


def run_ci_pytest(folder, *args):
  """`.ci/pytest ARGS` in `folder`, with pytest.ini's workers off (no xdist there)."""
  (folder / "pytest.ini").write_text("[pytest]\n")
  return subprocess.run([os.path.join(ROOT, ".ci", "pytest"), "-q", "-p", "no:cacheprovider",
                         *args], cwd=folder, capture_output=True, text=True, timeout=120)


def test_a_run_that_collects_no_tests_fails(tmp_path):
  (tmp_path / "test_empty.py").write_text('"""A test file whose tests were lost."""\n')
  proc = run_ci_pytest(tmp_path, "test_empty.py")
  assert proc.returncode != 0
  assert "pytest collected no tests: nothing was checked" in proc.stderr


def test_a_passing_run_passes_and_a_failing_one_fails(tmp_path):
  (tmp_path / "test_one.py").write_text("def test_ok():\n  assert True\n\n"
                                        "def test_bad():\n  assert False\n")
  assert run_ci_pytest(tmp_path, "test_one.py", "-k", "ok").returncode == 0
  assert run_ci_pytest(tmp_path, "test_one.py").returncode == 1


def test_suite_cpu_records_each_tests_own_and_started_processes_cpu(tmp_path):
  """bench/suite_cpu.py: a test that busies a child process is charged that child's CPU, one
  that busies its own process is charged its own; the report lists both files."""
  (tmp_path / "test_busy.py").write_text(
      "import subprocess, sys\n\n"
      "def test_child():\n"
      "  subprocess.run([sys.executable, '-c', 'sum(range(30_000_000))'], check=True)\n\n"
      "def test_own():\n"
      "  sum(range(30_000_000))\n")
  out = tmp_path / "cpu"
  proc = subprocess.run([os.path.join(ROOT, ".ci", "pytest"), "-q", "-p", "no:cacheprovider",
                         "-n", "0", "-p", "bench.suite_cpu", str(tmp_path / "test_busy.py")],
                        cwd=ROOT, capture_output=True, text=True, timeout=120,
                        env={**os.environ, "TFAGENT_SUITE_CPU": str(out),
                             "PYTHONPATH": ROOT})
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  rows = {r["id"].split("::")[1]: r for r in map(json.loads, next(out.iterdir()).open())}
  assert rows["test_child"]["children"] > 0.2 and rows["test_child"]["self"] < 0.2
  assert rows["test_own"]["self"] > 0.2 and rows["test_own"]["children"] == 0
  report = suite_cpu.report(str(out))
  assert report.startswith("2 tests,") and "test_busy.py::test_child" in report


@pytest.mark.slow
def test_a_pooled_clean_python_runs_scripts_and_is_replaced_once_it_imports_the_project():
  """Each script gets its arguments and a fresh namespace; a failing script is reported with
  its traceback and leaves that Python in place; a script that imports tfagent fails and the
  next script gets a new Python, so no later "clean" check runs where tfagent was loaded."""
  import pooled_python
  script = ("import os, sys\nassert 'seen' not in globals()\nseen = 1\n"
            "print(os.getpid(), *sys.argv[1:])")
  pid, *args = pooled_python.run("clean", script, "a b", 2, modules=("json",)).stdout.split()
  assert args == ["a", "b", "2"]
  failed = pooled_python.run("clean", "raise ValueError('boom')", modules=("json",))
  assert failed.returncode == 1 and "ValueError: boom" in failed.stderr
  again = pooled_python.run("clean", script, modules=("json",))
  assert again.returncode == 0 and again.stdout.split() == [pid]
  leaked = pooled_python.run("clean", "import tfagent.config", modules=("json",))
  assert leaked.returncode == 1 and "imported ['tfagent'] into a clean Python" in leaked.stderr
  fresh = pooled_python.run("clean", script, modules=("json",))
  assert fresh.returncode == 0 and fresh.stdout.split() != [pid]
