"""What a user sees while a run works: stages, progress inside an epoch with an ETA, the end."""

import re
import time

import keras
import numpy as np

from tfagent import progress


class Slow(keras.callbacks.Callback):
  """Makes each training step take `seconds`, as a real model's step would."""

  def __init__(self, seconds: float):
    super().__init__()
    self.seconds = seconds

  def on_train_batch_end(self, batch, logs=None):
    time.sleep(self.seconds)


def test_fit_progress_speaks_inside_an_epoch_with_an_eta_that_counts_down(caplog):
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile("sgd", "mse")
  x = np.zeros((40, 2), "float32")
  with caplog.at_level("INFO", logger="absl"):
    model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0,
              callbacks=[Slow(0.05), progress.FitProgress(4, every=0.2)])
  inside = re.findall(r"Epoch (\d)/2: step (\d+)/10, \d+ examples/s; at most (.+) left",
                      caplog.text)
  # 10 steps of >= 0.05 s an epoch: a line every 0.2 s, so at least one in each epoch.
  assert {epoch for epoch, _, _ in inside} == {"1", "2"}
  left = [float(t.split()[0]) for _, _, t in inside]
  assert left == sorted(left, reverse=True)  # It counts down.
  first_step = int(inside[0][1])  # The first ETA covers this epoch's rest and all of epoch 2.
  assert left[0] >= 0.05 * (20 - first_step) * 0.9
  ends = re.findall(r"Epoch (\d)/2 done in [\d.]+ s; (.+)", caplog.text)
  assert [e for e, _ in ends] == ["1", "2"] and ends[-1][1] == "the fit is done."


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
