"""The run's Keras callbacks: TensorBoard, early stopping, atomic checkpoints, step backups.

Each writes through tf.io.gfile (directly or through Keras), so --model_dir may be
gs:// or ram://; the ones that decide on epochs survive a restart (backup.Resumable).
"""

import math
import sys
import os

from absl import logging
import keras
import tensorflow as tf

from tfagent import backup, config, fileio, imbalance, progress, summaries
from tfagent.errors import ConfigError


class AtomicModelCheckpoint(backup.Resumable, keras.callbacks.Callback):
  """Saves the whole string-input model as `last.keras` and `best.keras`.

  Each file is written beside its final name and renamed into place
  (fileio.replace_atomically), so a crash never leaves a half-written checkpoint
  under the final name. `best` survives a restart (it is saved with the step backup).
  """
  STATE = ("best",)

  def __init__(self, model_to_save: keras.Model, directory: str, monitor="val_loss",
               mode="min"):
    super().__init__()
    self.model_to_save, self.directory, self.monitor = model_to_save, directory, monitor
    self.sign = -1.0 if mode == "max" else 1.0  # `best` is kept as a value to minimise.
    self.best = math.inf

  def _save(self, name: str) -> None:
    fileio.replace_atomically(self.model_to_save.save, os.path.join(self.directory, name))

  def on_epoch_end(self, epoch, logs=None):
    tf.io.gfile.makedirs(self.directory)
    self._save("last.keras")
    value = (logs or {}).get(self.monitor, self.sign * math.inf)
    if self.sign * value < self.best:
      self.best = float(self.sign * value)
      self._save("best.keras")
      logging.info("Epoch %d: %s improved to %.4f, saved best.keras", epoch + 1,
                   self.monitor, value)


class ResumableEarlyStopping(backup.Resumable, keras.callbacks.EarlyStopping):
  """EarlyStopping whose patience count and best value survive a restart.

  Best weights are not held here: they come back from `checkpoints/best.keras`
  after training (see restore_best), which a restart does not lose.
  """
  # stopped_epoch too: a run killed after it stopped (while exporting) must not train on.
  STATE = ("wait", "best", "best_epoch", "stopped_epoch")


class EpochHistory(backup.Resumable, keras.callbacks.Callback):
  """Every epoch's logs, as one dict of lists, across fits and restarts (Keras' History
  holds one fit's)."""
  STATE = ("history",)

  def __init__(self):
    super().__init__()
    self.history = {}

  def on_epoch_end(self, epoch, logs=None):
    for key, value in (logs or {}).items():
      self.history.setdefault(key, []).append(float(value))

  def so_far(self) -> dict:
    """The epochs run so far, before a restart included."""
    return self.history or (self.carried or {}).get("history") or {}


def profile_range(steps: str):
  """Parses --profile_steps "FIRST,LAST" (1-based steps of a fit) for Keras' profile_batch."""
  if not steps:
    return 0
  parts = steps.split(",")
  if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts) \
      or int(parts[0]) > int(parts[1]):
    raise config_error("profile_steps", steps, "two positive steps FIRST,LAST, e.g. 5,8")
  return int(parts[0]), int(parts[1])


def fit_verbosity(train_cfg) -> int:
  """A progress bar on a terminal; one line per epoch in logs and CI."""
  if train_cfg.verbose >= 0:
    return train_cfg.verbose
  return 1 if sys.stdout.isatty() else 2


def config_error(flag: str, value, valid: str) -> ConfigError:
  return ConfigError(f"--{flag}={value!r} is invalid; expected {valid}.")


def make_callbacks(cfg: config.Config, model: keras.Model, start: backup.Position,
                   steps_per_epoch: int) -> list:
  """Throughput, progress, TensorBoard, early stopping, atomic checkpoints and step backups."""
  run, verbosity = cfg.train.model_dir, fit_verbosity(cfg.train)
  monitor, mode = cfg.train.monitor, imbalance.check_monitor(cfg.train.monitor)
  stopping = ResumableEarlyStopping(monitor, mode=mode,
                                    patience=cfg.train.early_stopping_patience, verbose=1)
  checkpoint = AtomicModelCheckpoint(model, os.path.join(run, "checkpoints"), monitor, mode)
  history = EpochHistory()
  return [
      summaries.Throughput(cfg.data.batch_size),  # Before TensorBoard, which logs it.
      # Between Keras' epoch lines (no progress bar) or after each epoch (under a bar).
      *([progress.FitProgress(cfg.data.batch_size, progress.EVERY_SECONDS
                              if verbosity == 2 else None)] if verbosity else []),
      keras.callbacks.TensorBoard(summaries.log_dirs(run)[0],  # logs/train, logs/validation
                                  profile_batch=profile_range(cfg.train.profile_steps)),
      stopping, checkpoint, history,
      # Last: it saves the state the callbacks above reached at the epoch's end.
      backup.StepBackup(os.path.join(run, "backup"), cfg.train.backup_every_steps,
                        steps_per_epoch, start, {"early_stopping": stopping,
                                                 "checkpoint": checkpoint, "history": history},
                        backup.run_fingerprint(cfg)),
  ]
