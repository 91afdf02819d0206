"""Where the test suite's CPU goes: a pytest plugin that records each test's CPU seconds (its
worker's, and the processes it started and waited for), and a report of them.

  TFAGENT_SUITE_CPU=/tmp/cpu python -m pytest -p bench.suite_cpu     # record (any -n)
  python bench/suite_cpu.py /tmp/cpu                                 # per file, then per test

On 2 cores the suite's wall time is about its CPU seconds over 1.8 (bench/results/ci_time.md),
so the CPU a test costs, not its wall time under three busy workers, is what to cut. The
long-lived Pythons of tests/pooled_python.py are waited for only when their worker ends: the
scripts they run are charged to no test (compare the suite's total CPU with `time`).
"""

import collections
import glob
import json
import os
import resource
import sys
import time

OUT_ENV = "TFAGENT_SUITE_CPU"


def _cpu() -> tuple:
  """(this process's CPU seconds, its waited-for children's)."""
  own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                       resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _hookwrapper(function):
  """pytest's hookwrapper marker, imported only when pytest loads this file as a plugin."""
  import pytest
  return pytest.hookimpl(hookwrapper=True)(function)


@_hookwrapper
def pytest_runtest_protocol(item, nextitem):
  """Appends `{id, self, children, wall}` of one test (setup and teardown included)."""
  del nextitem
  folder = os.environ.get(OUT_ENV)
  start, wall = _cpu(), time.perf_counter()
  yield
  if not folder:
    return
  end = _cpu()
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps({"id": item.nodeid, "self": end[0] - start[0],
                        "children": end[1] - start[1],
                        "wall": time.perf_counter() - wall}) + "\n")


def report(folder: str, top: int = 40) -> str:
  """The recorded CPU per file (most first), then the `top` tests."""
  rows = [json.loads(line) for path in sorted(glob.glob(os.path.join(folder, "*.jsonl")))
          for line in open(path, encoding="utf-8")]
  if not rows:
    raise SystemExit(f"{folder}: no *.jsonl records; run pytest with {OUT_ENV}={folder} "
                     "-p bench.suite_cpu first.")
  files = collections.defaultdict(lambda: [0.0, 0.0, 0])
  for row in rows:
    entry = files[row["id"].split("::")[0]]
    entry[0], entry[1], entry[2] = entry[0] + row["self"], entry[1] + row["children"], entry[2] + 1
  total = sum(r["self"] + r["children"] for r in rows)
  lines = [f"{len(rows)} tests, {total:,.0f} CPU-seconds "
           f"({sum(r['children'] for r in rows):,.0f} in the processes they started)",
           "", "| file | tests | CPU s | of which started processes |", "| --- | --- | --- | --- |"]
  for name, (own, children, count) in sorted(files.items(), key=lambda kv: -sum(kv[1][:2])):
    lines.append(f"| {name} | {count} | {own + children:.0f} | {children:.0f} |")
  lines += ["", "| test | CPU s | of which started processes |", "| --- | --- | --- |"]
  for row in sorted(rows, key=lambda r: -(r["self"] + r["children"]))[:top]:
    lines.append(f"| {row['id']} | {row['self'] + row['children']:.1f} | {row['children']:.1f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  if len(sys.argv) != 2:
    raise SystemExit(__doc__)
  print(report(sys.argv[1]))
