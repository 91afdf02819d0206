"""--task=multilabel: label lists in csv/jsonl/tfrecord, their bad-record checks, thresholds in
the export, metrics, and the export served by `tfagent serve` over REST and gRPC.

The end-to-end corpus is docs/examples/make_multilabel.py's: 5 topics, each joined by its
partner half of the time. It goes csv -> tfrecord (convert) -> training, so the label lists
cross every stage.
"""

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys

import grpc
import keras
import numpy as np
import pytest
import requests
from sklearn.metrics import f1_score
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from conftest import run_command
import pooled_python
import serving_util
from serving_util import run_server
import conftest
from tfagent import config, data, export, model_card, signatures, tasks
from tfagent.data import convert
from tfagent.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "examples"))
import make_multilabel  # noqa: E402  pylint: disable=wrong-import-position

TEXTS = ["goal match doctor diet today", "senate ballot budget tax the", "chip robot week"]


def data_cfg(path: str, **overrides) -> config.DataConfig:
  kind = os.path.splitext(path)[1].lstrip(".")
  return config.DataConfig(dataset=f"{kind}:{path}", label_field="labels", task="multilabel",
                           **overrides)


def write_csv(path, rows, header=("text", "labels")) -> str:
  return conftest.write_csv(path, rows, header)


def by_text(ds) -> dict:
  """text -> multi-hot label list of a dataset's elements."""
  return {t.decode(): y.tolist() for t, y in ds.as_numpy_iterator()}


def test_label_lists_read_alike_from_csv_and_jsonl(tmp_path):
  rows = [("t one", "a|b"), ("t two", "b"), ("t three", "c | a"), ("t four", "c")]
  path_csv = write_csv(tmp_path / "d.csv", rows)
  with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as f:
    for text, labels in rows:
      f.write(json.dumps({"text": text, "labels": [x.strip() for x in labels.split("|")]}) + "\n")
  ds, info = data.load_all(data_cfg(path_csv))
  ds_json, info_json = data.load_all(data_cfg(str(tmp_path / "d.jsonl")))
  assert info.class_names == info_json.class_names == ("a", "b", "c")
  expected = {"t one": [1, 1, 0], "t two": [0, 1, 0], "t three": [1, 0, 1], "t four": [0, 0, 1]}
  assert by_text(ds) == by_text(ds_json) == expected
  assert ds.element_spec[1] == tf.TensorSpec([3], tf.float32)


@pytest.mark.parametrize("joiner", [",", ";"])
def test_labels_joined_by_another_delimiter_are_an_error_not_a_class(tmp_path, joiner):
  """A file that joins label lists with ',' read with --label_delimiter='|': 'b,a' would be a
  class of its own beside 'a' and 'b'. One error naming the label and the delimiter."""
  rows = [("t one", f"b{joiner}a"), ("t two", "b"), ("t three", "a"), ("t four", "c")]
  path = write_csv(tmp_path / "d.csv", rows)
  with pytest.raises(DataError, match=re.escape(
      f"label 'b{joiner}a' is the labels ['b', 'a'] joined by {joiner!r}, but "
      "--label_delimiter='|'")):
    data.load_all(data_cfg(path))
  _, info = data.load_all(dataclasses.replace(data_cfg(path), label_delimiter=joiner))
  assert info.class_names == ("a", "b", "c")


@pytest.mark.parametrize("labels, reason, message", [
    ("a|zz", "unknown_label", "d.csv:3: in the label list ['a', 'zz']: unknown label 'zz' in "
     "field 'labels'; expected one of a, b"),
    ("", "empty_label_list", "d.csv:3: empty label list in field 'labels'; expected one label "
     "at least (pass --allow_empty_labels"),
    ("a|b|a", "duplicate_label", "d.csv:3: label 'a' appears more than once in the label list "
     "'a|b|a' of field 'labels'"),
])
def test_bad_label_lists_name_file_and_line_or_are_counted(tmp_path, labels, reason, message):
  path = write_csv(tmp_path / "d.csv", [("x one", "a"), ("x two", labels), ("x three", "b"),
                                        ("x four", "a|b")])
  cfg = data_cfg(path, class_names="a,b")
  with pytest.raises(DataError) as error:
    data.load_all(cfg)
  assert str(error.value).startswith(os.path.join(str(tmp_path), message)), str(error.value)
  _, info = data.load_all(dataclasses.replace(cfg, on_bad_record="skip"))
  assert info.report["skipped"][reason] == 1 and info.split_sizes == {"all": 3}


def test_convert_stops_at_an_unknown_label_in_a_list_with_one_error(tmp_path, monkeypatch,
                                                                    caplog):
  """`tfagent convert` as a user runs it: exit status 1 and one error line naming file and line."""
  path = write_csv(tmp_path / "d.csv", [("x one", "a"), ("x two", "b|zz"), ("x three", "b")])
  code = run_command(monkeypatch, "convert", f"--dataset=csv:{path}", "--task=multilabel",
                     "--label_field=labels", "--class_names=a,b",
                     f"--output_dir={tmp_path / 'out'}")
  errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
  assert code == 1 and len(errors) == 1, errors
  assert errors[0].startswith(f"{path}:3: in the label list ['b', 'zz']: unknown label 'zz' in "
                              "field 'labels'; expected one of a, b"), errors[0]


def test_allow_empty_labels_keeps_a_record_no_label_applies_to(tmp_path):
  path = write_csv(tmp_path / "d.csv", [("x one", "a"), ("x two", ""), ("x three", "b")])
  ds, _ = data.load_all(data_cfg(path, allow_empty_labels=True))
  assert by_text(ds)["x two"] == [0, 0]


def test_a_list_needs_the_multilabel_task_and_a_list_source(tmp_path):
  with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as f:
    f.write('{"text": "x", "labels": ["a", "b"]}\n')
  plain = config.DataConfig(dataset=f"jsonl:{tmp_path / 'd.jsonl'}", label_field="labels")
  with pytest.raises(DataError, match=r"d.jsonl:1: label \['a', 'b'\] in field 'labels' is a "
                     "list; lists of labels need --task=multilabel"):
    data.load_all(plain)
  with pytest.raises(ConfigError, match="--task=multilabel: --dataset=embedded: gives one "
                     "label a record"):
    data.load_splits(config.DataConfig(task="multilabel"))


def test_best_thresholds_maximise_each_labels_f1():
  """Brute force over every cut of the scores agrees; a constant column keeps 0.5."""
  rng = np.random.default_rng(0)
  labels = (rng.random((200, 3)) < [0.3, 0.6, 0.0]).astype(np.float32)
  probs = np.clip(labels * 0.25 + rng.random((200, 3)) * 0.6, 0, 1)
  got = tasks.best_thresholds(labels, probs)
  for j in range(2):
    best = max(f1_score(labels[:, j], probs[:, j] >= t) for t in np.unique(probs[:, j]))
    assert f1_score(labels[:, j], probs[:, j] >= got[j]) == pytest.approx(best)
    assert abs(got[j] - 0.5) > 1e-3  # Tuned, not the default.
  assert got[2] == 0.5


class FixedLogits(keras.layers.Layer):
  """`<string>[b] -> <float32>[b, 3]`: logits of probabilities (0.4, 0.6, 0.2) for every text."""

  def call(self, text):
    p = tf.constant([[0.4, 0.6, 0.2]])
    return tf.tile(tf.math.log(p / (1 - p)), [tf.shape(text)[0], 1])


def test_export_applies_the_thresholds_it_stores(tmp_path):
  """0.4 >= threshold 0.3 turns label a on; 0.6 < 0.7 turns b off, where 0.5 would not."""
  text = keras.Input(shape=(), dtype="string")
  model = keras.Model(text, FixedLogits()(text))
  path = export.export_model(model, ["a", "b", "c"], config.ExportConfig(
      export_dir=str(tmp_path), model_name="fixed"), thresholds=[0.3, 0.7, 0.5])
  out = signatures.load_signature(path)(text=tf.constant(["x", "y"]))
  np.testing.assert_allclose(out["probabilities"].numpy(), [[0.4, 0.6, 0.2]] * 2, atol=1e-6)
  assert out["label_mask"].numpy().tolist() == [[True, False, False]] * 2
  assert out["labels"].numpy().tolist() == [[b"a", b"", b""]] * 2
  assert "explain" not in signatures.read_signature_defs(path)


# --- End to end: generated corpus -> csv -> tfrecord -> training -> export -> serving.

def chance_micro_f1(labels: np.ndarray) -> float:
  """The best of two guessers that ignore the text: every label always, or each label at
  random at its own rate (expected counts)."""
  p = labels.mean(axis=0)
  n, positives = len(labels), labels.sum()
  always = 2 * positives / (2 * positives + (n * labels.shape[1] - positives))
  tp = (n * p * p).sum()
  rate = 2 * tp / (2 * tp + 2 * (n * p * (1 - p)).sum())
  return float(max(always, rate))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The corpus converted to tfrecord and a tiny LSTM trained on the shards."""
  from tfagent import train
  root = tmp_path_factory.mktemp("multilabel")
  source = data_cfg(make_multilabel.write_csv(str(root / "topics.csv"), 1000))
  convert.convert(source, str(root / "shards"), num_shards=2)
  cfg = config.Config(
      data=config.DataConfig(dataset=f"tfrecord:{root / 'shards' / '*.tfrecord'}",
                             task="multilabel", batch_size=32),
      model=config.ModelConfig(vocab_size=200, sequence_length=16, embedding_dim=16,
                               hidden_dim=16, dropout=0.1),
      train=config.TrainConfig(model_dir=str(root / "run"), epochs=8, learning_rate=1e-2,
                               verbose=0),
      export=config.ExportConfig(export_dir=str(root / "saved_models"), model_name="topics"))
  return {"source": source, "cfg": cfg, "result": train.train_and_evaluate(cfg)}


@pytest.mark.slow
def test_label_lists_survive_csv_to_tfrecord_to_training(run):
  csv_splits, csv_info = data.load_splits(run["source"])
  rec_splits, rec_info = data.load_splits(run["cfg"].data)
  assert rec_info.class_names == csv_info.class_names == tuple(sorted(make_multilabel.TOPICS))
  for split in data.SPLITS:
    assert by_text(rec_splits[split]) == by_text(csv_splits[split]), split
  written = dict(make_multilabel.records(1000))  # text -> label names, as generated.
  for split in data.SPLITS:
    for text, hot in by_text(rec_splits[split]).items():
      assert [n for n, v in zip(csv_info.class_names, hot) if v] == written[text]
  # What training scored is what was converted: the model card's content hashes.
  with open(os.path.join(run["result"]["saved_model"], "model_card.json")) as f:
    card = json.load(f)
  assert card["data"]["content_sha256"]["test"] == model_card.split_hash(rec_splits["test"])


@pytest.mark.slow
def test_multilabel_trains_far_above_chance_and_reports_its_metrics(run):
  result = run["result"]
  labels = np.array(list(by_text(data.load_splits(run["cfg"].data)[0]["test"]).values()))
  chance = chance_micro_f1(labels)
  assert chance < 0.5, chance  # Computed: 0.48 here (predicting every label always).
  assert result["micro_f1"] >= 0.95, (result["micro_f1"], chance)
  with open(os.path.join(run["cfg"].train.model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  assert {"micro_f1", "macro_f1", "per_label", "subset_accuracy", "lrap"} <= set(metrics)
  assert set(metrics["per_label"]) == set(make_multilabel.TOPICS)
  assert sum(m["support"] for m in metrics["per_label"].values()) == int(labels.sum())
  assert metrics["lrap"] > 0.95 and metrics["subset_accuracy"] > 0.8


@pytest.mark.slow
def test_export_decides_with_the_tuned_thresholds(run):
  """The thresholds of metrics.json (tuned on validation) are the export's: its mask is
  probabilities >= them, its labels the names under the mask."""
  result = run["result"]
  thresholds = np.array([result["thresholds"][n] for n in sorted(make_multilabel.TOPICS)])
  with open(os.path.join(result["saved_model"], "model_card.json")) as f:
    assert json.load(f)["thresholds"] == result["thresholds"]
  assert np.abs(thresholds - 0.5).max() > 1e-3
  texts = [t for t, _ in make_multilabel.records(200, seed=7)]
  out = signatures.load_signature(result["saved_model"])(text=tf.constant(texts))
  probs, mask = out["probabilities"].numpy(), out["label_mask"].numpy()
  np.testing.assert_array_equal(mask, probs >= thresholds)
  names = np.array(sorted(make_multilabel.TOPICS))
  for row, m in zip(out["labels"].numpy(), mask):
    assert [x.decode() for x in row] == list(names[m]) + [""] * (len(names) - m.sum())


@pytest.mark.slow
def test_a_tiny_bert_learns_the_topics_and_its_export_decides_with_its_thresholds(tmp_path):
  """--model=bert with --task=multilabel: a random 1-layer BertBackbone over the corpus' words
  (a keras-hub preset folder) learns the label sets; the export's mask is its thresholds'."""
  import keras_hub
  from tfagent import train
  words = sorted({w for ws in make_multilabel.TOPICS.values() for w in ws}
                 | set(make_multilabel.FILLER))
  vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
  keras.utils.set_random_seed(0)
  keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2,
                                hidden_dim=32, intermediate_dim=64,
                                max_sequence_length=32).save_to_preset(str(tmp_path / "bert"))
  keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(
      str(tmp_path / "bert"))
  cfg = config.Config(
      data=data_cfg(make_multilabel.write_csv(str(tmp_path / "topics.csv"), 1000), batch_size=32),
      model=config.ModelConfig(name="bert", preset=str(tmp_path / "bert"), sequence_length=16,
                               dropout=0.0),
      train=config.TrainConfig(model_dir=str(tmp_path / "run"), epochs=6, learning_rate=1e-2,
                               backbone_learning_rate=1e-2, verbose=0),
      export=config.ExportConfig(export_dir=str(tmp_path / "sm"), model_name="t"))
  result = train.train_and_evaluate(cfg)
  labels = np.array(list(by_text(data.load_splits(cfg.data)[0]["test"]).values()))
  assert result["micro_f1"] >= 0.95 > chance_micro_f1(labels), result["micro_f1"]
  thresholds = np.array([result["thresholds"][n] for n in sorted(make_multilabel.TOPICS)])
  out = signatures.load_signature(result["saved_model"])(text=tf.constant(TEXTS))
  np.testing.assert_array_equal(out["label_mask"].numpy(),
                                out["probabilities"].numpy() >= thresholds)
  assert out["label_mask"].numpy()[:2].tolist() == [  # Two topics' words each.
      [name in ("health", "sports") for name in sorted(make_multilabel.TOPICS)],
      [name in ("money", "politics") for name in sorted(make_multilabel.TOPICS)]]


@pytest.mark.slow
def test_an_int8_export_keeps_the_thresholds_behind_a_micro_f1_gate(run, tmp_path):
  """--quantize=int8 with --task=multilabel: both exports store the tuned thresholds and
  the gate compares the micro-F1 of their label masks on validation."""
  from tfagent import evaluate, multilabel_report, quantize
  cfg, result = run["cfg"], run["result"]
  model = evaluate.load_checkpoint(os.path.join(cfg.train.model_dir, "checkpoints",
                                                "best.keras"))
  splits, info = data.load_splits(cfg.data)
  validation = splits["validation"]
  names = sorted(make_multilabel.TOPICS)
  thresholds = np.array([result["thresholds"][n] for n in names])
  picks = {}
  for max_drop in (100.0, -100.0):  # The int8 export kept; the float one (int8 must gain 100).
    picks[max_drop] = quantize.write_quantized(
        model, names, config.ExportConfig(export_dir=str(tmp_path / str(max_drop)),
                                          model_name="q", quantize="int8",
                                          quantize_max_drop=max_drop),
        TEXTS[:2], validation, thresholds)
  staged, report = picks[100.0]
  assert report["kept"] == "int8" and report["metric"] == "micro_f1"
  scored = multilabel_report.score_export(staged.path, validation)
  f1 = report["validation_micro_f1"]
  assert f1["int8"] == pytest.approx(f1_score(scored.labels, scored.mask, average="micro"))
  assert min(f1.values()) >= 0.9, f1
  stored = tf.train.load_checkpoint(os.path.join(staged.path, "variables", "variables"))
  assert tf.int8 in stored.get_variable_to_dtype_map().values()  # The embedding, quantized.
  out = signatures.load_signature(staged.path)(text=tf.constant(TEXTS))
  np.testing.assert_array_equal(out["label_mask"].numpy(),
                                out["probabilities"].numpy() >= thresholds)
  kept_float = picks[-100.0][1]
  assert kept_float["kept"] == "float32" and "validation micro-F1" in kept_float["reason"]
  card = "\n".join(model_card.quantization_lines(report))
  assert "gate 100 micro-F1 points" in card and "| validation micro-F1 |" in card
  # With the int8 export kept, `validation` (TensorBoard's val_loss, tune's objective) is the
  # export's binary cross-entropy, and Keras' float32 figures are kept beside it.
  elsewhere = dataclasses.replace(
      cfg, train=dataclasses.replace(cfg.train, model_dir=str(tmp_path / "run")),
      data=dataclasses.replace(cfg.data, read_test=False))
  keras_figures = {"loss": 9.0, "accuracy": 0.1}
  scored_run = tasks.evaluate_multilabel(
      elsewhere, {**result, "validation": keras_figures, "quantization": report,
                  "thresholds": thresholds}, splits, info, staged.path)
  p = np.clip(scored.probabilities, 1e-7, 1 - 1e-7)
  bce = -(scored.labels * np.log(p) + (1 - scored.labels) * np.log(1 - p)).mean()
  assert scored_run["validation"]["loss"] == pytest.approx(bce, rel=1e-5)
  assert scored_run["validation"]["accuracy"] == pytest.approx(
      ((scored.probabilities >= 0.5) == (scored.labels > 0.5)).mean())
  assert scored_run["validation_float32"] == keras_figures


RELOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text
assert "tfagent" not in sys.modules and "keras_hub" not in sys.modules
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items() if k != "labels"}))
"""


@pytest.mark.slow
def test_export_loads_in_a_clean_process_and_saved_model_cli_shows_it(run):
  path = run["result"]["saved_model"]
  got = pooled_python.clean_json(RELOAD, path, json.dumps(TEXTS), modules=("tensorflow_text",))
  expected = signatures.load_signature(path)(text=tf.constant(TEXTS))
  np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(), atol=1e-5)
  assert got["label_mask"] == expected["label_mask"].numpy().tolist()
  shown = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"],
                         capture_output=True, text=True, check=True).stdout
  sig = shown.split("signature_def['serving_default']")[1]
  for name, dtype in (("probabilities", "DT_FLOAT"), ("label_mask", "DT_BOOL"),
                      ("labels", "DT_STRING")):
    assert f"outputs['{name}'] tensor_info:\n        dtype: {dtype}\n        shape: (-1, 5)" in sig
  sig = shown.split("signature_def['classify']")[1].split("signature_def[")[0]
  assert "outputs['scores'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 5)" in sig
  assert "Method name is: tensorflow/serving/classify" in sig


@pytest.mark.slow
def test_tfagent_serve_answers_rest_and_grpc(run, tmp_path):
  path = run["result"]["saved_model"]
  expected = {k: v.numpy() for k, v in signatures.load_signature(path)(
      text=tf.constant(TEXTS)).items()}
  args = ["--model_name=topics", f"--model_base_path={os.path.dirname(path)}"]
  with run_server(args, "topics", str(tmp_path / "server.log")) as (url, address, _):
    rows = requests.post(f"{url}/v1/models/topics:predict", json={"instances": TEXTS},
                         timeout=30).json()["predictions"]
    for row, i in zip(rows, range(len(TEXTS))):
      np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], atol=1e-5)
      assert row["label_mask"] == expected["label_mask"][i].tolist()
      assert row["labels"] == [x.decode() for x in expected["labels"][i]]
    examples = [{"text": t} for t in TEXTS]
    answer = requests.post(f"{url}/v1/models/topics:classify", timeout=30, json={
        "signature_name": "classify", "examples": examples}).json()["results"]
    names = sorted(make_multilabel.TOPICS)
    assert [[c for c, _ in r] for r in answer] == [names] * len(TEXTS)
    np.testing.assert_allclose([[s for _, s in r] for r in answer], expected["probabilities"],
                               atol=1e-5)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "topics"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS))
    response = stub.Predict(request, timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["label_mask"]),
                                  expected["label_mask"])
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["labels"]), expected["labels"])
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "topics", "classify"
    for text in TEXTS:
      classify.input.example_list.examples.add().features.feature["text"].bytes_list.value \
          .append(text.encode())
    result = stub.Classify(classify, timeout=30)
    np.testing.assert_allclose([[c.score for c in r.classes]
                                for r in result.result.classifications],
                               expected["probabilities"], atol=1e-5)


@pytest.mark.slow
def test_mirrored_on_two_cpus_trains_as_one_device(tmp_path):
  """The same code path under MirroredStrategy: the multi-hot labels split across replicas
  give the one-device losses (global batch 32 = 2 x 16, no dropout) and thresholds. A
  Transformer, as test_distribute.py's Mirrored test uses: a tiny LSTM stops on a replica's
  empty last batch ("stack elements of an empty list"), for multiclass too (checked)."""
  path = make_multilabel.write_csv(str(tmp_path / "topics.csv"), 400)
  out = conftest.train_default_and_mirrored(tmp_path, dataset=f"csv:{path}",
                                            label_field="labels", task="multilabel",
                                            bucket_width=0)
  assert out["mirrored"]["replicas"] == 2
  assert out["mirrored"]["loss"] == pytest.approx(out["default"]["loss"], rel=1e-4, abs=1e-5)
  assert out["default"]["loss"][-1] < out["default"]["loss"][0]
  for name, t in out["default"]["thresholds"].items():
    assert out["mirrored"]["thresholds"][name] == pytest.approx(t, abs=1e-4), name


def test_misclassified_page_shows_missed_and_added_labels_most_confident_first(tmp_path):
  """Row 0 is right; row 1 misses b by 0.1 under its threshold; row 2 adds c at 0.9 (0.4 over
  its threshold): row 2 first. Read back from the event file."""
  from test_tensorboard import text_summary
  from tfagent import multilabel_report
  scored = multilabel_report.Scored(
      rows=["all right", ("first | text", "second"), "third"],
      labels=np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32),
      probabilities=np.array([[0.9, 0.1, 0.2], [0.8, 0.6, 0.1], [0.2, 0.8, 0.9]]),
      mask=np.array([[True, False, False], [True, False, False], [False, True, True]]))
  multilabel_report.write_misclassified(str(tmp_path), scored, ["a", "b", "c"], [0.5, 0.7, 0.5],
                                        limit=5, step=3)
  table = read_table(text_summary, tmp_path)
  assert table.splitlines() == [
      "| true | predicted | missed (score) | added (score) | text |",
      "| --- | --- | --- | --- | --- |",
      "| b | b, c | - | c (0.90) | third |",
      "| a, b | a | b (0.60) | - | first \\| text \u21c4 second |"]
  multilabel_report.write_misclassified(str(tmp_path / "one"), scored, ["a", "b", "c"],
                                        [0.5, 0.7, 0.5], limit=1, step=3)
  assert len(read_table(text_summary, tmp_path / "one").splitlines()) == 3


def read_table(text_summary, folder) -> str:
  return text_summary(str(folder), "misclassified_validation_examples")


@pytest.mark.slow
def test_test_predictions_hold_true_and_predicted_label_lists_and_scores(run):
  """eval/test_predictions.csv reads back as multilabel data (its true lists are the test
  split's); its predicted lists and scores are the export's on those texts."""
  result, names = run["result"], sorted(make_multilabel.TOPICS)
  path = os.path.join(run["cfg"].train.model_dir, "eval", "test_predictions.csv")
  back, _ = data.load_all(data_cfg(path, class_names=",".join(names)))
  test = by_text(data.load_splits(run["cfg"].data)[0]["test"])
  assert by_text(back) == test and len(test) == result["examples"]
  with open(path, encoding="utf-8", newline="") as f:
    header, *rows = list(csv.reader(f))
  assert header == ["text", "labels", "predicted", *(f"probability_{n}" for n in names)]
  out = signatures.load_signature(result["saved_model"])(text=tf.constant([r[0] for r in rows]))
  np.testing.assert_allclose([[float(v) for v in r[3:]] for r in rows],
                             out["probabilities"].numpy(), atol=1e-5)
  assert [r[2] for r in rows] == ["|".join(x.decode() for x in row if x)
                                  for row in out["labels"].numpy()]
  wrong = np.mean([r[1] != r[2] for r in rows])
  assert wrong == pytest.approx(1 - result["subset_accuracy"])


@pytest.mark.slow
def test_the_hparams_columns_hold_the_runs_test_f1s(run):
  """final/test_micro_f1 and final/test_macro_f1 were passed to the writer and dropped."""
  from test_tensorboard import tags_in
  tags = tags_in(os.path.join(run["cfg"].train.model_dir, "logs"))
  assert {"final/val_loss", "final/test_micro_f1", "final/test_macro_f1"} <= set(tags), tags


@pytest.mark.slow
def test_the_misclassified_page_lists_the_exports_wrong_label_sets(run):
  from test_tensorboard import text_summary
  from tfagent import multilabel_report
  cfg, result = run["cfg"], run["result"]
  scored = multilabel_report.score_export(result["saved_model"],
                                          data.load_splits(cfg.data)[0]["validation"])
  thresholds = [result["thresholds"][n] for n in sorted(make_multilabel.TOPICS)]
  table = text_summary(os.path.join(cfg.train.model_dir, "logs", "validation"),
                       "misclassified_validation_examples")
  assert table == multilabel_report.misclassified_markdown(
      scored, sorted(make_multilabel.TOPICS), thresholds, cfg.train.misclassified_examples)
  mistakes = int((scored.mask != scored.labels.astype(bool)).any(-1).sum())
  assert len(table.splitlines()) == 2 + max(1, min(cfg.train.misclassified_examples, mistakes))


@pytest.mark.slow
def test_the_model_card_describes_sigmoid_scores_and_the_exports_thresholds(run):
  from tfagent import multilabel_export
  path = run["result"]["saved_model"]
  served = multilabel_export.read_thresholds(tf.saved_model.load(path))
  names = sorted(make_multilabel.TOPICS)
  with open(os.path.join(path, "model_card.json")) as f:
    card = json.load(f)
  assert card["thresholds"] == dict(zip(names, served)) == run["result"]["thresholds"]
  page = open(os.path.join(path, "model_card.md")).read()
  assert "`probabilities` <float32>[-1, C], each label's independent sigmoid score" in page
  assert "`label_mask` <bool>[-1, C]" in page and "`labels` <string>[-1, C]" in page
  assert "class_ids" not in page
  assert "| class | precision | recall | F1 | test texts | threshold |" in page
  for name, t in zip(names, served):
    assert f"| {name} | " in page and f" | {t:.4f} |" in page
  assert f"micro F1 {run['result']['micro_f1']:.4f}" in page


@pytest.mark.slow
def test_the_multilabel_card_warns_of_a_vocabulary_that_misses_the_text(run, tmp_path,
                                                                        monkeypatch):
  """Training measured 55 % of the validation tokens out of the vocabulary, yet the card's
  warnings read "None measured.": its warnings were only data_warnings. The export is scored
  again into tmp_path, the card caught instead of written over the fixture's."""
  cfg = run["cfg"]
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                           model_dir=str(tmp_path / "run")))
  written = []
  monkeypatch.setattr(model_card, "write", lambda path, card: written.append(card))
  splits, info = data.load_splits(cfg.data)
  result = {**run["result"], "unknown_token_share": 0.55,  # As training passes them: a list.
            "thresholds": [run["result"]["thresholds"][n] for n in info.class_names]}
  tasks.evaluate_multilabel(cfg, result, splits, info, result["saved_model"])
  assert written[0]["warnings"][0] == ("55% of the validation tokens are out of the vocabulary: "
                                       "raise --vocab_size.")  # --wide_ngrams is refused here.
  assert "- 55% of the validation tokens" in model_card.to_markdown(written[0])


@pytest.mark.slow
def test_tfagent_client_prints_a_multilabel_exports_labels(run, tmp_path):
  """`tfagent client` against `tfagent serve` on loopback, REST and gRPC: each row's labels
  are the export's predicted names, without the "" padding; with --batch_size=2 the 3 texts
  go in 2 requests a protocol (the server's request counts), answered in order."""
  path = run["result"]["saved_model"]
  expected = signatures.load_signature(path)(text=tf.constant(TEXTS))
  labels = [[x.decode() for x in row if x] for row in expected["labels"].numpy()]
  assert any(labels) and any(len(row) < 5 for row in labels)  # Padding to drop.
  args = ["--model_name=topics", f"--model_base_path={os.path.dirname(path)}"]
  with run_server(args, "topics", str(tmp_path / "server.log")) as (url, address, _):
    outs = [subprocess.run([sys.executable, "-m", "tfagent.cli", "client", f"--server={server}",
                            f"--protocol={protocol}", "--model_name=topics", "--batch_size=2",
                            *TEXTS],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            for server, protocol in ((url.split("//")[1], "rest"), (address, "grpc"))]
    page = requests.get(url + "/monitoring/prometheus/metrics", timeout=10).text
  for protocol in ("rest", "grpc"):
    assert serving_util.metric_total(page, model_name="topics", protocol=protocol,
                                     method="predict", status="OK") == 2
  for out in outs:
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert [r["predict"]["labels"] for r in rows] == labels
    assert [r["predict"]["label_mask"] for r in rows] == expected["label_mask"].numpy().tolist()


@pytest.mark.slow
def test_a_cross_validation_fold_of_a_multilabel_run_records_its_exports_figures(run):
  """cross_validate's fold record of a multilabel result: micro F1, and subset accuracy on
  validation and test (not Keras' per-label binary accuracy)."""
  from tfagent import cross_validate
  result = run["result"]
  record = cross_validate.fold_record(0, result)
  assert record["micro_f1"] == result["micro_f1"]
  assert record["accuracy"] == result["subset_accuracy"]
  assert record["validation_accuracy"] == result["validation_metrics"]["subset_accuracy"]
  assert record["validation_accuracy"] != result["validation"]["accuracy"]
  summary = cross_validate.summarize([record, {**record, "micro_f1": 0.5}])
  assert summary["micro_f1"]["mean"] == pytest.approx((result["micro_f1"] + 0.5) / 2)


@pytest.mark.slow
def test_a_multilabel_export_explains_nothing_and_teaches_nothing(run, monkeypatch, caplog):
  """`tfagent predict --explain` names the task as the reason; --teacher refuses it."""
  from tfagent import distill
  path = run["result"]["saved_model"]
  assert run_command(monkeypatch, "predict", f"--saved_model={path}", "--explain", TEXTS[0]) == 1
  errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
  assert len(errors) == 1 and errors[0].startswith(f"{path} has no 'explain' signature (it has:")
  assert "): it is a multilabel export (--task=multilabel): integrated gradients here " \
      "attribute one softmax class" in errors[0], errors
  with pytest.raises(ConfigError, match=f"--teacher={path}: it is a multilabel export, whose "
                     "probabilities are a sigmoid a label"):
    distill.Teacher(path)
  cfg, _ = config.from_args(None, dataset="csv:x.csv", task="multilabel", teacher=path)
  with pytest.raises(ConfigError, match=f"--teacher={path} does not work with "
                     "--task=multilabel yet"):
    distill.check_config(cfg)


def test_tune_refuses_multilabel_before_its_first_trial():
  from tfagent import tune
  cfg, _ = config.from_args(None, dataset="csv:x.csv", task="multilabel")
  with pytest.raises(ConfigError, match="^tfagent tune does not search --task=multilabel yet"):
    tune.check_task(cfg, {"dropout": {"values": [0.0, 0.3]}})


@pytest.mark.slow
def test_noread_test_scores_validation_only(tmp_path):
  """--noread_test (tune's trials): eval/metrics.json holds the validation figures."""
  from tfagent import train
  cfg = config.Config(
      data=config.DataConfig(dataset=f"csv:{make_multilabel.write_csv(str(tmp_path / 't.csv'), 200)}",
                             label_field="labels", task="multilabel", read_test=False),
      model=config.ModelConfig(vocab_size=100, sequence_length=16, embedding_dim=8,
                               hidden_dim=8),
      train=config.TrainConfig(model_dir=str(tmp_path / "run"), epochs=1, verbose=0),
      export=config.ExportConfig(export_dir=str(tmp_path / "sm"), model_name="t"))
  result = train.train_and_evaluate(cfg)
  with open(tmp_path / "run" / "eval" / "metrics.json") as f:
    metrics = json.load(f)
  assert "micro_f1" not in metrics and metrics["validation_metrics"]["examples"] > 0
  assert metrics["validation_metrics"]["micro_f1"] == result["validation_metrics"]["micro_f1"]


@pytest.mark.parametrize("flag, value, off", [
    ("ensemble_size", 2, 1), ("wide_ngrams", 2, 0), ("class_weight", "balanced", "none"),
    ("monitor", "val_macro_f1", "val_loss"),
])
def test_what_multilabel_does_not_support_is_refused_before_training(flag, value, off):
  cfg, _ = config.from_args(None, dataset="csv:x.csv", task="multilabel", **{flag: value})
  with pytest.raises(ConfigError, match=f"^--{flag}={value} does not apply to "
                     f"--task=multilabel yet .*; use --{flag}={off}\\.$"):
    tasks.check_config(cfg)
  tasks.check_config(config.from_args(None, dataset="csv:x.csv", task="multilabel")[0])


@pytest.mark.slow
def test_predict_csv_writes_the_labels_its_thresholds_select(run):
  """`tfagent predict` on a multilabel export: rows of the names the export selects, no
  argmax class; csv: a `labels` column (joined by |, as --label_delimiter reads them back)."""
  import io  # pylint: disable=import-outside-toplevel
  from tfagent import predict  # pylint: disable=import-outside-toplevel
  predictor = predict.Predictor(run["result"]["saved_model"])
  texts = [t for t, _ in make_multilabel.records(40, seed=9)]
  answers = predictor.predict(texts)
  expected = ["|".join(row["labels"]) for row in answers]
  assert any("|" in labels for labels in expected)  # Some texts get two or more labels.
  # No argmax `class` beside them: it named labels the thresholds had refused.
  assert not [row for row in answers if {"class", "class_id"} & set(row)]
  out = io.StringIO()
  predict.predict_stream(predictor, texts, out, "csv", 0, 16)
  rows = list(csv.reader(io.StringIO(out.getvalue())))
  assert rows[0][:2] == ["text", "labels"]
  assert [r[1] for r in rows[1:]] == expected


@pytest.mark.slow
def test_evaluate_refuses_a_multilabel_export_in_one_error(run, tmp_path):
  """tfagent evaluate --saved_model --dataset scores multiclass exports; a multilabel one
  (argmax accuracy of sigmoid scores would ignore its thresholds) is refused, naming it."""
  from tfagent import evaluate  # pylint: disable=import-outside-toplevel
  path = run["result"]["saved_model"]
  with pytest.raises(ConfigError, match=f"--saved_model={path} is a multilabel export"):
    evaluate.run_labelled_source(config.DataConfig(dataset=f"csv:{tmp_path}/none.csv"), path,
                                 str(tmp_path / "eval"))
  assert not os.path.exists(tmp_path / "eval")


def test_a_label_no_example_holds_neither_lowers_macro_f1_nor_voids_the_auc():
  """Labels a and b decided perfectly, c held by no example and given to none: macro F1 1.0
  (was 0.667) and ROC-AUC 1.0 (was NaN)."""
  y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
  probs = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.7, 0.6, 0.2]])
  m = tasks.multilabel_metrics(y, probs, probs >= 0.5, ["a", "b", "c"], [0.5] * 3)
  assert m["macro_f1"] == 1.0 and m["roc_auc"] == 1.0 and m["micro_f1"] == 1.0
  assert m["per_label"]["c"]["support"] == 0
  # b held by two examples and given to none: its precision counts as 0 (it was left out,
  # macro precision 1.0), as scikit-learn's; c, held and given by none, stays out.
  from sklearn import metrics as skm  # pylint: disable=import-outside-toplevel
  never_b = probs >= [0.5, 0.9, 0.5]
  m = tasks.multilabel_metrics(y, probs, never_b, ["a", "b", "c"], [0.5, 0.9, 0.5])
  assert m["macro_precision"] == pytest.approx(skm.precision_score(
      y[:, :2], never_b[:, :2], average="macro", zero_division=0)) == pytest.approx(0.5)
