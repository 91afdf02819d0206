"""tfagent tune: search spaces refused before anything runs, a search that never reads the
test split, picks the best validation score, resumes, and leaves HParams data and best.flags."""

import csv
import dataclasses
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import types

import pytest

from conftest import NEGATIVE, POSITIVE, run_command, tiny_config, write_corpus
from tfagent import config, search_space, tune, tune_report
from tfagent.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ["--batch_size=32", "--vocab_size=200", "--sequence_length=16",
              "--embedding_dim=8", "--hidden_dim=4", "--epochs=1", "--verbose=0",
              "--model_name=tiny", "--explain_steps=4"]


def lstm_config() -> config.Config:
  return config.Config(model=config.ModelConfig(name="lstm"))


@pytest.mark.parametrize("space, named, says", [
    ({"dropuot": {"min": 0.1, "max": 0.5}}, "'dropuot'", "not a config field"),
    ({"model_dir": {"values": ["a", "b"]}}, "'model_dir'", "cannot be searched"),
    ({"dropout": {"min": 0.1, "max": 1.5}}, "'dropout'", "outside its valid range 0..0.95"),
    ({"hidden_dim": {"values": []}}, "'hidden_dim'", "non-empty list"),
    ({"learning_rate": {"min": 3e-3, "max": 1e-4}}, "'learning_rate'", "must be below max"),
    ({"hidden_dim": {"values": [32, 48.5]}}, "'hidden_dim'", "48.5 is not a int"),
    ({"hidden_dim": {"values": [True]}}, "'hidden_dim'", "true is not a int"),
    ({"weight_decay": {"min": 0.0, "max": 0.1, "log": True}}, "'weight_decay'", "min > 0"),
    ({"mixed_precision": {"values": ["float64"]}}, "'mixed_precision'", "not one of its choices"),
    ({"num_heads": {"values": [2, 4]}}, "'num_heads'", "applies to --model=transformer"),
    ({"epochs": {"min": 1, "max": 5, "step": 0.5}}, "'epochs'", "positive int"),
    ({"freeze_backbone": {"values": [True, False]}}, "'freeze_backbone'", "--model=bert"),
    ({"dropout": {"values": [0.1], "min": 0.1}}, "'dropout'", "expected {\"values\""),
    ({"dropout": [0.1, 0.2]}, "'dropout'", "expected {\"values\""),
])
def test_bad_search_space_is_one_error_naming_the_field(space, named, says):
  with pytest.raises(ConfigError) as e:
    search_space.check(space, lstm_config(), "space.json")
  assert named in str(e.value) and says in str(e.value), str(e.value)


def test_good_space_becomes_keras_tuner_hyperparameters_and_config_values():
  space = {"dropout": {"min": 0.1, "max": 0.6}, "learning_rate": {"min": 1e-4, "max": 3e-3,
                                                                    "log": True},
           "hidden_dim": {"values": [32, 64, 128]}, "weight_decay": {"values": [0, 0.01]}}
  search_space.check(space, lstm_config())
  hp = search_space.hyperparameters(space)
  configs = {p.name: p.get_config() for p in hp.space}
  assert configs["learning_rate"]["sampling"] == "log"
  assert configs["hidden_dim"]["values"] == [32, 64, 128]
  assert configs["weight_decay"]["values"] == [0.0, 0.01]  # Floats, as the field.
  cfg = search_space.apply(lstm_config(), {"dropout": 0.35, "hidden_dim": 128,
                                           "tuner/epochs": 3})
  assert (cfg.model.dropout, cfg.model.hidden_dim, cfg.train.epochs) == (0.35, 128, 5)


@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_the_first_trial_is_the_base_config_when_the_space_holds_it(tuner, tmp_path):
  space = {"dropout": {"min": 0.2, "max": 0.6}, "hidden_dim": {"values": [32, 64, 128]},
           "embedding_dim": {"min": 16, "max": 256, "step": 16}}
  cfg = search_space.apply(lstm_config(), {"dropout": 0.35, "hidden_dim": 128,
                                           "embedding_dim": 48})
  first = search_space.base_values(space, cfg)
  assert first == {"dropout": 0.35, "hidden_dim": 128, "embedding_dim": 48}
  options = tune.TuneOptions(tune_dir=str(tmp_path), tuner=tuner, max_trials=5,
                             initial_trials=2)
  oracle = tune.make_tuner(cfg, space, options).oracle  # Builds; trains nothing.
  values = [oracle.create_trial(f"worker{i}").hyperparameters.values for i in range(3)]
  assert values[0] == first
  assert values[1] != first and values[2] != first  # Then the oracle's own choices.
  if tuner == "bayesian":
    assert oracle.num_initial_points == 2
  for outside in ({"dropout": 0.7}, {"hidden_dim": 100}, {"embedding_dim": 40}):
    assert search_space.base_values(space, search_space.apply(cfg, outside)) == {}, outside


@pytest.mark.parametrize("objective, scores", [("val_accuracy", (0.5, 0.4, 0.5)),
                                               ("val_loss", (0.7, 0.9, 0.7))])
def test_of_trials_that_tie_the_first_is_best_in_whatever_order_the_oracle_holds_them(
    objective, scores, tmp_path, capsys):
  """A resumed search reloads its trials in another order, and KerasTuner's best of a tie
  followed it: best.flags and the test figures changed with no new trial."""
  options = tune.TuneOptions(tune_dir=str(tmp_path), tuner="random", max_trials=3,
                             objective=objective)
  oracle = tune.make_tuner(lstm_config(), {"dropout": {"min": 0.2, "max": 0.6}},
                           options).oracle
  for score in scores:
    trial = oracle.create_trial("worker0")
    oracle.update_trial(trial.trial_id, {objective: score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
  first, _, third = sorted(oracle.trials)
  for order in (sorted, lambda ids: sorted(ids, reverse=True)):
    oracle.trials = {t: oracle.trials[t] for t in order(oracle.trials)}
    records = tune_report.trial_records(oracle, str(tmp_path))
    assert tune_report.best_record(oracle, records)["trial"] == first
  oracle.trials[first].status = "FAILED"  # Never the best, whatever its score.
  assert tune_report.best_record(oracle, records)["trial"] == third
  capsys.readouterr()


@pytest.mark.parametrize("space, flagfile", [("quickstart.json", "quickstart.flags"),
                                              ("imdb_lstm.json", "imdb_lstm.flags")])
def test_shipped_search_spaces_fit_their_configs(space, flagfile, monkeypatch):
  monkeypatch.chdir(ROOT)  # Flagfiles name others relative to the repository root.
  cfg, _ = config.from_args(os.path.join("configs", flagfile))
  loaded = search_space.load(os.path.join("configs", "search", space), cfg)
  assert {"dropout", "learning_rate", "hidden_dim", "embedding_dim"} <= set(loaded)
  search_space.hyperparameters(loaded)


def test_time_budget_parses_and_refuses_nonsense():
  assert [tune.parse_duration(t) for t in ("45m", "1h30m", "90s", "2h", "120", "")] == \
      [2700, 5400, 90, 7200, 120, 0]
  with pytest.raises(ConfigError, match="--tune_time_budget=45 minutes"):
    tune.parse_duration("45 minutes")


def test_spent_time_budget_starts_no_trial(tmp_path):
  cfg = config.Config(train=config.TrainConfig(model_dir=str(tmp_path / "unused")))
  options = tune.TuneOptions(tune_dir=str(tmp_path / "tune"), tuner="random",
                             time_budget_s=1e-9)
  with pytest.raises(ConfigError, match="none of the 0 trials completed"):
    tune.tune(cfg, {"dropout": {"min": 0.1, "max": 0.5}}, options, set())
  summary = json.loads((tmp_path / "tune" / "tuning.json").read_text())
  assert summary["trials"] == [] and summary["best"] is None
  assert not (tmp_path / "tune" / "trials").exists()


def test_export_size_budget_rejects_larger_trials():
  options = tune.TuneOptions(max_export_mb=10)
  assert tune_report.budget_problem({"export_mb": 9.9}, options) == ""
  assert "export 10.50 MB > --max_export_mb=10" in tune_report.budget_problem(
      {"export_mb": 10.5}, options)


@pytest.mark.slow
def test_a_trial_whose_weights_break_the_size_budget_is_never_trained(corpus_dir, tmp_path):
  """4096-wide embeddings of 200 words are 3.1 MB of weights alone: rejected before training."""
  cfg = tiny_config(corpus_dir, tmp_path / "unused", tmp_path / "unused_sm")
  options = tune.TuneOptions(tune_dir=str(tmp_path / "tune"), tuner="random", max_trials=2,
                             max_export_mb=1.2)
  summary = tune.tune(cfg, {"embedding_dim": {"values": [8, 4096]}}, options, set())
  trials = {t["values"]["embedding_dim"]: t for t in summary["trials"]}
  assert trials[4096]["status"] == "rejected" and "val_accuracy" not in trials[4096]
  assert re.fullmatch(r"export at least 3\.\d\d MB > --max_export_mb=1\.2, known before "
                      r"training", trials[4096]["rejected"])
  run_dir = tmp_path / "tune" / "trials" / f"trial_{trials[4096]['trial']}"
  assert not (run_dir / "checkpoints" / "best.keras").exists()
  assert not (run_dir / "saved_models").exists()
  assert trials[8]["status"] == "completed" and trials[8]["export_mb"] < 1.2
  assert summary["best"]["values"] == {"embedding_dim": 8}
  assert "known before training" in (tmp_path / "tune" / "tuning.md").read_text()


@pytest.mark.slow
def test_the_size_known_before_training_is_at_most_the_export_and_close_to_it(corpus_dir,
                                                                               tmp_path):
  """An ensemble with a wide path: the bound counts every member's weights and both
  vocabularies (never the optimizer's), so it sits just under the export's size."""
  from tfagent import training
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm")
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(
      cfg.model, embedding_dim=2048, ensemble_size=2, wide_ngrams=2, wide_min_count=1),
      train=dataclasses.replace(cfg.train, epochs=1))
  seen = []
  result = training.train_and_evaluate(
      cfg, lambda model: seen.append((model, tune_report.export_mb_at_least(model))))
  model, at_least = seen[0]
  exported = tune_report.export_mb(result["saved_model"])
  assert 0.8 * exported < at_least <= exported, (at_least, exported)
  tune_report.size_check(tune.TuneOptions(max_export_mb=at_least), cfg)(model)  # Fits.
  below = tune.TuneOptions(max_export_mb=at_least * 0.99)
  with pytest.raises(tune_report.TooLarge, match="known before training"):
    tune_report.size_check(below, cfg)(model)
  quantized = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, quantize="int8"))
  assert tune_report.size_check(below, quantized) is None  # int8 may be 4x smaller.


def write_csv(path, n_per_class, seed, broken=False) -> str:
  """A csv of the tiny corpus' phrases; `broken` adds a record whose reading raises."""
  rng = random.Random(seed)
  rows = [(f"{rng.choice(phrases)} {rng.choice(phrases)} #{seed}-{label}-{i}", label)
          for phrases, label in ((POSITIVE, "pos"), (NEGATIVE, "neg"))
          for i in range(n_per_class)]
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    if broken:
      f.write("a record without its label\n")
  return str(path)


def test_without_read_test_the_test_file_is_not_read_and_other_splits_stay(tmp_path):
  from tfagent import data
  train = write_csv(tmp_path / "train.csv", 60, seed=1)
  cfg = config.DataConfig(dataset=f"csv:{train}",
                          test_path=write_csv(tmp_path / "test.csv", 10, 2, broken=True))
  with pytest.raises(DataError, match="test.csv:22: malformed line"):
    data.load_splits(cfg)  # Reading this test file raises...
  splits, info = data.load_splits(dataclasses.replace(cfg, read_test=False))  # ...unread here.
  assert info.split_sizes["test"] == 0
  write_csv(tmp_path / "test.csv", 10, 2)
  full, _ = data.load_splits(cfg)
  for name in ("train", "validation"):  # The same texts as with the test file read.
    assert list(splits[name].as_numpy_iterator()) == list(full[name].as_numpy_iterator())



def test_under_dedup_a_trial_trains_on_no_copy_of_a_test_text(tmp_path):
  """--dedup removes the training copies of test texts; a trial (test unread) must train on
  the same texts as the final run, not on copies of the texts its model is scored on."""
  from tfagent import data
  train = write_csv(tmp_path / "train.csv", 60, seed=1)
  with open(train, encoding="utf-8") as f:
    copies = [line for line in f.read().splitlines()[1:21]]
  test = write_csv(tmp_path / "test.csv", 10, seed=2)
  with open(test, "a", encoding="utf-8") as f:
    f.write("\n".join(copies) + "\n")
  cfg = config.DataConfig(dataset=f"csv:{train}", test_path=test, dedup=True)
  full, _ = data.load_splits(cfg)
  trial, info = data.load_splits(dataclasses.replace(cfg, read_test=False))
  assert info.split_sizes["test"] == 0
  test_texts = {t for t, _ in full["test"].as_numpy_iterator()}
  for name in ("train", "validation"):
    held = list(trial[name].as_numpy_iterator())
    assert held == list(full[name].as_numpy_iterator())
    assert not test_texts & {t for t, _ in held}

@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  """A 3-trial random search on a csv whose test file raises when read, then, the file
  mended, the same command again (which only scores the best trial on test)."""
  root = tmp_path_factory.mktemp("tune")
  test_csv = write_csv(root / "test.csv", 15, seed=2, broken=True)
  flagfile = root / "tiny.flags"
  flagfile.write_text("\n".join(TINY_FLAGS + [
      "--explain_steps=0",  # The later value wins: no trial's explain signatures are read.
      f"--dataset=csv:{write_csv(root / 'train.csv', 50, seed=1)}", f"--test_path={test_csv}",
      f"--model_dir={root / 'base_run'}", f"--export_dir={root / 'base_sm'}"]) + "\n")
  space_file = root / "space.json"
  space_file.write_text(json.dumps({"learning_rate": {"values": [1e-4, 3e-3, 3e-2]},
                                    "dropout": {"min": 0.0, "max": 0.5}}))
  args = [f"--flagfile={flagfile}", f"--search_space={space_file}", "--tuner=random",
          "--max_trials=3", "--objective=val_loss", f"--tune_dir={root / 'tune'}"]
  cfg, present = config.from_args(str(flagfile))
  options = tune.TuneOptions(tune_dir=str(root / "tune"), tuner="random", max_trials=3,
                             objective="val_loss")
  with pytest.raises(DataError) as error:  # Only at the end: scoring the best on test.
    tune.tune(cfg, search_space.load(str(space_file), cfg), options, present)
  first = json.loads((root / "tune" / "tuning.json").read_text())
  records = sorted(glob.glob(str(root / "tune" / "trials" / "*" / tune_report.RECORD_FILE)))
  stamps = {path: os.stat(path).st_mtime_ns for path in records}
  write_csv(root / "test.csv", 15, seed=2)
  with pytest.MonkeyPatch.context() as monkeypatch:
    code = run_command(monkeypatch, "tune", *args)
  return types.SimpleNamespace(root=root, error=str(error.value), first=first, stamps=stamps,
                               code=code, flagfile=flagfile,
                               summary=json.loads((root / "tune" / "tuning.json").read_text()))


@pytest.mark.slow
def test_three_trials_never_read_test_and_the_best_validation_score_wins(searched):
  trials = searched.first["trials"]
  assert [t["status"] for t in trials] == ["completed"] * 3, trials
  assert "test.csv:32: malformed line" in searched.error  # Raised at the end only.
  losses = [t["val_loss"] for t in trials]
  assert len(set(losses)) == 3, losses
  best = min(trials, key=lambda t: t["val_loss"])
  assert searched.first["best"]["trial"] == best["trial"]
  assert searched.summary["best"]["trial"] == best["trial"]
  assert searched.summary["test"]["examples"] == 30  # The mended file, scored once.
  md = (searched.root / "tune" / "tuning.md").read_text()
  assert all(f"| {t['trial']} | completed |" in md for t in trials), md


@pytest.mark.slow
def test_a_finished_search_run_again_reruns_no_trial(searched):
  assert searched.code == 0
  assert len(searched.stamps) == 3
  for path, stamp in searched.stamps.items():
    assert os.stat(path).st_mtime_ns == stamp, path
  assert [t["trial"] for t in searched.summary["trials"]] == ["0", "1", "2"]


@pytest.mark.slow
def test_hparams_of_every_trial_are_in_its_event_files(searched):
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.plugins.hparams import plugin_data_pb2
  import tensorflow as tf
  for trial in searched.summary["trials"]:
    acc = event_accumulator.EventAccumulator(os.path.join(trial["run_dir"], "logs"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    # The trial's run directory, whole: trial_N alone merged the trials of two tune dirs.
    assert info.group_name == os.path.abspath(trial["run_dir"])
    assert info.group_name.endswith(f"trial_{trial['trial']}")
    for name, value in trial["values"].items():
      section = search_space.fields()[name][0]
      assert info.hparams[f"{section}.{name}"].number_value == pytest.approx(value), name
    for metric in ("val_loss", "val_accuracy", "val_macro_f1"):
      logged = tf.make_ndarray(acc.Tensors(f"final/{metric}")[-1].tensor_proto)
      assert float(logged) == pytest.approx(trial[metric], abs=1e-6), metric


@pytest.mark.slow
def test_best_flags_train_to_the_best_trials_validation_score(searched, tmp_path):
  from tfagent import train
  best = searched.summary["best"]
  text = (searched.root / "tune" / "best.flags").read_text()
  assert f"--learning_rate={best['values']['learning_rate']}" in text
  assert f"# dropout: val_loss {best['val_loss']:.4f} on validation" in text
  result = train.run(str(searched.root / "tune" / "best.flags"),
                     model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"))
  assert result["validation"]["loss"] == pytest.approx(best["val_loss"], abs=1e-5)
  assert result["validation"]["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_killed_tune_resumes_without_rerunning_finished_trials(tmp_path, monkeypatch):
  corpus = write_corpus(tmp_path / "corpus")
  space = tmp_path / "space.json"
  space.write_text(json.dumps({"embedding_dim": {"values": [8, 256]}}))
  tune_dir = tmp_path / "tune"
  args = [*TINY_FLAGS, f"--dataset=embedded:{corpus}", f"--search_space={space}",
          "--tuner=random", "--max_trials=2", f"--tune_dir={tune_dir}",
          "--max_export_mb=1.2", f"--model_dir={tmp_path / 'unused'}"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, "-m", "tfagent.tune", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = tune_dir / "trials" / "trial_0" / tune_report.RECORD_FILE
  second = tune_dir / "trials" / "trial_1" / "config.json"
  deadline = time.time() + 300
  while not second.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert first.exists() and second.exists(), "the search did not reach its second trial"
  stamp = os.stat(first).st_mtime_ns
  assert run_command(monkeypatch, "tune", *args) == 0
  assert os.stat(first).st_mtime_ns == stamp  # Trial 0 is not run again.
  summary = json.loads((tune_dir / "tuning.json").read_text())
  trials = {t["values"]["embedding_dim"]: t for t in summary["trials"]}
  assert len(summary["trials"]) == 2, summary["trials"]
  assert trials[8]["status"] == "completed" and trials[8]["export_mb"] < 1.2, trials
  assert trials[256]["status"] == "rejected" and trials[256]["export_mb"] > 1.2, trials
  assert summary["best"]["values"] == {"embedding_dim": 8}


def test_a_tune_dir_resumes_only_its_own_search_budgets_included(tmp_path):
  """A trial that finished under one --max_export_mb was judged by it: resuming under
  another budget (which could make the best trial one over it) is refused, as another
  space is; the same settings resume."""
  cfg = tiny_config("unused", tmp_path / "run", tmp_path / "sm")
  space = {"dropout": {"min": 0.0, "max": 0.5}}

  def settings(**budgets):
    options = tune.TuneOptions(tune_dir=str(tmp_path / "tune"), **budgets)
    return options, tune.search_settings(cfg, space, options)
  os.makedirs(tmp_path / "tune")
  tune.check_same_search(*settings())
  tune.check_same_search(*settings())  # The same search resumes.
  with pytest.raises(ConfigError, match="its budgets differ"):
    tune.check_same_search(*settings(max_export_mb=0.25))
  options = tune.TuneOptions(tune_dir=str(tmp_path / "tune"))
  with pytest.raises(ConfigError, match="its search_space differ"):
    tune.check_same_search(options, tune.search_settings(
        cfg, {"dropout": {"min": 0.0, "max": 0.3}}, options))


def test_a_resumed_search_gets_what_is_left_of_its_time_budget(tmp_path):
  """--tune_time_budget=10m resumed after trials of 100 s and 50.5 s leaves 449.5 s (the
  whole budget started again on every resume); a trial without a record (killed) counts 0."""
  options = tune.TuneOptions(tune_dir=str(tmp_path), time_budget_s=600.0)
  assert tune.time_left(options) == 600.0
  for trial, seconds in (("0", 100.0), ("1", 50.5), ("2", None)):
    os.makedirs(tmp_path / "trials" / f"trial_{trial}")
    if seconds is not None:
      (tmp_path / "trials" / f"trial_{trial}" / tune_report.RECORD_FILE).write_text(
          json.dumps({"trial": trial, "seconds": seconds}))
  assert tune.time_left(options) == pytest.approx(449.5)
