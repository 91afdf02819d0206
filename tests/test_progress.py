"""What a user sees while a run works: stages, progress inside an epoch with an ETA, the end."""

import re
import time

import keras
import numpy as np

from tfagent import progress


class Clock:
  """A clock that moves only when told, so that the test's timings are exact."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class Slow(keras.callbacks.Callback):
  """Makes each training step take `seconds` on `clock`; `stall` adds to the steps it names."""

  def __init__(self, clock: Clock, seconds: float, stall: dict = None):
    super().__init__()
    self.clock, self.seconds, self.stall, self.step = clock, seconds, stall or {}, 0

  def on_train_batch_end(self, batch, logs=None):
    self.step += 1
    self.clock.now += self.seconds + self.stall.get(self.step, 0.0)


def fit_log(caplog, stall=None) -> str:
  """Two epochs of 10 steps of 0.25 s each on a fake clock, logged every second."""
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile("sgd", "mse")
  x = np.zeros((40, 2), "float32")
  clock = Clock()
  with caplog.at_level("INFO", logger="absl"):
    model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0,
              callbacks=[Slow(clock, 0.25, stall), progress.FitProgress(4, every=1.0, clock=clock)])
  return caplog.text


def etas(text: str) -> list:
  """(epoch, step, seconds left) of each progress line inside an epoch."""
  return [(int(e), int(s), float(t.split()[0])) for e, s, t in re.findall(
      r"Epoch (\d)/2: step (\d+)/10, \d+ examples/s; at most (.+) left", text)]


def test_fit_progress_speaks_inside_an_epoch_with_an_eta_that_counts_down(caplog):
  text = fit_log(caplog)
  inside = etas(text)
  # A line a second of 0.25-s steps (the count restarts with each epoch): steps 4 and 8.
  assert [(e, s) for e, s, _ in inside] == [(1, 4), (1, 8), (2, 4), (2, 8)]
  # The ETA is the steps left in the fit times 0.25 s.
  assert [t for _, _, t in inside] == [4.0, 3.0, 1.5, 0.5]
  ends = re.findall(r"Epoch (\d)/2 done in [\d.]+ s; (.+)", text)
  assert ends == [("1", "at most 2.5 s left in the fit."), ("2", "the fit is done.")]


def test_one_stalled_step_barely_moves_the_eta(caplog):
  # Epoch 2's first step stalls for 2 s, so a line follows it at once. Its ETA averages the stall
  # over the fit's 11 steps (4.75 s / 11 = 0.43 s a step, x 9 steps left = 3.9 s), where that
  # step alone would say 9 x 2.25 = 20.3 s; the next lines keep counting down.
  inside = etas(fit_log(caplog, stall={11: 2.0}))
  assert [(s, t) for e, s, t in inside if e == 2] == [(1, 3.9), (5, 1.9), (9, 0.4)]


def test_stage_announces_and_times_its_work(caplog):
  @progress.stage("Counting")
  def count():
    time.sleep(0.25)
    return 3

  with caplog.at_level("INFO", logger="absl"):
    assert count() == 3
  assert re.search(r"Counting\.\.\..*Counting: done in 0\.[2-9] s\.", caplog.text, re.S)


def test_durations_read_as_minutes_and_seconds():
  assert progress.duration(8.44) == "8.4 s"
  assert progress.duration(75.2) == "1 min 15 s"
  assert progress.duration(3600) == "60 min 00 s"


def test_a_run_announces_its_stages_in_order_each_once(corpus_dir, tmp_path, caplog):
  """What a user reads while a run works: each stage starts and ends once, in the order the
  run does them (a decorator slipped onto the wrong function moved "Training" after the fit)."""
  from conftest import tiny_config
  from tfagent import train
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm")
  with caplog.at_level("INFO", logger="absl"):
    train.train_and_evaluate(cfg)
  # The stages up to the export's: caplog sees no absl line after the export starts (the
  # command's own log, which test_docs reads, goes on).
  stages = ["Reading and checking the data", "Building the model", "Training",
            "Restoring the best epoch's weights"]
  lines = [r.getMessage() for r in caplog.records]
  for stage in stages:  # Each starts once and ends once.
    assert sum(l.startswith(stage) and l.endswith("...") for l in lines) == 1, stage
    assert sum(l.startswith(stage) and ": done in " in l for l in lines) == 1, stage
  begun = [next(i for i, l in enumerate(lines) if l.startswith(s) and l.endswith("..."))
           for s in stages]
  assert begun == sorted(begun), [lines[i] for i in begun]  # In the run's order.


def test_the_closing_line_names_the_file_the_test_figures_come_from(tmp_path):
  """With --test_path the test split is that file: the line named the training file."""
  from tfagent import config
  cfg = config.Config(data=config.DataConfig(dataset="csv:train.csv", test_path="test.csv"))
  result = {"accuracy": 0.5, "macro_f1": 0.5, "examples": 8,
            "saved_model": str(tmp_path / "sm" / "m" / "1")}
  first = progress.final_summary(cfg, result, "a text").splitlines()[0]
  assert first == "Test: accuracy 50.00%, macro F1 0.5000 on 8 texts of test.csv."
  cfg = config.Config(data=config.DataConfig(dataset="csv:all.csv"))
  assert progress.final_summary(cfg, result, "a text").splitlines()[0].endswith(
      "on 8 texts of csv:all.csv.")


def test_under_folds_the_closing_line_names_the_held_out_fold_not_the_test_path(tmp_path):
  """--folds leaves --test_path unread: the figures are the held-out fold's of --dataset (the
  line named test.csv for the 181 texts of fold 0 of train.csv)."""
  from tfagent import config
  cfg = config.Config(data=config.DataConfig(dataset="csv:train.csv", test_path="test.csv",
                                             folds=3, fold=0))
  result = {"accuracy": 0.5, "macro_f1": 0.5, "examples": 181,
            "saved_model": str(tmp_path / "sm" / "m" / "1")}
  first = progress.final_summary(cfg, result, "a text").splitlines()[0]
  assert first == ("Test: accuracy 50.00%, macro F1 0.5000 on 181 texts of csv:train.csv "
                   "(held-out fold 0 of 3).")


def test_a_multilabel_closing_line_says_subset_accuracy_and_gives_micro_f1(tmp_path):
  """A multilabel run's `accuracy` is subset (exact-match) accuracy: the line called it
  "accuracy" and left out micro F1, the task's headline figure."""
  from tfagent import config
  cfg = config.Config(data=config.DataConfig(dataset="csv:ml.csv", task="multilabel"))
  result = {"accuracy": 0.8884, "subset_accuracy": 0.8884, "micro_f1": 0.9444,
            "macro_f1": 0.9394, "examples": 215, "saved_model": str(tmp_path / "sm" / "m" / "1")}
  first = progress.final_summary(cfg, result, "a text").splitlines()[0]
  assert first == ("Test: micro F1 0.9444, macro F1 0.9394, subset accuracy 88.84% on 215 "
                   "texts of csv:ml.csv.")
