"""CI: `.ci/pytest`, the test step of `.ci/run`, cannot pass by collecting nothing."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
