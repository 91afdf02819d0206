"""`tfagent evaluate --model_dir` on a wide+deep run: it scores what training exported, and
keeps the run's own metrics unless asked."""

import csv
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import NEGATIVE, POSITIVE, tiny_config
from tfagent import config, evaluate, train
from tfagent.errors import ConfigError, DataError


def write_noisy_corpus(folder, n=600, flip=0.1, seed=2) -> str:
  """Embedded layout; each text is three phrases, labelled by their majority, 10 % flipped.

  Neither path is perfect on it, so the deep weight chosen on validation (0.15 with these
  seeds on 2 CPU cores) scores the test split otherwise than weight 1.
  """
  rng = random.Random(seed)
  lines = {"pos.txt": [], "neg.txt": []}
  for i in range(n):
    picks = [rng.choice(POSITIVE + NEGATIVE) for _ in range(3)]
    positive = (sum(p in POSITIVE for p in picks) >= 2) != (rng.random() < flip)
    lines["pos.txt" if positive else "neg.txt"].append(f"{' '.join(picks)} #{i}")
  os.makedirs(folder, exist_ok=True)
  for name, texts in lines.items():
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
      f.write("\n".join(texts) + "\n")
  return str(folder)


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
  """A tiny LSTM with the wide path, trained once; returns `(run dir, its eval/metrics.json)`.

  The metrics are read before any test runs evaluate on the run.
  """
  root = tmp_path_factory.mktemp("wide")
  cfg = tiny_config(write_noisy_corpus(root / "corpus"), root / "run", root / "saved_models")
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, wide_ngrams=2))
  train.train_and_evaluate(cfg)
  return cfg.train.model_dir, read_metrics(cfg.train.model_dir)


def read_metrics(run_dir) -> dict:
  with open(os.path.join(run_dir, "eval", "metrics.json"), encoding="utf-8") as f:
    return json.load(f)


def test_model_dir_scores_trainings_test_accuracy_to_the_last_digit(wide_run, tmp_path):
  run_dir, trained = wide_run
  # With weight 1 chosen, scoring at weight 1 would pass unnoticed.
  assert trained["wide"]["deep_weight"]["chosen"] != 1.0
  scored = evaluate.run_test_split(run_dir, None, str(tmp_path))
  assert (scored["accuracy"], scored["confusion_matrix"]) == \
      (trained["accuracy"], trained["confusion_matrix"])
  # metrics.json says what it scored (it held the figures alone).
  assert scored["checkpoint"] == os.path.join(run_dir, "checkpoints", "best.keras")
  assert "saved_model" not in scored


def test_an_existing_metrics_file_is_kept_unless_asked(wide_run, tmp_path):
  run_dir, trained = wide_run
  path = os.path.join(run_dir, "eval", "metrics.json")
  with open(path, "rb") as f:
    before = f.read()
  with pytest.raises(ConfigError, match=rf"{re.escape(path)} exists.*--overwrite"):
    evaluate.run_test_split(run_dir, None, None)
  with open(path, "rb") as f:
    assert f.read() == before
  copy = shutil.copytree(run_dir, tmp_path / "run")
  scored = evaluate.run_test_split(str(copy), None, None, overwrite=True)
  assert read_metrics(copy) == json.loads(json.dumps(scored))
  assert scored["accuracy"] == trained["accuracy"]


@pytest.mark.slow
def test_the_command_refuses_to_overwrite_in_one_line(wide_run):
  run_dir, _ = wide_run
  proc = subprocess.run([sys.executable, "-m", "tfagent.evaluate", f"--model_dir={run_dir}"],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert f"{os.path.join(run_dir, 'eval', 'metrics.json')} exists" in proc.stderr
  assert "--overwrite" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("edit", ["swap_two_labels", "drop_a_text"])
def test_a_test_split_other_than_the_runs_is_refused(wide_run, tmp_path, edit):
  """--model_dir reads the run's --dataset again; if that is no longer the data it trained on
  (a relative path read from another directory, a file edited since), its figures would be
  of other texts: refused, naming the run's data report. Swapping the labels of a positive
  and a negative test text keeps the sizes and the class balance: only the digest tells."""
  run_dir, _ = wide_run
  copy = shutil.copytree(run_dir, tmp_path / "run")
  with open(copy / "config.json", encoding="utf-8") as f:
    cfg = json.load(f)
  corpus = shutil.copytree(cfg["data"]["dataset"].split(":", 1)[1], tmp_path / "corpus")
  cfg["data"]["dataset"] = f"embedded:{corpus}"
  with open(copy / "config.json", "w", encoding="utf-8") as f:
    json.dump(cfg, f)
  evaluate.run_test_split(str(copy), None, str(tmp_path / "same"))  # The same data: scored.
  from tfagent import data  # pylint: disable=import-outside-toplevel
  splits, info = data.load_splits(config.load_json(str(copy / "config.json")).data)
  test = {}  # label -> a test text
  for text, label in splits["test"].as_numpy_iterator():
    test.setdefault(info.class_names[label][:3], text.decode())  # positive: pos.txt
  files = {name: (corpus / f"{name}.txt").read_text(encoding="utf-8").splitlines()
           for name in ("pos", "neg")}
  files["pos"].remove(test["pos"])
  if edit == "swap_two_labels":
    files["neg"].remove(test["neg"])
    files["pos"].append(test["neg"])
    files["neg"].append(test["pos"])
  for name, lines in files.items():
    (corpus / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(DataError, match=(r"another test split than the run trained with.*"
                                       + re.escape(str(copy / "data_report.json")))) as e:
    evaluate.run_test_split(str(copy), None, str(tmp_path / "edited"))
  assert ("texts or labels differ" in str(e.value)) == (edit == "swap_two_labels")


def test_an_export_of_the_classes_in_another_order_is_scored_by_name(wide_run, tmp_path):
  """--model_dir with --saved_model of another run: its probabilities are read by class name,
  so an export of the same classes in the other order scores what it scored in its own run
  (read by position, every figure would be of the flipped classes); other classes are refused."""
  run_dir, trained = wide_run
  with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
    corpus = json.load(f)["data"]["dataset"].split(":", 1)[1]
  cfg = tiny_config(corpus, tmp_path / "run", tmp_path / "sm")
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                          class_names="positive,negative"))
  reversed_run = train.train_and_evaluate(cfg)
  assert trained["class_names"] == ["negative", "positive"]
  base = os.path.dirname(reversed_run["saved_model"])  # Its latest version: the one named.
  scored = evaluate.run_test_split(run_dir, base, str(tmp_path / "eval"))
  assert scored["saved_model"] == reversed_run["saved_model"]
  assert scored["accuracy"] == reversed_run["accuracy"]
  assert scored["class_names"] == trained["class_names"]
  assert scored["confusion_matrix"] == [row[::-1] for row in reversed_run["confusion_matrix"][::-1]]


@pytest.mark.parametrize("kind", ["in_memory", "streamed"])
def test_scoring_a_file_scores_every_record_of_it_in_its_order(wide_run, tmp_path, kind):
  """`--dataset` with `--saved_model` scored the file split as for training and joined: a
  --test_path left in the flags added another file's records, --noread_test left a tenth
  out, and predictions.csv came in split order, not the file's; a skipped record was counted
  nowhere but the log."""
  run_dir, _ = wide_run
  rng = random.Random(5)
  rows = [(f"{rng.choice(POSITIVE)} {rng.choice(POSITIVE)} #{i}", "positive") if i % 2 else
          (f"{rng.choice(NEGATIVE)} {rng.choice(NEGATIVE)} #{i}", "negative") for i in range(90)]
  path, other = tmp_path / "score.csv", tmp_path / "other.csv"
  for file, content in ((path, rows[:40] + [("", "positive")] + rows[40:]), (other, rows[:30])):
    with open(file, "w", encoding="utf-8", newline="") as f:
      csv.writer(f).writerows([("text", "label"), *content])
  data_cfg = config.DataConfig(dataset=f"csv:{path}", test_path=str(other), read_test=False,
                               on_bad_record="skip", max_train_examples=10,
                               cache_max_mb=0 if kind == "streamed" else 256)
  scored = evaluate.run_labelled_source(
      data_cfg, os.path.join(os.path.dirname(run_dir), "saved_models", "tiny"),
      str(tmp_path / "eval"))
  assert scored["examples"] == 90 and scored["skipped_total"] == 1
  with open(tmp_path / "eval" / "predictions.csv", encoding="utf-8") as f:
    assert [r["text"] for r in csv.DictReader(f)] == [text for text, _ in rows]
  with open(tmp_path / "eval" / "data_report.json", encoding="utf-8") as f:
    assert json.load(f)["skipped"]["empty_text"] == 1


def test_a_class_name_with_a_comma_stays_one_class(tmp_path):
  """--saved_model with --dataset: the export's class names fix the labels; one holding a
  comma ("Arts, Culture") is one class, not two."""
  rows = [(f"{w} gallery museum {i}", "Arts, Culture") for i, w in enumerate(["art"] * 60)]
  rows += [(f"{w} match goal {i}", "Sport") for i, w in enumerate(["ball"] * 60)]
  path = tmp_path / "topics.csv"
  with open(path, "w", encoding="utf-8", newline="") as f:
    csv.writer(f).writerows([("text", "label"), *rows])
  cfg = tiny_config("unused", tmp_path / "run", tmp_path / "sm")
  cfg = dataclasses.replace(cfg, data=config.DataConfig(dataset=f"csv:{path}", batch_size=32))
  result = train.train_and_evaluate(cfg)
  assert result["class_names"] == ["Arts, Culture", "Sport"]
  scored = evaluate.run_labelled_source(config.DataConfig(dataset=f"csv:{path}"),
                                        result["saved_model"], str(tmp_path / "eval"))
  assert scored["class_names"] == ["Arts, Culture", "Sport"]
  assert sum(map(sum, scored["confusion_matrix"])) == len(rows)


def test_a_class_absent_from_the_scored_data_neither_lowers_macro_f1_nor_voids_the_auc():
  """A perfect classifier of 3 classes scored on texts of 2 (a small fold, a partial file):
  macro F1 1.0 over the classes present (was 0.667: the absent class counted as F1 0) and
  ROC-AUC 1.0 (was NaN); with every class present, scikit-learn's own figures."""
  from sklearn import metrics as skm
  labels = np.array([0, 0, 1, 1, 0])
  probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4],
                    [0.5, 0.2, 0.3]])
  m = evaluate.compute_metrics(labels, probs, ["a", "b", "c"])
  assert m["macro_f1"] == m["macro_recall"] == m["macro_precision"] == 1.0
  assert m["roc_auc"] == 1.0 and m["per_class"]["c"]["support"] == 0
  wrong = probs[:, [0, 2, 1]]  # Class b's examples now predicted as c.
  m = evaluate.compute_metrics(labels, wrong, ["a", "b", "c"])
  # b has examples and is never predicted: precision 0, not left out (it read 0.5, a's 1 and
  # c's 0, as if b could not fail); c is predicted without examples: precision 0.
  assert m["macro_precision"] == pytest.approx(1 / 3)
  assert m["macro_recall"] == pytest.approx(0.5)  # a: 1, b: 0 (c has no examples).
  labels = np.array([0, 1, 2, 1, 0])
  m = evaluate.compute_metrics(labels, probs, ["a", "b", "c"])
  assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, probs.argmax(-1), average="macro"))
  pred = probs.argmax(-1)  # c (one example) is never predicted: as scikit-learn's, 0 for it.
  assert 2 not in pred and m["macro_precision"] == pytest.approx(
      skm.precision_score(labels, pred, average="macro", zero_division=0))
  assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr"))
  binary = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
  m = evaluate.compute_metrics(np.array([0, 1, 1, 0]), binary, ["n", "p"])
  assert m["roc_auc"] == pytest.approx(skm.roc_auc_score([0, 1, 1, 0], binary[:, 1]))
  assert np.isnan(evaluate.compute_metrics(np.array([1, 1]), binary[:2], ["n", "p"])["roc_auc"])
