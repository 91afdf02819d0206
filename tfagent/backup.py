"""Step-level backup and restore of a training run, written atomically.

Keras 3.15's `keras.callbacks.BackupAndRestore(save_freq=N)` saves every N
batches but restores only the epoch (the resumed epoch starts again at its
first batch), writes its weights and metadata in place (a kill mid-write leaves
them half-written) and has every worker write the same files. This callback
keeps its idea and file layout (`backup/`, weights + JSON metadata) and adds:
the step within the epoch (the input stream skips the batches already seen),
the state of callbacks that decide on epochs (early stopping, best checkpoint),
atomic writes through tf.io.gfile (fileio.replace_atomically), the metadata last,
so the metadata always names a complete weights file, and the fingerprint of the
settings a resume depends on, so a backup never resumes another run.

Not tf.train.CheckpointManager: its `ckpt-N.index/.data-*` layout would replace
the `ckpt-N.weights.h5` + `state.json` pair that tools and tests read, and it
holds no JSON state (position, callbacks, RNG); it gives no stronger guarantee
(it too writes beside the final name and renames, the index last).
"""

import dataclasses
import json
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfagent import config, fileio
from tfagent.errors import ConfigError

STATE_FILE = "state.json"
DATA_FILE = "data.json"  # What the run reads: a resume must read the same.
LEARNED_FILE = "learned.json"  # Vocabulary, unlabelled texts, teacher: a resume's the same.
# Settings a resume may change: where the run writes, what it logs, hardware and
# speed, how often it backs up, and --epochs (more stretches the learning-rate
# schedule over the new total, as a fresh run of that length would).
RESUME_FREE = frozenset({"train.model_dir", "train.epochs", "train.verbose",
                         "train.profile_steps", "train.misclassified_examples",
                         "train.shard_report", "train.backup_every_steps", "train.strategy",
                         "train.tpu", "train.jit_compile"})


@dataclasses.dataclass(frozen=True)
class Position:
  """Where training stands: `epoch` (0-based) and `step` steps into it, and the seconds
  trained up to there (by earlier processes too, to their last backup)."""
  epoch: int = 0
  step: int = 0
  callbacks: dict = dataclasses.field(default_factory=dict)  # name -> state
  seconds: float = 0.0
  metrics: list = None  # The epoch's running metric state (model.metrics_variables) then.

  def global_step(self, steps_per_epoch: int) -> int:
    return self.epoch * steps_per_epoch + self.step


def read_state(backup_dir: str) -> dict:
  """The last backup's `state.json`, or None when there is none."""
  path = os.path.join(backup_dir, STATE_FILE)
  if not tf.io.gfile.exists(path):
    return None
  return json.loads(fileio.read_text(path))


def run_fingerprint(cfg: config.Config) -> dict:
  """`section.field -> value` of every setting a resume depends on (not the export's)."""
  return {f"{section}.{name}": value for section, fields in cfg.to_dict().items()
          if section != "export" for name, value in fields.items()
          if f"{section}.{name}" not in RESUME_FREE}


def check_same_run(backup_dir: str, fingerprint: dict) -> None:
  """Fails, naming the differing settings, when `backup_dir` holds another run's backup."""
  state = read_state(backup_dir)
  saved = (state or {}).get("run")
  if saved is None:  # No backup, or one written before fingerprints.
    return
  changes = differences(saved, fingerprint)
  if changes:
    raise ConfigError(f"{backup_dir} holds the backup of another run ({changes}). Re-run with "
                      f"its settings to resume it, or start fresh: delete {backup_dir} or "
                      "give a new --model_dir.")


def differences(saved: dict, now: dict) -> str:
  """`key is X there, Y now; ...` for each key whose value differs ("" when none does)."""
  return "; ".join(f"{k} is {saved.get(k)!r} there, {now.get(k)!r} now"
                   for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))


def data_fingerprint(info) -> dict:
  """What identifies the data a run trains on (data.DatasetInfo): its classes, its splits'
  sizes and digests (their texts and labels, data/validate.py), as JSON reads them back."""
  return json.loads(json.dumps({"class_names": list(info.class_names),
                                "split_sizes": info.split_sizes,
                                "split_digests": info.report.get("split_digests")}))


def check_same_data(backup_dir: str, write_dir: str, fingerprint: dict, name: str = DATA_FILE,
                    what: str = "data", why: str = "the same --dataset now reads other records"
                    ) -> None:
  """A resume (a backup in `backup_dir`) must read what its backup trained on: another file
  under the same --dataset path, or a relative path read from elsewhere, fails here, naming
  what changed. A fresh start records `fingerprint` in `write_dir`/`name` for its resumes.
  `name`, `what`, `why`: LEARNED_FILE, and what the run takes in before training besides its
  data (learned_fingerprint)."""
  path = os.path.join(backup_dir, name)
  if read_state(backup_dir) is not None and tf.io.gfile.exists(path):
    changes = differences(json.loads(fileio.read_text(path)), fingerprint)
    if changes:
      raise ConfigError(f"{backup_dir} holds the backup of a run on other {what} ({changes}): "
                        f"{why}. Resume it with the {what} it trained on, or start fresh: "
                        f"delete {backup_dir} or give a new --model_dir.")
    return
  tf.io.gfile.makedirs(write_dir)
  fileio.write_text_atomically(os.path.join(write_dir, name), json.dumps(fingerprint))


def learned_fingerprint(vocabulary, unlabeled: dict, teacher_dir: str = None) -> dict:
  """What a run takes in before training besides its data, which a backup's weights depend
  on: the token vocabulary (it follows --unlabeled_vocabulary, a BERT --preset folder), the
  unlabelled texts (`unlabeled`: flag -> unlabeled.unlabeled_texts' report, or None), and
  the --teacher export's graph and variable index (which holds its variables' checksums)."""
  learned = {"vocabulary": fileio.digest(vocabulary)}
  for flag, report in sorted(unlabeled.items()):
    if report:
      learned[flag] = {"texts": report["count"], "sha256": report["sha256"]}
  if teacher_dir:
    files = [os.path.join(teacher_dir, "saved_model.pb"),
             os.path.join(teacher_dir, "variables", "variables.index")]
    learned["teacher"] = {"export": teacher_dir, "sha256": fileio.digest(
        tf.io.gfile.GFile(f, "rb").read() for f in files if tf.io.gfile.exists(f))}
  return json.loads(json.dumps(learned))


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
  weights = os.path.join(backup_dir, state["weights"])
  if not tf.io.gfile.exists(weights):
    raise ConfigError(f"{os.path.join(backup_dir, STATE_FILE)} names {state['weights']}, which "
                      f"is not there: delete {backup_dir} to start fresh.")
  if not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  model.load_weights(weights)
  for variable, value in zip(rng_variables(model), state["rng"]):
    variable.assign(value)
  position = Position(state["epoch"], state["step"], state["callbacks"],
                      state.get("train_seconds", 0.0), state.get("metrics"))
  logging.info("Resumed from epoch %d step %d (global step %d) of %s.", position.epoch + 1,
               position.step, position.global_step(steps_per_epoch), backup_dir)
  return position


def set_metric_state(model: keras.Model, values: list) -> None:
  """Assigns `model.metrics_variables` the values read from them at a backup (each a sum
  over replicas: under a strategy of N replicas, each replica holds a 1/N share)."""
  variables = model.metrics_variables
  if len(values) != len(variables):  # Other metrics (the checked settings make this rare).
    logging.warning("The backup holds %d metric variables, the model %d: the resumed epoch's "
                    "metrics average its remaining steps only.", len(values), len(variables))
    return
  strategy = model.distribute_strategy
  share = 1.0 / strategy.num_replicas_in_sync

  def assign():  # In each replica (the default strategy's one too).
    for variable, value in zip(variables, values):
      variable.assign(tf.cast(np.asarray(value) * share, variable.dtype))
  strategy.run(assign)


def clear(backup_dir: str) -> None:
  """Removes the backup once training has finished, as Keras' BackupAndRestore does:
  state.json first, so a kill midway leaves no state naming weights already removed."""
  state = os.path.join(backup_dir, STATE_FILE)
  if tf.io.gfile.exists(state):
    tf.io.gfile.remove(state)
  for path in tf.io.gfile.glob(os.path.join(backup_dir, "*")):  # .tmp-* too, unlike glob.glob
    tf.io.gfile.remove(path)


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
    fingerprint: `run_fingerprint` of the run, checked before a resume.
  """

  def __init__(self, backup_dir: str, every_steps: int, steps_per_epoch: int,
               start: Position, resumables: dict, fingerprint: dict = None):
    super().__init__()
    self.fingerprint = fingerprint
    self.backup_dir, self.every_steps = backup_dir, max(1, every_steps)
    self.steps_per_epoch, self.resumables = steps_per_epoch, resumables
    self.global_step = start.global_step(steps_per_epoch)
    self.seconds_before, self.started = start.seconds, time.perf_counter()
    self.resumed_metrics = start.metrics if start.step else None  # For the resumed epoch.
    for name, callback in resumables.items():
      callback.carried = start.callbacks.get(name)

  def on_epoch_begin(self, epoch, logs=None):
    """The resumed epoch's metrics go on from their state at the backup (Keras has just reset
    them): its logs average the whole epoch, not the steps after the restart."""
    if self.resumed_metrics is not None:
      set_metric_state(self.model, self.resumed_metrics)
      self.resumed_metrics = None

  def on_train_batch_end(self, batch, logs=None):
    self.global_step += 1
    step = self.global_step % self.steps_per_epoch
    if step and self.global_step % self.every_steps == 0:
      self.save(self.global_step // self.steps_per_epoch, step)

  def on_epoch_end(self, epoch, logs=None):
    self.save(epoch + 1, 0)  # After validation and the other callbacks' epoch end.

  def save(self, epoch: int, step: int) -> None:
    """Writes `ckpt-GLOBALSTEP.weights.h5`, then `state.json` naming it; drops older ones."""
    tf.io.gfile.makedirs(self.backup_dir)
    name = f"ckpt-{self.global_step}.weights.h5"
    fileio.replace_atomically(self.model.save_weights, os.path.join(self.backup_dir, name))
    state = {"epoch": epoch, "step": step, "global_step": self.global_step, "weights": name,
             "rng": [np.asarray(v.numpy()).tolist() for v in rng_variables(self.model)],
             "callbacks": {k: c.get_state() for k, c in self.resumables.items()},
             "run": self.fingerprint,
             "train_seconds": self.seconds_before + time.perf_counter() - self.started,
             "metrics": [np.asarray(v.numpy()).tolist() for v in self.model.metrics_variables]}
    fileio.write_text_atomically(os.path.join(self.backup_dir, STATE_FILE), json.dumps(state))
    for old in tf.io.gfile.glob(os.path.join(self.backup_dir, "ckpt-*.weights.h5")):
      if os.path.basename(old) != name:
        tf.io.gfile.remove(old)
