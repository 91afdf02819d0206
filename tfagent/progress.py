"""What a user watching a run sees: each stage announced and timed, the fit's progress with an
ETA, and a closing summary that says where the model is and how to try it.

No stage of a run stays silent for more than about `EVERY_SECONDS`: stages log when they
start and end, and `FitProgress` logs inside an epoch when Keras prints one line an epoch.
"""

import contextlib
import dataclasses
import json
import os
import shlex
import time

from absl import logging
import keras

from tfagent import model_card, signatures
from tfagent.data.multilabel import is_multilabel

EVERY_SECONDS = 10.0  # Longest silence inside an epoch when there is no progress bar.
# Peers' test accuracy on the embedded corpus's default split (train and test content
# SHA-256 from the model card), so a quickstart user sees what "good" is there.
# From `python -m bench.tfidf_lr|nblr --flagfile=configs/lstm.flags` (bench/results/quickstart.md).
KNOWN_PEERS = {
    ("af9e159cf50da5d0ff9c8ee0f76f18866676e00f5b767ff587abb5393a4790a8",
     "d44a81b4bad8ece833e4dc8fbac10ef4374f0a82262fd0ef9511dfb8f1707208"): {
         "TF-IDF + logistic regression": 0.8573943661971831,
         "NB-weighted logistic regression": 0.8556338028169014,
     },
}


def duration(seconds: float) -> str:
  """`75.2` -> "1 min 15 s"; under a minute, "8.4 s"."""
  if seconds < 60:
    return f"{seconds:.1f} s"
  minutes, seconds = divmod(int(round(seconds)), 60)
  return f"{minutes} min {seconds:02d} s"


@contextlib.contextmanager
def stage(what: str):
  """Logs `what` when it starts and again, with its time, when it ends."""
  logging.info("%s...", what)
  start = time.perf_counter()
  yield
  logging.info("%s: done in %s.", what, duration(time.perf_counter() - start))


class FitProgress(keras.callbacks.Callback):
  """Logs the step, the examples/s and the fit's ETA every `every` seconds of an epoch
  (None: only at each epoch's end), from the steps and validation passes timed so far.

  The step time is the mean over every training step of the fit so far, not of this epoch
  alone, so one slow step (a stall, the first step's tracing) barely moves the ETA.
  `clock` (seconds, monotonic) is `time.perf_counter` unless a test gives its own.
  """

  def __init__(self, global_batch_size: int, every: float = EVERY_SECONDS, clock=None):
    super().__init__()
    self.batch_size, self.every = global_batch_size, every
    self.clock = clock or time.perf_counter
    self.step_seconds, self.validation_seconds = None, 0.0
    self.fit_steps, self.fit_train_seconds = 0, 0.0  # Finished epochs' training steps and time.

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch, self.steps, self.start = epoch, 0, self.clock()
    self.last_log, self.test_start = self.start, None

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1
    now = self.clock()
    self.step_seconds = (self.fit_train_seconds + now - self.start) / (self.fit_steps + self.steps)
    if self.every is not None and now - self.last_log >= self.every:
      self.last_log = now
      logging.info("Epoch %d/%d: step %d/%d, %.0f examples/s; %s", self.epoch + 1,
                   self.params["epochs"], self.steps, self.params["steps"],
                   self.batch_size / self.step_seconds, self.eta())

  def on_test_begin(self, logs=None):
    if self.test_start is None and self.steps:  # Validation inside fit, not `evaluate`.
      self.test_start = self.clock()

  def on_epoch_end(self, epoch, logs=None):
    now = self.clock()
    train_end = now if self.test_start is None else self.test_start
    self.fit_steps += self.steps
    self.fit_train_seconds += train_end - self.start
    if self.test_start is not None:
      self.validation_seconds = now - self.test_start
    logging.info("Epoch %d/%d done in %s; %s", epoch + 1, self.params["epochs"],
                 duration(now - self.start), self.eta(epoch_done=True))

  def eta(self, epoch_done: bool = False) -> str:
    """The time left if every epoch runs (early stopping may end the fit sooner)."""
    epochs_after = self.params["epochs"] - self.epoch - 1
    step = self.step_seconds or 0.0
    left = (0 if epoch_done else (self.params["steps"] - self.steps) * step
            + self.validation_seconds)
    left += epochs_after * (self.params["steps"] * step + self.validation_seconds)
    if not left:
      return "the fit is done."
    return f"at most {duration(left)} left in the fit."


def peer_lines(card: dict) -> list:
  """The peers' accuracy where this run's train and test splits are ones measured before."""
  hashes = card.get("data", {}).get("content_sha256", {})
  peers = KNOWN_PEERS.get((hashes.get("train"), hashes.get("test")), {})
  return [f"  peer {name}: {accuracy:.2%}" for name, accuracy in peers.items()]


def final_summary(cfg, result: dict, example: str) -> str:
  """The run's closing lines: test figures, peers when known, where everything is, and the
  commands that try the export (`example` is a text to predict, or a sentence pair's
  `(text, text_pair)`, which `tfagent predict` reads from a file)."""
  saved_model = result["saved_model"]
  base = os.path.dirname(saved_model.rstrip("/"))
  name = cfg.export.model_name
  pair = isinstance(example, tuple)
  instance = dict(zip((signatures.TEXT, signatures.TEXT_PAIR), example)) if pair else example
  body = json.dumps({"instances": [instance]}, ensure_ascii=False)
  texts = (f"--input=FILE --text_field={shlex.quote(cfg.data.text_field)} --text_pair_field="
           f"{shlex.quote(cfg.data.text_pair_field)}" if pair else shlex.quote(example))
  scored = model_card.tested_on(dataclasses.asdict(cfg.data))  # --test_path's file, a fold...
  if is_multilabel(cfg.data):  # Its `accuracy` is subset (exact-match) accuracy.
    figures = (f"micro F1 {result['micro_f1']:.4f}, macro F1 {result['macro_f1']:.4f}, subset "
               f"accuracy {result['subset_accuracy']:.2%}")
  else:
    figures = f"accuracy {result['accuracy']:.2%}, macro F1 {result['macro_f1']:.4f}"
  lines = [f"Test: {figures} on {result['examples']} texts of {scored}.",
           *peer_lines(model_card.read(saved_model)),
           f"SavedModel: {saved_model}",
           f"Model card: {os.path.join(saved_model, 'model_card.md')}",
           f"Metrics: {os.path.join(cfg.train.model_dir, 'eval', 'metrics.json')}; "
           f"TensorBoard: tensorboard --logdir={os.path.join(cfg.train.model_dir, 'logs')}",
           "Try it:",
           f"  tfagent predict --saved_model={shlex.quote(base)} {texts}",
           f"  tfagent serve --model_name={shlex.quote(name)} "
           f"--model_base_path={shlex.quote(base)}",
           f"  curl -d {shlex.quote(body)} localhost:8501/v1/models/{name}:predict"]
  return "\n".join(lines)
