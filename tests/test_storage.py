"""Runs on any filesystem: a whole run on TF's in-memory ram:// filesystem (train, export,
evaluate, serve), a resume from it, published versions that never change, and a clear
error for a scheme whose filesystem plugin is missing."""

import dataclasses
import hashlib
import json
import os
import socket
import threading
import time

import keras
import pytest
import requests
import tensorflow as tf

from conftest import tiny_config
from tfagent import config, train, training
from tfagent.errors import ConfigError

pytestmark = pytest.mark.slow


class Interrupted(Exception):
  """What the interrupting callback raises: a crash in the middle of an epoch."""


class InterruptAt(keras.callbacks.Callback):
  """Raises after `step` training batches of this process, as a crash would."""

  def __init__(self, step: int):
    super().__init__()
    self.step, self.seen = step, 0

  def on_train_batch_end(self, batch, logs=None):
    self.seen += 1
    if self.seen == self.step:
      raise Interrupted(f"interrupted after {self.step} steps")


def train_interrupted(cfg, step: int, monkeypatch) -> None:
  """Runs `cfg` until `step` training steps are done (the step backups are written first)."""
  make_callbacks = training.make_callbacks
  with monkeypatch.context() as patch:
    patch.setattr(training, "make_callbacks",
                  lambda *args: make_callbacks(*args) + [InterruptAt(step)])
    with pytest.raises(Interrupted):
      train.train_and_evaluate(cfg)


def read_json(path: str) -> dict:
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def resumable(cfg, **train_fields):
  """`cfg` with backups every 2 steps of 8 examples, so a crash leaves one mid-epoch."""
  return dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, batch_size=8),
      train=dataclasses.replace(cfg.train, backup_every_steps=2, early_stopping_patience=5,
                                **train_fields))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_ram_run_trains_exports_evaluates_and_is_served(corpus_dir):
  """--model_dir and --export_dir on ram://: the run's files are there, none on disk, and
  `tfagent serve` answers REST from the ram:// export."""
  from tfagent.serving.server import Server, ServerOptions
  cfg = tiny_config(corpus_dir, "ram://e2e/run", "ram://e2e/saved_models")
  result = train.train_and_evaluate(cfg)
  assert result["saved_model"] == "ram://e2e/saved_models/tiny/1"
  run = set(tf.io.gfile.listdir("ram://e2e/run"))
  assert {"config.json", "checkpoints", "eval", "logs"} <= {n.rstrip("/") for n in run}
  assert read_json("ram://e2e/run/eval/metrics.json")["accuracy"] == result["accuracy"]
  assert tf.io.gfile.exists("ram://e2e/saved_models/tiny/1/model_card.json")
  assert tf.io.gfile.exists("ram://e2e/saved_models/tiny/models.config")
  assert not os.path.exists("ram:") and not os.path.exists("ram:/")

  port = free_port()
  server = Server(ServerOptions(port=0, rest_api_port=port, bind_address="127.0.0.1",
                                model_name="tiny", model_base_path="ram://e2e/saved_models/tiny"))
  server.start()
  try:
    url = f"http://127.0.0.1:{port}/v1/models/tiny:predict"
    answer = requests.post(url, json={"instances": ["great movie loved it"]}, timeout=60)
  finally:
    server.stop()
  assert answer.status_code == 200, answer.text
  prediction = answer.json()["predictions"][0]
  assert prediction["classes"] in ("negative", "positive") and len(prediction["probabilities"]) == 2


def test_interrupted_ram_run_resumes_at_its_step(corpus_dir, monkeypatch, caplog):
  """A run on ram:// that stops mid-epoch resumes from ram:// at the backed-up step."""
  cfg = resumable(tiny_config(corpus_dir, "ram://resume/run", "ram://resume/saved_models"))
  train_interrupted(cfg, 27, monkeypatch)  # 24 steps an epoch: mid-way through the second.
  state = read_json("ram://resume/run/backup/state.json")
  assert (state["epoch"], state["step"], state["global_step"]) == (1, 2, 26)
  with caplog.at_level("INFO", logger="absl"):
    result = train.train_and_evaluate(cfg)
  assert "Resumed from epoch 2 step 2 (global step 26)" in caplog.text
  # The first epoch's logs came back from the backup; only the second epoch ran here.
  assert len(result["history"]["loss"]) == 2 and result["epochs_run"] == 2
  assert tf.io.gfile.listdir("ram://resume/run/backup") == []


def snapshot(folder: str) -> dict:
  """Relative path -> SHA-1 of every file below `folder`."""
  from tfagent import fileio  # Here: the test runs on the code before fileio too.
  out = {}
  for name in fileio.files_under(folder):
    with tf.io.gfile.GFile(os.path.join(folder, name), "rb") as f:
      out[name] = hashlib.sha1(f.read()).hexdigest()
  return out


@pytest.mark.parametrize("where", ["local", "ram"])
def test_published_version_never_changes(corpus_dir, tmp_path, where, monkeypatch):
  """The version as it is the moment it is published, and as a watcher first sees it, is what
  is there at the end."""
  from tfagent import fileio
  root = str(tmp_path) if where == "local" else f"ram://published-{where}"
  cfg = tiny_config(corpus_dir, os.path.join(root, "run"), os.path.join(root, "saved_models"))
  version = os.path.join(root, "saved_models", "tiny", "1")
  published, seen, done = [], [], threading.Event()
  publish_folder = fileio.publish_folder

  def publish_and_look(staged, final):
    publish_folder(staged, final)
    published.append(snapshot(final))
  monkeypatch.setattr(fileio, "publish_folder", publish_and_look)

  def watch():  # A server polling the base path: it may look at any moment.
    while not done.is_set() and not seen:
      if tf.io.gfile.exists(os.path.join(version, "saved_model.pb")):
        seen.append(snapshot(version))
      time.sleep(0.001)
  watcher = threading.Thread(target=watch)
  watcher.start()
  try:
    train.train_and_evaluate(cfg)
  finally:
    done.set()
    watcher.join()
  assert len(published) == 1 and "model_card.json" in published[0]
  assert published[0] == snapshot(version)
  # A loaded machine can starve the watcher until the run ends; when it did look, it saw it all.
  assert seen in ([], published)


def test_scheme_without_its_plugin_is_one_clear_error_before_any_work(tmp_path, monkeypatch):
  """s3:// without tensorflow-io: the config check names the flag and the package."""
  monkeypatch.chdir(tmp_path)
  cfg = config.Config(train=config.TrainConfig(model_dir="s3://bucket/run"))
  with pytest.raises(ConfigError, match=r"--model_dir=s3://bucket/run.*pip install tensorflow-io"):
    train.check(cfg, set())
  cfg = config.Config(export=config.ExportConfig(export_dir="s3://bucket/models"))
  with pytest.raises(ConfigError, match=r"--export_dir=s3://bucket/models.*tensorflow-io"):
    train.check(cfg, set())
  from tfagent.serving.server import Server, ServerOptions
  with pytest.raises(ConfigError, match=r"--model_base_path=s3://bucket/m.*tensorflow-io"):
    Server(ServerOptions(model_name="m", model_base_path="s3://bucket/m", rest_api_port=0))
  assert os.listdir(tmp_path) == []  # Nothing written, not even ./s3:/bucket.
