"""Fault tolerance: step-level atomic backups; a run killed with SIGKILL resumes where it was."""

import json
import os
import re
import signal
import subprocess
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest

from conftest import run_command
from test_distribute import ROOT, subprocess_env, train_command
from tfagent import backup


def test_step_backup_is_atomic_and_restores(tmp_path):
  """Weights + optimizer + position in one consistent backup; no temporary file left."""
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile(keras.optimizers.Adam(), "mse")
  model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
  saver = backup.StepBackup(str(tmp_path), every_steps=2, steps_per_epoch=10,
                            start=backup.Position(1, 4), resumables={})
  saver.set_model(model)
  saver.on_train_batch_end(0)  # global step 15: not a multiple of 2
  saver.on_train_batch_end(1)  # global step 16: epoch 1, step 6
  assert sorted(os.listdir(tmp_path)) == ["ckpt-16.weights.h5", "state.json"]
  saver.on_epoch_end(1)
  assert sorted(os.listdir(tmp_path)) == ["ckpt-16.weights.h5", "state.json"]  # same step
  fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  fresh.compile(keras.optimizers.Adam(), "mse")
  position = backup.restore(fresh, str(tmp_path), steps_per_epoch=10)
  assert (position.epoch, position.step) == (2, 0)
  assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 1
  for a, b in zip(fresh.get_weights(), model.get_weights()):
    assert (a == b).all()
  backup.clear(str(tmp_path))
  assert os.listdir(tmp_path) == []


def read_state(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def assert_complete_files(run_dir) -> None:
  """Every checkpoint and backup under its final name is whole and readable."""
  state = read_state(os.path.join(run_dir, "backup", "state.json"))
  assert state is not None
  with h5py.File(os.path.join(run_dir, "backup", state["weights"]), "r") as f:
    assert len(f.keys()) > 0
  for name in os.listdir(os.path.join(run_dir, "checkpoints")):
    if name.endswith(".keras") and not name.startswith(".tmp-"):
      with zipfile.ZipFile(os.path.join(run_dir, "checkpoints", name)) as z:
        assert z.testzip() is None, name


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes(corpus_dir, tmp_path, monkeypatch):
  """Killed mid-epoch, re-run with the same command: resumes at the saved epoch and step,
  finishes, and ends with the validation metrics of an uninterrupted run (1e-4)."""
  def command(name):
    return train_command(corpus_dir, tmp_path / name, tmp_path / f"sm_{name}", "--epochs=2",
                         "--batch_size=4", "--backup_every_steps=3",
                         "--early_stopping_patience=5", "--explain_steps=0")

  killed = subprocess.Popen(command("run"), cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  state_path = tmp_path / "run" / "backup" / "state.json"
  deadline = time.monotonic() + 300
  state = None
  while time.monotonic() < deadline and killed.poll() is None:
    state = read_state(state_path)
    if state and state["epoch"] >= 1 and state["step"] > 0:  # Mid-way through epoch 2.
      killed.send_signal(signal.SIGKILL)
      break
    time.sleep(0.005)
  killed.wait(timeout=60)
  assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  assert_complete_files(tmp_path / "run")
  state = read_state(state_path)  # The backup it will resume from.

  resumed = subprocess.run(command("run"), cwd=ROOT, env=subprocess_env(),
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  match = re.search(r"Resumed from epoch (\d+) step (\d+)", resumed.stderr)
  assert match and (int(match[1]), int(match[2])) == (state["epoch"] + 1, state["step"])
  assert "Epoch 2/2" in resumed.stdout and "Epoch 1/2" not in resumed.stdout

  # The uninterrupted reference, in this process (the same flags, one process start less).
  assert run_command(monkeypatch, "train", *command("reference")[3:]) == 0
  metrics = []
  for name in ("run", "reference"):
    with open(tmp_path / name / "eval" / "metrics.json") as f:
      metrics.append(json.load(f))
  assert metrics[0]["validation"] == pytest.approx(metrics[1]["validation"], abs=1e-4)
  assert metrics[0]["accuracy"] == pytest.approx(metrics[1]["accuracy"], abs=1e-4)
  # The resumed epoch's training figures average the whole epoch, as the reference's do (they
  # averaged the steps after the restart only).
  for key in ("loss", "accuracy"):
    assert metrics[0]["history"][key] == pytest.approx(metrics[1]["history"][key], abs=1e-4)
  assert os.listdir(tmp_path / "run" / "backup") == []  # Cleared once training finished.
