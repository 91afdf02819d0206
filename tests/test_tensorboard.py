"""TensorBoard: the event files hold the scalars, hparams and text a practitioner looks for,
and TensorBoard's own server lists the runs and serves them over its HTTP API."""

import dataclasses
import glob
import os
import time
import types

import pytest
import requests
from tensorboard import program
import tensorflow as tf

from conftest import tiny_config
from serving_util import write_explain_model, write_synthetic_model
from tfagent import data, evaluate, explain_view, summaries, train


@pytest.fixture(scope="module")
def tb_run(corpus_dir, tmp_path_factory):
  """A tiny Transformer run in bfloat16 with a profiler trace of steps 2-3."""
  root = tmp_path_factory.mktemp("tb")
  cfg = tiny_config(corpus_dir, root / "run", root / "sm", name="transformer",
                    explain_steps=64)
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, mixed_precision="bfloat16", profile_steps="2,3"))
  result = train.train_and_evaluate(cfg)
  return types.SimpleNamespace(logs=os.path.join(cfg.train.model_dir, "logs"), cfg=cfg,
                               result=result)


def tags_in(folder: str) -> dict:
  """tag -> plugin name, over the event files directly in `folder`."""
  tags = {}
  for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags[value.tag] = value.metadata.plugin_data.plugin_name
  return tags


@pytest.mark.slow
def test_event_files_hold_scalars_hparams_and_text(tb_run):
  train_tags = tags_in(os.path.join(tb_run.logs, "train"))
  for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate",
              "epoch_examples_per_second"):
    assert tag in train_tags, sorted(train_tags)
  val_tags = tags_in(os.path.join(tb_run.logs, "validation"))
  assert {"epoch_loss", "epoch_accuracy"} <= set(val_tags)
  assert val_tags["misclassified_validation_examples"] == "text"
  root_tags = tags_in(tb_run.logs)
  assert root_tags["_hparams_/experiment"] == "hparams"
  assert root_tags["_hparams_/session_start_info"] == "hparams"
  assert {"final/val_loss", "final/val_accuracy", "final/val_macro_f1",
          "final/test_accuracy"} <= set(root_tags)
  # The HParams row is the run directory's whole path: by its folder name alone, runs of two
  # cross-validations (each with a fold_0) were one row, their metrics averaged.
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=C0415
  starts = [plugin_data_pb2.HParamsPluginData.FromString(
      value.metadata.plugin_data.content).session_start_info
            for path in glob.glob(os.path.join(tb_run.logs, "events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value if value.tag == "_hparams_/session_start_info"]
  assert [s.group_name for s in starts] == [os.path.abspath(tb_run.cfg.train.model_dir)]


def test_a_final_metric_without_its_hparams_column_is_an_error(tmp_path):
  """The multilabel run's test F1s were passed and silently not written."""
  from tfagent import summaries
  with pytest.raises(ValueError, match=r"\['test_f2'\] are not in summaries.FINAL_METRICS"):
    summaries.write_final_metrics(str(tmp_path), {"val_loss": 1.0, "test_f2": 0.5}, step=1)


def text_summary(folder: str, tag: str) -> str:
  for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          return tf.make_ndarray(value.tensor).item().decode("utf-8")
  raise AssertionError(f"no {tag} in {folder}")


@pytest.mark.slow
def test_misclassified_summary_is_the_exports_mistakes_on_the_first_validation_texts(tb_run):
  """The table equals one built from the export's own answers on the same texts."""
  cfg, result = tb_run.cfg, tb_run.result
  splits, info = data.load_splits(cfg.data)
  scan = splits["validation"].take(summaries.MISCLASSIFIED_SCAN)
  texts = [text for text, _ in scan.as_numpy_iterator()]
  labels, probs, _ = evaluate.predict_probabilities(
      evaluate.saved_model_predict_fn(result["saved_model"]), scan, evaluate.BATCH_SIZE)
  export = result["saved_model"]  # With the explain signature, the top tokens too.
  explain = explain_view.load_explainer(export) if explain_view.has_explain(export) else None
  expected = summaries.misclassified_markdown(texts, labels, probs, info.class_names,
                                              cfg.train.misclassified_examples, explain)
  table = text_summary(os.path.join(tb_run.logs, "validation"),
                       "misclassified_validation_examples")
  assert table == expected
  assert table.count("\n") + 1 == 2 + max(1, min(cfg.train.misclassified_examples,
                                                 int((probs.argmax(-1) != labels).sum())))


def test_misclassified_table_lists_each_mistakes_top_tokens_from_the_explain_signature(
    tmp_path):
  """The table read back from the event file: a top-tokens column for an export with the
  explain signature (largest |attribution| first, five at most); none for an older export."""
  import numpy as np
  texts = [b"the worst badly made film ever badness", b"fine", b"bad | ok"]
  labels = np.array([0, 0, 1])
  probs = np.array([[0.2, 0.8], [0.9, 0.1], [0.7, 0.3]], np.float32)
  export = write_explain_model(str(tmp_path / "explain" / "1"))
  summaries.write_misclassified(str(tmp_path / "logs"), (texts, labels, probs),
                                ["negative", "positive"], 5, 1,
                                explain_view.load_explainer(export))
  table = text_summary(str(tmp_path / "logs"), "misclassified_validation_examples")
  assert table.splitlines() == [
      "| true | predicted | p | text | top tokens |", "| --- | --- | --- | --- | --- |",
      "| negative | positive | 0.80 | the worst badly made film ever badness | "
      "badness (-0.70), worst (+0.50), badly (-0.50), made (+0.40), film (+0.40) |",
      "| positive | negative | 0.70 | bad \\| ok | bad (-0.30), ok (+0.20), \\| (+0.10) |"]
  old = write_synthetic_model(str(tmp_path / "old" / "1"))
  assert not explain_view.has_explain(old)
  summaries.write_misclassified(str(tmp_path / "old_logs"), (texts, labels, probs),
                                ["negative", "positive"], 5, 1)
  table = text_summary(str(tmp_path / "old_logs"), "misclassified_validation_examples")
  assert table.splitlines()[0] == "| true | predicted | p | text |"


@pytest.mark.slow
def test_profiler_trace_is_written(tb_run):
  assert glob.glob(os.path.join(tb_run.logs, "train", "plugins", "profile", "*", "*.xplane.pb"))


@pytest.mark.slow
def test_tensorboard_server_lists_the_runs_and_serves_their_tags(tb_run):
  """TensorBoard's own server (in this process, on a loopback port) finds the three runs and
  their scalar and text tags: what the event-file reads above cannot show.

  `program.TensorBoard` is what the `tensorboard` command runs; `--load_fast=auto` (its
  default) reads through the same data server a user gets. `--reload_interval=0` loads the
  finished run once, so the server thread and its data server sit idle until this worker ends.
  """
  board = program.TensorBoard()
  board.configure(argv=[None, f"--logdir={tb_run.logs}", "--host=127.0.0.1", "--port=0",
                        "--reload_interval=0", "--load_fast=auto"])
  base = board.launch()
  scalars, deadline = {}, time.monotonic() + 90
  while time.monotonic() < deadline:  # The first load runs beside the server.
    scalars = requests.get(f"{base}data/plugin/scalars/tags", timeout=5).json()
    if "epoch_examples_per_second" in scalars.get("train", {}) and "." in scalars:
      break
    time.sleep(0.2)
  assert {".", "train", "validation"} <= set(requests.get(f"{base}data/runs", timeout=5).json())
  assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate",
          "epoch_examples_per_second"} <= set(scalars.get("train", {})), scalars
  assert {"epoch_loss", "epoch_accuracy"} <= set(scalars["validation"])
  assert "final/test_accuracy" in scalars["."]
  text = requests.get(f"{base}data/plugin/text/tags", timeout=5).json()
  assert "misclassified_validation_examples" in text["validation"]
