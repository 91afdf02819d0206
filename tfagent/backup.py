"""Step-level backup and restore of a training run, written atomically.

Keras 3.15's `keras.callbacks.BackupAndRestore(save_freq=N)` saves every N
batches but restores only the epoch (the resumed epoch starts again at its
first batch), writes its weights and metadata in place (a kill mid-write leaves
them half-written) and has every worker write the same files. This callback
keeps its idea and file layout (`backup/`, weights + JSON metadata) and adds:
the step within the epoch (the input stream skips the batches already seen),
the state of callbacks that decide on epochs (early stopping, best checkpoint),
and atomic writes: each file is written beside its final name, fsynced and
moved into place with os.replace, the metadata last, so the metadata always
names a complete weights file.
"""

import dataclasses
import glob
import json
import os

from absl import logging
import keras
import numpy as np

STATE_FILE = "state.json"


@dataclasses.dataclass(frozen=True)
class Position:
  """Where training stands: `epoch` (0-based) and `step` steps into it."""
  epoch: int = 0
  step: int = 0
  callbacks: dict = dataclasses.field(default_factory=dict)  # name -> state

  def global_step(self, steps_per_epoch: int) -> int:
    return self.epoch * steps_per_epoch + self.step


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def replace_atomically(write, final: str) -> None:
  """Calls `write(tmp_path)`, fsyncs the file and renames it to `final`."""
  folder, name = os.path.split(final)
  tmp = os.path.join(folder, f".tmp-{name}")
  write(tmp)
  with open(tmp, "rb+") as f:
    os.fsync(f.fileno())
  os.replace(tmp, final)
  _fsync_dir(folder)


def write_text_atomically(final: str, text: str) -> None:
  """Writes a small UTF-8 text file through `replace_atomically`."""
  def write(path):
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
  replace_atomically(write, final)


def read_state(backup_dir: str) -> dict:
  """The last backup's `state.json`, or None when there is none."""
  path = os.path.join(backup_dir, STATE_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def rng_variables(model: keras.Model) -> list:
  """The dropout layers' seed-generator states: not weights, yet needed to replay a run."""
  return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def restore(model: keras.Model, backup_dir: str, steps_per_epoch: int) -> Position:
  """Loads the last backup's weights and optimizer state into `model` (built, compiled).

  Call inside the strategy's scope: the optimizer's slots are created here.
  """
  state = read_state(backup_dir)
  if state is None:
    return Position()
  if not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  model.load_weights(os.path.join(backup_dir, state["weights"]))
  for variable, value in zip(rng_variables(model), state["rng"]):
    variable.assign(value)
  position = Position(state["epoch"], state["step"], state["callbacks"])
  logging.info("Resumed from epoch %d step %d (global step %d) of %s.", position.epoch + 1,
               position.step, position.global_step(steps_per_epoch), backup_dir)
  return position


def clear(backup_dir: str) -> None:
  """Removes the backup once training has finished, as Keras' BackupAndRestore does."""
  for path in glob.glob(os.path.join(backup_dir, "*")) + glob.glob(
      os.path.join(backup_dir, ".tmp-*")):
    os.remove(path)


class Resumable:
  """Mixin: a callback whose `STATE` attributes survive restarts and repeated fits."""
  STATE = ()
  carried = None  # State to re-apply at the next on_train_begin.

  def get_state(self) -> dict:
    values = {name: getattr(self, name) for name in self.STATE}
    return {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}  # numpy -> JSON

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    for name, value in (self.carried or {}).items():
      setattr(self, name, value)

  def on_train_end(self, logs=None):
    self.carried = self.get_state()
    super().on_train_end(logs)


class StepBackup(keras.callbacks.Callback):
  """Backs up weights, optimizer, epoch, step and callback states every N steps.

  Args:
    backup_dir: where this worker writes (the chief: the run's `backup/`;
      other workers: a temporary folder).
    every_steps: backup interval in global steps; epoch ends always back up.
    steps_per_epoch: global steps an epoch.
    start: the Position training starts (or resumes) from.
    resumables: name -> Resumable callback whose state is saved with it.
  """

  def __init__(self, backup_dir: str, every_steps: int, steps_per_epoch: int,
               start: Position, resumables: dict):
    super().__init__()
    self.backup_dir, self.every_steps = backup_dir, max(1, every_steps)
    self.steps_per_epoch, self.resumables = steps_per_epoch, resumables
    self.global_step = start.global_step(steps_per_epoch)
    for name, callback in resumables.items():
      callback.carried = start.callbacks.get(name)

  def on_train_batch_end(self, batch, logs=None):
    self.global_step += 1
    step = self.global_step % self.steps_per_epoch
    if step and self.global_step % self.every_steps == 0:
      self.save(self.global_step // self.steps_per_epoch, step)

  def on_epoch_end(self, epoch, logs=None):
    self.save(epoch + 1, 0)  # After validation and the other callbacks' epoch end.

  def save(self, epoch: int, step: int) -> None:
    """Writes `ckpt-GLOBALSTEP.weights.h5`, then `state.json` naming it; drops older ones."""
    os.makedirs(self.backup_dir, exist_ok=True)
    name = f"ckpt-{self.global_step}.weights.h5"
    replace_atomically(self.model.save_weights, os.path.join(self.backup_dir, name))
    state = {"epoch": epoch, "step": step, "global_step": self.global_step, "weights": name,
             "rng": [np.asarray(v.numpy()).tolist() for v in rng_variables(self.model)],
             "callbacks": {k: c.get_state() for k, c in self.resumables.items()}}
    write_text_atomically(os.path.join(self.backup_dir, STATE_FILE), json.dumps(state))
    for old in glob.glob(os.path.join(self.backup_dir, "ckpt-*.weights.h5")):
      if os.path.basename(old) != name:
        os.remove(old)
