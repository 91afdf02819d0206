"""A backup resumes only the run that wrote it: another data set, model or batch size is
one clear error before training; the same settings still resume."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from conftest import tiny_config
from test_storage import resumable, train_interrupted
from tfagent import backup, config, signatures, train, training
from tfagent.errors import ConfigError

pytestmark = pytest.mark.slow


def test_backup_of_another_run_is_an_error_and_the_same_run_resumes(corpus_dir, tmp_path,
                                                                    monkeypatch, caplog):
  cfg = resumable(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "saved_models"))
  train_interrupted(cfg, 27, monkeypatch)
  other = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, batch_size=16),
      model=dataclasses.replace(cfg.model, hidden_dim=6))
  with pytest.raises(ConfigError, match=r"data\.batch_size is 8 there, 16 now; "
                     r"model\.hidden_dim is 4 there, 6 now.*delete .*backup"):
    train.train_and_evaluate(other)
  assert config.load_json(os.path.join(cfg.train.model_dir, "config.json")) == cfg
  # Fewer epochs than it has begun: it finished epoch 2 past its new schedule's end, and its
  # card said --epochs=1 beside epochs_run 2.
  fewer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
  with pytest.raises(ConfigError, match=r"--epochs=1: the backup of this run has begun epoch "
                     r"2; give --epochs=2 or more"):
    train.train_and_evaluate(fewer)

  longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3, verbose=1))
  before = backup.read_state(os.path.join(cfg.train.model_dir, "backup"))["train_seconds"]
  assert before > 0  # The first process's seconds, to its last backup.
  with caplog.at_level("INFO", logger="absl"):
    result = train.train_and_evaluate(longer)  # More epochs and another verbosity resume.
  assert "Resumed from epoch 2 step 2 (global step 26)" in caplog.text
  # Epoch 1 (before the restart), the rest of epoch 2, then epoch 3.
  assert len(result["history"]["loss"]) == 3
  # train_seconds counts both processes (it was the last one's alone); throughput is this
  # process's: 22 of 24 steps of epoch 2, then epoch 3, over its own seconds.
  assert result["train_examples_per_second"] == pytest.approx(
      result["train_examples"] * (3 - 26 / 24) / (result["train_seconds"] - before))


def test_a_resume_on_another_file_under_the_same_path_is_an_error(tmp_path, monkeypatch,
                                                                    caplog):
  """The file under --dataset changed between the kill and the rerun: the old weights were
  resumed on a vocabulary and splits of the new file, and the card described the new data
  only. Now one error naming what changed; the same data again resumes."""
  from conftest import write_corpus
  corpus = write_corpus(tmp_path / "corpus", n_per_class=40)  # 8 steps an epoch.
  cfg = resumable(tiny_config(corpus, tmp_path / "run", tmp_path / "saved_models"))
  train_interrupted(cfg, 11, monkeypatch)
  with open(tmp_path / "corpus" / "pos.txt", encoding="utf-8") as f:
    kept = f.read()
  write_corpus(tmp_path / "corpus", n_per_class=50, seed=3)
  with pytest.raises(ConfigError, match=r"backup of a run on other data \(split_digests is .*"
                     r"split_sizes is .*same --dataset now reads other records"):
    train.train_and_evaluate(cfg)
  write_corpus(tmp_path / "corpus", n_per_class=40)  # The run's own data again: it resumes.
  assert open(tmp_path / "corpus" / "pos.txt", encoding="utf-8").read() == kept
  with caplog.at_level("INFO", logger="absl"):
    assert len(train.train_and_evaluate(cfg)["history"]["loss"]) == 2
  assert "(global step 10)" in caplog.text  # Resumed from the backup at step 10 of 11.


def test_a_resume_with_other_unlabelled_texts_or_another_teacher_is_an_error(
    trained_run, corpus_dir, tmp_path, monkeypatch, caplog):
  """Same --dataset, same settings, but another --unlabeled file or a new version under the
  --teacher base path: the backup's weights resumed on the new texts' vocabulary, or on
  another teacher's targets, without a word. Now one error naming it; the same again resumes."""
  import shutil
  teacher_run, _ = trained_run
  teachers = tmp_path / "teachers"
  first = os.path.join(teacher_run.export.export_dir, teacher_run.export.model_name, "1")
  shutil.copytree(first, teachers / "1")
  texts = tmp_path / "unlabeled.csv"
  own = "text\n" + "".join(f"zebra{i} quokka{i} film\n" for i in range(40))
  texts.write_text(own, encoding="utf-8")
  cfg = resumable(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "saved_models"),
                  teacher=str(teachers))
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unlabeled=f"csv:{texts}"),
                            model=dataclasses.replace(cfg.model, unlabeled_vocabulary=True))
  train_interrupted(cfg, 11, monkeypatch)
  learned = json.loads((tmp_path / "run" / "backup" / backup.LEARNED_FILE).read_text())
  assert learned["unlabeled"]["texts"] == 40 and learned["teacher"]["export"] == str(
      teachers / "1")
  texts.write_text("text\n" + "".join(f"yak{i} film\n" for i in range(40)), encoding="utf-8")
  with pytest.raises(ConfigError, match=r"backup of a run on other vocabulary, unlabelled "
                     r"texts or teacher \(unlabeled is .*; vocabulary is .*\)"):
    train.train_and_evaluate(cfg)
  texts.write_text(own, encoding="utf-8")
  shutil.copytree(first, teachers / "2")  # A new teacher version: the base path's latest.
  with pytest.raises(ConfigError, match=r"teacher is \{'export': '.*/1'.* now"):
    train.train_and_evaluate(cfg)
  shutil.rmtree(teachers / "2")
  with caplog.at_level("INFO", logger="absl"):
    assert len(train.train_and_evaluate(cfg)["history"]["loss"]) == 2
  assert "(global step 10)" in caplog.text


def test_a_kill_while_clearing_leaves_no_state_naming_removed_weights(tmp_path, monkeypatch):
  """clear() removed ckpt-*.h5 before state.json: killed between, the rerun of a finished
  run died on a missing h5 file; a state naming a missing file is now a clear error."""
  import tensorflow as tf
  folder = tmp_path / "backup"
  folder.mkdir()
  (folder / "ckpt-6.weights.h5").write_bytes(b"weights")
  (folder / backup.STATE_FILE).write_text(json.dumps({"weights": "ckpt-6.weights.h5"}))
  remove = tf.io.gfile.remove
  removed = []

  def remove_once(path):
    if removed:
      raise KeyboardInterrupt
    removed.append(os.path.basename(path))
    remove(path)
  monkeypatch.setattr(tf.io.gfile, "remove", remove_once)
  with pytest.raises(KeyboardInterrupt):
    backup.clear(str(folder))
  assert removed == [backup.STATE_FILE] and backup.read_state(str(folder)) is None
  monkeypatch.setattr(tf.io.gfile, "remove", remove)
  (folder / backup.STATE_FILE).write_text(json.dumps({"weights": "ckpt-9.weights.h5"}))
  model = keras.Sequential([keras.layers.Dense(1)])
  with pytest.raises(ConfigError, match=r"names ckpt-9.weights.h5, which is not there"):
    backup.restore(model, str(folder), 10)


def test_fingerprint_leaves_out_what_a_resume_may_change():
  cfg = config.Config()
  fingerprint = backup.run_fingerprint(cfg)
  assert {"data.dataset", "data.seed", "data.batch_size", "model.name", "model.vocab_size",
          "model.sequence_length", "train.learning_rate"} <= set(fingerprint)
  assert not {"train.model_dir", "train.epochs", "export.export_dir"} & set(fingerprint)
  json.dumps(fingerprint)  # Stored in state.json.


def test_a_run_killed_after_early_stopping_resumes_without_training_on(corpus_dir, tmp_path,
                                                                       monkeypatch, caplog):
  """Killed after early stopping ended the fit (while exporting: the backup is still there),
  the same command finishes the run without another epoch, and its history and epoch count
  are the whole run's. (It used to train on to --epochs: another model than the first run's.)
  A learning rate of 1e-30 keeps val_loss flat, so patience 1 stops after epoch 2."""
  cfg = resumable(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "saved_models"),
                  epochs=6, learning_rate=1e-30)
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, early_stopping_patience=1))
  histories = []
  fit_remaining = training.fit_remaining
  with monkeypatch.context() as patch:
    patch.setattr(training, "fit_remaining", lambda *a: histories.append(fit_remaining(*a)) or
                  histories[-1])
    patch.setattr(training, "restore_best", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(cfg)
  assert len(histories[0]["loss"]) == 2  # Stopped early, 4 epochs before --epochs.
  fits = []
  fit = keras.Model.fit
  monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fits.append(1) or
                      fit(self, *a, **k))
  with caplog.at_level("INFO", logger="absl"):
    result = train.train_and_evaluate(cfg)
  assert not fits
  assert "Early stopping ended this run at epoch 2, before the restart" in caplog.text
  assert result["history"] == histories[0]
  assert result["epochs_run"] == 2
  assert np.isnan(result["train_examples_per_second"])  # This process trained nothing.


def test_a_fresh_run_in_an_old_run_dir_never_exports_the_old_best(corpus_dir, tmp_path,
                                                                  monkeypatch):
  """A second run in the same --model_dir (no backup: a fresh start) whose --monitor never
  improves (NaN, simulated by a checkpoint that saves no best) exported the first run's
  best.keras: another model's weights, silently. Now it exports its own last weights."""
  from tfagent import callbacks  # pylint: disable=import-outside-toplevel
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "saved_models")
  first = train.train_and_evaluate(cfg)
  save = callbacks.AtomicModelCheckpoint._save
  monkeypatch.setattr(callbacks.AtomicModelCheckpoint, "_save",
                      lambda self, name: name == "best.keras" or save(self, name))
  again = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=7))
  second = train.train_and_evaluate(again)
  texts = ["great movie", "awful plot"]
  probs = [signatures.probabilities_fn(r["saved_model"])(texts).numpy() for r in (first, second)]
  assert not np.allclose(*probs, atol=1e-4)
  assert not os.path.exists(tmp_path / "run" / "checkpoints" / "best.keras")
