"""bench/train_bench.py: flags it refuses before anything trains."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "train_bench.py")


def test_epochs_below_two_is_refused_before_any_setup_trains(tmp_path):
  """examples/s is measured over the epochs after the first: --epochs=1 used to train every
  setup, then raise ZeroDivisionError and write no JSON; now the flag is refused at once."""
  out = tmp_path / "train_bench.json"
  proc = subprocess.run([sys.executable, BENCH, "--epochs=1", "--train_examples=64",
                         "--sequence_length=32", "--setups=buckets", f"--out={out}"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode != 0
  assert "--epochs must be at least 2" in proc.stderr, proc.stderr[-3000:]
  assert "Epoch 1/1" not in proc.stdout  # Nothing trained.
  assert not out.exists()
