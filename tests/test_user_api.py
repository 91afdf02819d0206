"""What a user touches beyond training: evaluate on any file, the model card, guardrails, the
Python API and the `tfagent` command."""

import csv
import json
import os
import subprocess
import sys
import types

import pytest

import tfagent
from conftest import NEGATIVE, POSITIVE, write_csv
from tfagent import config, evaluate, model_card
from tfagent.errors import ConfigError, DataError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_evaluate_scores_every_record_of_a_labelled_file(trained_run, tmp_path):
  export = trained_run[1]["saved_model"]
  rows = [(f"{p} {p}", "positive") for p in POSITIVE] + [(f"{n} {n}", "negative")
                                                         for n in NEGATIVE]
  path = write_csv(tmp_path / "new.csv", rows)
  data_cfg = config.DataConfig(dataset=f"csv:{path}")
  result = evaluate.run_labelled_source(data_cfg, export, str(tmp_path / "eval"))
  assert result["examples"] == len(rows)  # Every record, not a split of them.
  assert result["accuracy"] >= 0.8 and set(result["per_class"]) == {"negative", "positive"}
  assert result["per_class"]["positive"]["support"] == len(POSITIVE)
  predictions = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv", encoding="utf-8")))
  assert sorted(p["text"] for p in predictions) == sorted(t for t, _ in rows)
  correct = sum(p["label"] == p["predicted"] for p in predictions)
  assert correct / len(rows) == pytest.approx(result["accuracy"])


def test_evaluate_rejects_a_label_the_model_does_not_know(trained_run, tmp_path):
  path = write_csv(tmp_path / "new.csv", [("great movie", "positive"), ("meh", "neutral")])
  with pytest.raises(DataError, match="new.csv:3: unknown label 'neutral'"):
    evaluate.run_labelled_source(config.DataConfig(dataset=f"csv:{path}"),
                                 trained_run[1]["saved_model"], str(tmp_path / "eval"))


def test_model_card_beside_the_export_holds_the_metrics_of_eval(trained_run):
  cfg, result = trained_run
  card = json.loads(open(os.path.join(result["saved_model"], "model_card.json")).read())
  metrics = json.loads(open(os.path.join(cfg.train.model_dir, "eval", "metrics.json")).read())
  for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "roc_auc",
              "per_class", "examples"):
    assert card["metrics"]["test"][key] == metrics[key], key
  assert card["metrics"]["validation"]["accuracy"] == metrics["validation_metrics"]["accuracy"]
  assert card["class_names"] == ["negative", "positive"]
  assert card["data"]["split_sizes"] == {"train": 192, "validation": 21, "test": 27}
  assert set(card["data"]["content_sha256"]) == {"train", "validation", "test"}
  assert len(set(card["data"]["content_sha256"].values())) == 3
  assert card["config"] == cfg.to_dict()
  assert card["versions"]["tensorflow"] and card["versions"]["keras"]
  assert any("192 training texts" in w for w in card["warnings"])
  page = open(os.path.join(result["saved_model"], "model_card.md")).read()
  assert f"accuracy {metrics['accuracy']:.4f}" in page and "| positive |" in page


def test_test_predictions_file_lists_every_test_text(trained_run):
  cfg, result = trained_run
  rows = list(csv.DictReader(open(os.path.join(cfg.train.model_dir, "eval",
                                               "test_predictions.csv"), encoding="utf-8")))
  assert len(rows) == result["examples"] == 27
  assert sum(r["label"] == r["predicted"] for r in rows) / 27 == pytest.approx(result["accuracy"])
  assert set(rows[0]) == {"text", "label", "predicted", "probability_negative",
                          "probability_positive"}


@pytest.mark.parametrize("model,flags,named", [
    ("transformer", {"hidden_dim"}, "--hidden_dim (for lstm) does not apply to "
                                    "--model=transformer"),
    ("lstm", {"preset", "truncation"}, "--preset (for bert), --truncation (for bert) do not "
                                       "apply to --model=lstm"),
    ("bert", {"ensemble_size"}, "--ensemble_size (for lstm, transformer)")])
def test_a_flag_that_does_not_apply_to_the_model_is_an_error_naming_it(model, flags, named):
  cfg = config.Config(model=config.ModelConfig(name=model))
  with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")) as e:
    config.check_applicable(cfg, flags | {"model", "dataset"})
  assert "its own flags are" in str(e.value)
  config.check_applicable(cfg, {"model", "dataset", "dropout", "wide_ngrams", "epochs"})


@pytest.mark.slow
def test_python_api_trains_from_a_flagfile_with_overrides_and_loads(corpus_dir, tmp_path):
  flagfile = tmp_path / "tiny.flags"
  flagfile.write_text(f"--dataset=embedded:{corpus_dir}\n--vocab_size=200\n--sequence_length=16\n"
                      "--embedding_dim=8\n--hidden_dim=4\n--batch_size=32\n--learning_rate=0.01\n"
                      "--verbose=0\n", encoding="utf-8")
  result = tfagent.train(str(flagfile), epochs=2, model_dir=str(tmp_path / "run"),
                         export_dir=str(tmp_path / "sm"), model_name="api")
  assert result["saved_model"] == str(tmp_path / "sm" / "api" / "1")
  assert result["epochs_run"] == 2 and result["accuracy"] >= 0.9
  rows = tfagent.load(str(tmp_path / "sm" / "api")).predict(["great movie loved it", "很差 讨厌"])
  assert [r["class"] for r in rows] == ["positive", "negative"]
  with pytest.raises(ConfigError, match="--hidden_dim"):
    tfagent.train(str(flagfile), model="transformer")
  with pytest.raises(ConfigError, match="epochs"):
    tfagent.train(str(flagfile), epochs="many")


@pytest.mark.slow
def test_tfagent_command_lists_subcommands_and_each_ones_flags_by_section():
  proc = subprocess.run([sys.executable, "-m", "tfagent.cli", "train", "--help"],
                        capture_output=True, text=True, env=ENV, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  sections = [line for line in proc.stdout.splitlines() if line.endswith(" flags:")]
  assert sections == ["data flags:", "model flags:", "training flags:", "export flags:"]
  for flag in ("--text_field", "--test_path", "--class_names", "--on_bad_record",
               "--wide_ngrams", "--epochs", "--export_dir"):
    assert f"  {flag}:" in proc.stdout or f"  --[no]{flag[2:]}:" in proc.stdout, flag
  usage = subprocess.run([sys.executable, "-m", "tfagent.cli"], capture_output=True,
                         text=True, env=ENV, timeout=120)
  assert usage.returncode == 2 and "cross_validate" in usage.stdout
  bad = subprocess.run([sys.executable, "-m", "tfagent.cli", "fly"], capture_output=True,
                       text=True, env=ENV, timeout=120)
  assert bad.returncode == 2 and "unknown command 'fly'" in bad.stderr


def _info(report):
  return types.SimpleNamespace(split_sizes={"train": 10**6}, report=report)


def test_conflicting_labels_warning_says_what_dedup_did():
  on = model_card.data_warnings(_info({"conflicting_labels": 118, "dedup": True,
                                       "removed": {"conflicting_texts": 47}}), {})
  off = model_card.data_warnings(_info({"conflicting_labels": 5, "dedup": False}), {})
  assert on == ["118 repeated texts carried another label than their first copy; every copy of "
                "such a text was removed (47 texts)."]
  assert len(off) == 1 and "trained on under both; --dedup removes" in off[0]
  assert model_card.data_warnings(_info({"conflicting_labels": 0, "dedup": True}), {}) == []


def test_load_predicts_and_explains_a_large_input_a_batch_at_a_time(trained_run, monkeypatch):
  """tfagent.load(p).predict/explain sent the whole input in one model call: memory grew
  with it (0.7 MB a text to predict, 5 MB to explain) until the process was killed."""
  from tfagent import predict  # pylint: disable=import-outside-toplevel
  model = tfagent.load(trained_run[1]["saved_model"])
  texts = [f"{POSITIVE[i % len(POSITIVE)]} {NEGATIVE[i % len(NEGATIVE)]} {i}" for i in range(7)]
  whole = model.predict(texts)
  sizes, explained_sizes = [], []
  serve, explain = model.serve, model.explainer()  # The real calls, their batches recorded.
  model.serve = lambda text: sizes.append(len(text)) or serve(text=text)
  model._explainers[False] = (  # pylint: disable=protected-access
      lambda batch, name: explained_sizes.append(len(batch)) or explain(batch, name))
  monkeypatch.setattr(predict, "PREDICT_BATCH", 3)
  monkeypatch.setattr(predict, "EXPLAIN_BATCH", 2)
  assert model.predict(texts) == whole and sizes == [3, 3, 1]
  explained = model.explain(texts)
  assert [row["text"] for row in explained] == texts and explained_sizes == [2, 2, 2, 1]
  assert explained[6] == model.explain(texts[6:])[0]
  with pytest.raises(TypeError, match="texts is a dict"):
    model.predict({"text": "a good film"})  # It classified the key, "text".
  for top_k in (-1, 1.5, True):
    with pytest.raises(ValueError, match=f"top_k={top_k!r}: give a whole number"):
      model.predict(texts, top_k=top_k)
