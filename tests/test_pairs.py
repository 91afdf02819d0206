"""--text_pair_field, the models and the rest of the run: the pair models, what pairs refuse,
and end to end, their exports served over REST and gRPC (data: tests/test_pairs_data.py).

The end-to-end corpus is docs/examples/make_pairs.py's: is a word of the first text in the
second? Either text alone is a uniform random set of words, so a model that reads one text
is at chance, and the tests show that beside the pair models above 90 %.
"""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import grpc
import keras
import keras_hub
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

import conftest
import pooled_python
from conftest import run_command
from serving_util import run_server
import tfagent
from tfagent import config, data, models, signatures, tasks, tune
from tfagent.errors import ConfigError
from tfagent.models import pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "examples"))
import make_pairs  # noqa: E402  pylint: disable=wrong-import-position


def write_csv(path, rows, header=("premise", "hypothesis", "label")) -> str:
  return conftest.write_csv(path, rows, header)


# --- models -------------------------------------------------------------------------------

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *make_pairs.WORDS]
# The end-to-end corpus: 10 words, 2 a text. Small, so the tiny models learn "is a word of
# the first text in the second?" in seconds; either text alone still says nothing.
CORPUS = dict(words=make_pairs.WORDS[:10], k=2)


def write_pair_preset(folder, hidden: int = 32, layers: int = 1) -> str:
  """A random tiny BertBackbone over BERT_VOCAB, saved as a keras-hub preset folder."""
  keras.utils.set_random_seed(0)
  keras_hub.models.BertBackbone(
      vocabulary_size=len(BERT_VOCAB), num_layers=layers, num_heads=2, hidden_dim=hidden,
      intermediate_dim=2 * hidden, max_sequence_length=32).save_to_preset(str(folder))
  keras_hub.models.BertTokenizer(vocabulary=BERT_VOCAB, lowercase=True).save_to_preset(
      str(folder))
  return str(folder)


@pytest.fixture(scope="module")
def pair_preset(tmp_path_factory) -> str:
  return write_pair_preset(tmp_path_factory.mktemp("pair_bert"))


def vocab_corpus(texts):
  return tf.data.Dataset.from_tensor_slices(texts).batch(8)


def pair_batch(firsts, seconds) -> dict:
  return {"text": tf.constant(firsts), "text_pair": tf.constant(seconds)}


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_one_encoder_reads_both_texts_and_the_head_compares_them(name):
  """The classifier's weights are one encoder's and the head's: a second encoder would
  double them. [u, v, |u-v|, u*v] is 4x the encoder's width. Both texts move the logits."""
  cfg = config.ModelConfig(name=name, vocab_size=50, sequence_length=8, embedding_dim=8,
                           hidden_dim=4, num_layers=1, num_heads=2, intermediate_dim=8,
                           dropout=0.0)
  model = models.build_model(cfg, ["a", "b"], vocab_corpus(["apple river", "stone cloud"]),
                             pairs=True)
  encoder = model.classifier.get_layer(pair.ENCODER)
  head = model.classifier.get_layer("logits")
  assert head.kernel.shape[0] == 4 * encoder.output.shape[-1]
  assert model.classifier.count_params() == encoder.count_params() + head.count_params()
  base = model(pair_batch(["apple river"], ["stone cloud"])).numpy()
  for changed in (pair_batch(["cloud river"], ["stone cloud"]),
                  pair_batch(["apple river"], ["stone river"])):
    assert np.abs(model(changed).numpy() - base).max() > 1e-4


def test_bert_packs_a_pair_with_segment_ids(pair_preset):
  cfg = config.ModelConfig(name="bert", preset=pair_preset, sequence_length=8, dropout=0.0)
  model = models.build_model(cfg, ["a", "b"], None, pairs=True)
  ids, segments = model.tokenizer(pair_batch(["apple river", "stone"],
                                             ["cloud apple tiger", "stone"]))
  cls, sep = BERT_VOCAB.index("[CLS]"), BERT_VOCAB.index("[SEP]")
  apple, river, cloud, tiger, stone = (BERT_VOCAB.index(w) for w in
                                       ("apple", "river", "cloud", "tiger", "stone"))
  # Longest pair: 1 + 2 + 1 + 3 + 1 = 8 = --sequence_length; the batch is cut to it.
  assert ids.numpy().tolist() == [[cls, apple, river, sep, cloud, apple, tiger, sep],
                                  [cls, stone, sep, stone, sep, 0, 0, 0]]
  assert segments.numpy().tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0]]
  # Too long for the budget: the longer text is trimmed first (round robin).
  ids, _ = model.tokenizer(pair_batch(["apple river stone cloud tiger"], ["river"]))
  assert ids.numpy().tolist() == [[cls, apple, river, stone, cloud, sep, river, sep]]
  swapped = model(pair_batch(["cloud apple tiger"], ["apple river"])).numpy()
  assert np.abs(model(pair_batch(["apple river"], ["cloud apple tiger"])).numpy()
                - swapped).max() > 1e-5  # The segments tell the texts apart.


@pytest.mark.parametrize("flag, value, why", [
    ("wide_ngrams", 2, "the wide path's features are one text's n-grams"),
    ("ensemble_size", 2, "ensemble members read one text each"),
    ("explain_steps", 64, "the explain signature attributes the tokens of one text"),
    ("teacher", "saved_models/x", "distillation's teacher labels one text a record"),
    ("truncation", "tail", "BERT packs a pair with keras-hub's MultiSegmentPacker"),
    ("unlabeled", "csv:more.csv", "its word vectors are pretrained on texts read one a record"),
])
def test_what_pairs_do_not_support_is_refused_before_training(tmp_path, flag, value, why):
  overrides = {"dataset": "csv:x.csv", "text_pair_field": "hypothesis", "explain_steps": 0}
  cfg, _ = config.from_args(None, **{**overrides, flag: value})
  with pytest.raises(ConfigError, match=f"--{flag}={value} does not apply to "
                     f"--text_pair_field=hypothesis \\({why}"):
    tasks.check_config(cfg)


# --- end to end: training, the export, serving --------------------------------------------

def pair_config(root, name: str, rows: int, epochs: int, batch_size: int = 32,
                **model) -> config.Config:
  """A tiny run of `name` on CORPUS: `rows` pairs, `epochs` epochs, no early stop."""
  path = make_pairs.write_csv(str(root / "pairs.csv"), rows, **CORPUS)
  base = conftest.tiny_config("unused", root / "run", root / "saved_models", name)
  return dataclasses.replace(
      base, data=config.DataConfig(dataset=f"csv:{path}", text_field="premise",
                                   text_pair_field="hypothesis", batch_size=batch_size),
      model=dataclasses.replace(base.model, **model),
      train=dataclasses.replace(base.train, epochs=epochs, early_stopping_patience=epochs),
      export=dataclasses.replace(base.export, model_name=f"pairs_{name}"))


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
  """The pair LSTM trained once for the module: `(cfg, result)`."""
  from tfagent import train
  cfg = pair_config(tmp_path_factory.mktemp("lstm"), "lstm", rows=1500, epochs=8,
                    embedding_dim=16, hidden_dim=16, dropout=0.0)
  return cfg, train.train_and_evaluate(cfg)


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, pair_preset):
  """The pair BERT (a random 1-layer BertBackbone, hidden 32) trained once: `(cfg, result)`."""
  from tfagent import train
  cfg = pair_config(tmp_path_factory.mktemp("bert"), "bert", rows=2000, epochs=8,
                    batch_size=64, preset=pair_preset, sequence_length=16, dropout=0.0)
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, learning_rate=1e-2, backbone_learning_rate=1e-2))
  return cfg, train.train_and_evaluate(cfg)


def chance_bound(test_labels) -> tuple:
  """`(chance, bound)`: the majority class's share of test, and 3 standard errors above it
  (a model that guesses stays below the bound 99.9 % of the time)."""
  labels = np.asarray(test_labels)
  chance = max(np.mean(labels == c) for c in np.unique(labels))
  return chance, chance + 3 * np.sqrt(chance * (1 - chance) / len(labels))


@pytest.mark.slow
def test_the_lstm_reads_both_texts_and_one_text_alone_stays_at_chance(lstm_run, tmp_path):
  """The pair LSTM is above 90 % on test; the same LSTM given the second text alone (where
  the shared word was planted) is at chance on the same rows. Each record is its own group
  (--group_field), so the repeated short texts do not cluster in one split."""
  from tfagent import train
  cfg, result = lstm_run
  assert result["accuracy"] > 0.9, result["accuracy"]
  path = conftest.write_csv(tmp_path / "one.csv", [
      (i, hypothesis, label) for i, (_, hypothesis, label) in
      enumerate(make_pairs.records(1500, **CORPUS))], header=("id", "hypothesis", "label"))
  one = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, dataset=f"csv:{path}", text_field="hypothesis",
                                    text_pair_field="", group_field="id"),
      train=dataclasses.replace(cfg.train, model_dir=str(tmp_path / "run")),
      export=dataclasses.replace(cfg.export, export_dir=str(tmp_path / "saved_models")))
  alone = train.train_and_evaluate(one)
  labels = [y for _, y in data.load_splits(one.data)[0]["test"].as_numpy_iterator()]
  chance, bound = chance_bound(labels)
  assert alone["accuracy"] < bound, (alone["accuracy"], chance, bound)
  assert result["accuracy"] > bound + 0.2


@pytest.mark.slow
def test_a_tiny_bert_reads_the_pair_as_one_input_above_90_percent(bert_run):
  cfg, result = bert_run
  labels = [y for _, y in data.load_splits(cfg.data)[0]["test"].as_numpy_iterator()]
  chance, bound = chance_bound(labels)
  assert result["accuracy"] > 0.9, (result["accuracy"], chance)
  assert result["accuracy"] > bound + 0.2


RELOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text
assert "tfagent" not in sys.modules and "keras_hub" not in sys.modules
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
pairs = json.loads(sys.argv[2])
out = serve(text=tf.constant([a for a, _ in pairs]), text_pair=tf.constant([b for _, b in pairs]))
print(json.dumps(out["probabilities"].numpy().tolist()))
"""
PAIRS = [("apple river", "stone apple"), ("apple river", "stone cloud"),
         ("tiger piano", "piano candle"), ("garden rocket", "cloud tiger")]


def expected_probabilities(path: str) -> np.ndarray:
  serve = signatures.load_signature(path)
  return serve(text=tf.constant([a for a, _ in PAIRS]),
               text_pair=tf.constant([b for _, b in PAIRS]))["probabilities"].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("run_name", ["lstm_run", "bert_run"])
def test_export_loads_in_a_clean_process_and_saved_model_cli_shows_both_inputs(run_name,
                                                                                request):
  path = request.getfixturevalue(run_name)[1]["saved_model"]
  got = np.array(pooled_python.clean_json(RELOAD, path, json.dumps(PAIRS),
                                          modules=("tensorflow_text",)))
  np.testing.assert_allclose(got, expected_probabilities(path), atol=1e-5)
  shown = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"],
                         capture_output=True, text=True, check=True).stdout
  sig = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
  for field in ("text", "text_pair"):
    assert (f"inputs['{field}'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)\n"
            in sig), sig
  assert "outputs['probabilities'] tensor_info:\n        dtype: DT_FLOAT\n        " \
         "shape: (-1, 2)" in sig
  sig = shown.split("signature_def['classify']")[1].split("signature_def[")[0]
  assert "inputs['inputs'] tensor_info:\n        dtype: DT_STRING" in sig
  assert "Method name is: tensorflow/serving/classify" in sig


@pytest.mark.slow
@pytest.mark.parametrize("run_name", ["lstm_run", "bert_run"])
def test_tfagent_serve_answers_pairs_over_rest_and_grpc(run_name, request, tmp_path):
  """Predict (rows and columns) and classify over REST, Predict and Classify over gRPC, all
  as the export's own serving_default answers."""
  path = request.getfixturevalue(run_name)[1]["saved_model"]
  expected = expected_probabilities(path)
  firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
  args = ["--model_name=pairs", f"--model_base_path={os.path.dirname(path)}"]
  with run_server(args, "pairs", str(tmp_path / "server.log")) as (url, address, _):
    rows = requests.post(f"{url}/v1/models/pairs:predict", timeout=30, json={
        "instances": [{"text": a, "text_pair": b} for a, b in PAIRS]}).json()["predictions"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-5)
    columns = requests.post(f"{url}/v1/models/pairs:predict", timeout=30, json={
        "inputs": {"text": firsts, "text_pair": seconds}}).json()["outputs"]
    np.testing.assert_allclose(columns["probabilities"], expected, atol=1e-5)
    one = requests.post(f"{url}/v1/models/pairs:predict", timeout=30,
                        json={"instances": firsts})
    # TF Serving's own answer to one text where the signature takes two.
    assert one.status_code == 400 and "multiple input tensors" in one.json()["error"], one.text
    answer = requests.post(f"{url}/v1/models/pairs:classify", timeout=30, json={
        "signature_name": "classify",
        "examples": [{"text": a, "text_pair": b} for a, b in PAIRS]}).json()["results"]
    assert [[c for c, _ in r] for r in answer] == [list(make_pairs.LABELS)] * len(PAIRS)
    np.testing.assert_allclose([[s for _, s in r] for r in answer], expected, atol=1e-5)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "pairs"
    predict.inputs["text"].CopyFrom(tf.make_tensor_proto(firsts))
    predict.inputs["text_pair"].CopyFrom(tf.make_tensor_proto(seconds))
    response = stub.Predict(predict, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]), expected,
                               atol=1e-5)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "pairs", "classify"
    for a, b in PAIRS:
      feature = classify.input.example_list.examples.add().features.feature
      feature["text"].bytes_list.value.append(a.encode())
      feature["text_pair"].bytes_list.value.append(b.encode())
    result = stub.Classify(classify, timeout=30)
    np.testing.assert_allclose([[c.score for c in r.classes]
                                for r in result.result.classifications], expected, atol=1e-5)


@pytest.mark.slow
def test_tfagent_predict_reads_pairs_from_a_file(lstm_run, tmp_path, monkeypatch, capsys):
  path = lstm_run[1]["saved_model"]
  pairs_csv = write_csv(tmp_path / "in.csv", [(a, b, "") for a, b in PAIRS])
  code = run_command(monkeypatch, "predict", f"--saved_model={path}", f"--input={pairs_csv}",
                     "--text_field=premise", "--text_pair_field=hypothesis")
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert code == 0 and [(r["text"], r["text_pair"]) for r in rows] == PAIRS
  np.testing.assert_allclose([r["probabilities"] for r in rows], expected_probabilities(path),
                             atol=1e-5)
  out = tmp_path / "out.csv"
  assert run_command(monkeypatch, "predict", f"--saved_model={path}", f"--input={pairs_csv}",
                     "--text_field=premise", "--text_pair_field=hypothesis",
                     f"--output={out}") == 0
  assert open(out, encoding="utf-8").readline().strip() == \
      "text,text_pair,class,probability_disjoint,probability_shared"
  with pytest.raises(ConfigError, match="takes text and text_pair .*--input=FILE with "
                     "--text_field and --text_pair_field"):
    tfagent.load(path).predict(["apple river"])
  assert run_command(monkeypatch, "predict", f"--saved_model={path}", "apple river") == 1


@pytest.mark.slow
def test_a_pair_export_is_refused_as_a_teacher_of_one_text(lstm_run):
  from tfagent import distill
  with pytest.raises(ConfigError, match="it takes text and text_pair \\(a sentence-pair "
                     "export\\): it cannot label one text a record"):
    distill.Teacher(lstm_run[1]["saved_model"])


def test_tune_refuses_a_space_that_would_vary_what_pairs_refuse():
  cfg, _ = config.from_args(None, dataset="csv:x.csv", text_pair_field="hypothesis",
                            explain_steps=0)
  tune.check_task(cfg, {"dropout": {"min": 0.0, "max": 0.5}})  # Nothing refused.
  with pytest.raises(ConfigError, match="--search_space: field 'wide_ngrams' may take 2: "
                     "--wide_ngrams=2 does not apply to --text_pair_field=hypothesis"):
    tune.check_task(cfg, {"dropout": {"min": 0.0, "max": 0.5},
                          "wide_ngrams": {"values": [0, 2]}})


@pytest.mark.slow
def test_tune_searches_pairs_and_scores_the_best_on_test(tmp_path):
  """A trial of the pair LSTM is a normal pair run; the latency budget's probe sends a pair;
  the best trial's export is scored on test. (One trial: more only repeat the same path.)"""
  cfg = pair_config(tmp_path, "lstm", rows=200, epochs=1, embedding_dim=8, hidden_dim=4)
  options = tune.TuneOptions(tune_dir=str(tmp_path / "tune"), tuner="random", max_trials=1,
                             objective="val_loss", max_latency_ms=10_000)
  space = {"dropout": {"values": [0.0, 0.3]}}
  tune.check_task(cfg, space)
  summary = tune.tune(cfg, space, options, {"dataset", "text_pair_field"})
  assert [t["status"] for t in summary["trials"]] == ["completed"], summary["trials"]
  assert all(t["latency_ms"] > 0 for t in summary["trials"])
  assert summary["test"]["examples"] == len(list(data.load_splits(cfg.data)[0]["test"]))
  assert "--text_pair_field=hypothesis" in (tmp_path / "tune" / "best.flags").read_text()


@pytest.mark.slow
def test_an_int8_export_of_a_pair_model_passes_the_gate_and_takes_both_texts(tmp_path):
  from tfagent import train
  cfg = pair_config(tmp_path, "transformer", rows=200, epochs=1, embedding_dim=16,
                    intermediate_dim=16)
  cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, quantize="int8"))
  result = train.train_and_evaluate(cfg)
  report = result["quantization"]
  assert report["mode"] == "int8" and report["kept"] in ("int8", "float32"), report
  assert report["variables_bytes"]["int8"] < report["variables_bytes"]["float32"], report
  out = signatures.load_signature(result["saved_model"])(
      text=tf.constant(["apple river"]), text_pair=tf.constant(["stone apple"]))
  assert out["probabilities"].shape == (1, 2)


@pytest.mark.slow
def test_pairs_train_with_balanced_class_weights_and_macro_f1_early_stopping(tmp_path):
  """--class_weight and --monitor read the labels only: a pair run takes them as it is."""
  from tfagent import train
  cfg = pair_config(tmp_path, "lstm", rows=200, epochs=2, embedding_dim=8, hidden_dim=4)
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, class_weight="balanced", monitor="val_macro_f1"))
  result = train.train_and_evaluate(cfg)
  assert len(result["history"]["val_macro_f1"]) == 2 and result["examples"] > 0


@pytest.mark.slow
def test_pairs_combine_with_multilabel(tmp_path):
  """Label lists of pairs: "shared" and the shared word, or "disjoint". The export takes text
  and text_pair and answers with the label mask of its tuned thresholds."""
  from tfagent import train
  rows = [(a, b, "|".join(["shared", *sorted(set(a.split()) & set(b.split()))])
           if y == "shared" else "disjoint")
          for a, b, y in make_pairs.records(300, **CORPUS)]
  path = write_csv(tmp_path / "ml.csv", rows, header=("premise", "hypothesis", "labels"))
  cfg = pair_config(tmp_path, "lstm", rows=10, epochs=2, embedding_dim=8, hidden_dim=4)
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(
      cfg.data, dataset=f"csv:{path}", label_field="labels", task="multilabel"))
  result = train.train_and_evaluate(cfg)
  assert {"micro_f1", "macro_f1", "per_label", "thresholds"} <= set(result)
  out = signatures.load_signature(result["saved_model"])(
      text=tf.constant(["apple river"]), text_pair=tf.constant(["stone apple"]))
  assert out["label_mask"].shape == (1, 2 + len(CORPUS["words"]))



@pytest.mark.slow
def test_mirrored_on_two_cpus_trains_pairs_as_one_device(tmp_path):
  """The same code path under MirroredStrategy: a global batch of 32 pairs split 2 x 16 gives
  the one-device losses (no dropout) and test accuracy."""
  path = make_pairs.write_csv(str(tmp_path / "pairs.csv"), 300, **CORPUS)
  out = conftest.train_default_and_mirrored(tmp_path, dataset=f"csv:{path}",
                                            text_field="premise", text_pair_field="hypothesis")
  assert out["mirrored"]["replicas"] == 2
  assert out["mirrored"]["loss"] == pytest.approx(out["default"]["loss"], rel=1e-4, abs=1e-5)
  assert out["mirrored"]["accuracy"] == out["default"]["accuracy"]
  assert out["default"]["loss"][-1] < out["default"]["loss"][0]


@pytest.mark.slow
def test_evaluate_scores_a_pair_run_from_its_checkpoint_as_training_did(lstm_run, tmp_path):
  """tfagent evaluate on a pair run: its best checkpoint reloads (the model object keeps
  `pairs`), scores the run's test split as training's export did, and the predictions csv
  holds both texts."""
  from tfagent import evaluate
  cfg, result = lstm_run
  scored = evaluate.run_test_split(cfg.train.model_dir, "", str(tmp_path / "eval"))
  assert scored["accuracy"] == result["accuracy"] and scored["examples"] == result["examples"]
  with open(tmp_path / "eval" / "test_predictions.csv", encoding="utf-8") as f:
    assert f.readline().startswith("text,text_pair,label,predicted,")


def run_client(*args) -> subprocess.CompletedProcess:
  """`tfagent client ARGS` as a user runs it, in its own process."""
  return subprocess.run([sys.executable, "-m", "tfagent.cli", "client", *args],
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.mark.slow
def test_tfagent_client_sends_text_pair_to_a_pair_export(lstm_run, tmp_path):
  """`tfagent client --input=FILE --text_pair_field=F` against `tfagent serve` on loopback:
  predict over REST and classify over gRPC give the export's own probabilities; one text
  a row is the server's one clear error."""
  path = lstm_run[1]["saved_model"]
  expected = expected_probabilities(path)
  pairs_csv = write_csv(tmp_path / "in.csv", [(a, b, "") for a, b in PAIRS])
  fields = [f"--input={pairs_csv}", "--text_field=premise", "--text_pair_field=hypothesis",
            "--model_name=pairs"]
  args = ["--model_name=pairs", f"--model_base_path={os.path.dirname(path)}"]
  with run_server(args, "pairs", str(tmp_path / "server.log")) as (url, address, _):
    rest = run_client(f"--server={url.split('//')[1]}", *fields)
    grpc_out = run_client(f"--server={address}", "--protocol=grpc", "--method=classify",
                          *fields)
    one = run_client(f"--server={url.split('//')[1]}", "--model_name=pairs", PAIRS[0][0])
  assert rest.returncode == 0, rest.stderr[-2000:]
  rows = [json.loads(line) for line in rest.stdout.splitlines()]
  assert [(r["text"], r["text_pair"]) for r in rows] == PAIRS
  np.testing.assert_allclose([r["predict"]["probabilities"] for r in rows], expected, atol=1e-5)
  assert grpc_out.returncode == 0, grpc_out.stderr[-2000:]
  rows = [json.loads(line) for line in grpc_out.stdout.splitlines()]
  assert [(r["text"], r["text_pair"]) for r in rows] == PAIRS
  assert [[c for c, _ in r["classify"]] for r in rows] == [list(make_pairs.LABELS)] * len(PAIRS)
  np.testing.assert_allclose([[s for _, s in r["classify"]] for r in rows], expected, atol=1e-5)
  assert one.returncode == 1 and "400" in one.stderr and "multiple input tensors" in one.stderr


@pytest.mark.slow
def test_explaining_a_pair_export_is_one_error_that_names_the_task(lstm_run, tmp_path,
                                                                   monkeypatch, caplog):
  path = lstm_run[1]["saved_model"]
  pairs_csv = write_csv(tmp_path / "in.csv", [(a, b, "") for a, b in PAIRS])
  assert run_command(monkeypatch, "predict", f"--saved_model={path}", f"--input={pairs_csv}",
                     "--text_field=premise", "--text_pair_field=hypothesis", "--explain") == 1
  errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
  assert len(errors) == 1 and errors[0].startswith(f"{path} has no 'explain' signature (it has:")
  assert "): it is a sentence-pair export (--text_pair_field): integrated gradients here " \
      "attribute the tokens of one text" in errors[0], errors


@pytest.mark.slow
def test_the_model_card_names_both_inputs_of_a_pair_export(lstm_run):
  page = open(os.path.join(lstm_run[1]["saved_model"], "model_card.md")).read()
  assert ("TF Serving's `serving_default` takes `text` and `text_pair`, <string>[-1] each, row "
          "i one sentence pair (trained with `text` from field `premise`, `text_pair` from "
          "field `hypothesis`)") in page
  assert "`probabilities` <float32>[-1, C] (softmax: a row sums to 1)" in page
  assert "threshold" not in page


@pytest.mark.slow
def test_cross_validate_folds_a_pair_corpus_and_tests_every_pair_once(tmp_path):
  """tfagent.cross_validate on pairs: each fold trains and scores a pair export, and the folds'
  test parts together are the whole corpus, each (text, text_pair) once."""
  from tfagent import cross_validate
  cfg = pair_config(tmp_path, "lstm", rows=120, epochs=1, embedding_dim=8, hidden_dim=4)
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, folds=2),
                            train=dataclasses.replace(cfg.train, model_dir=str(tmp_path / "cv")))
  out = cross_validate.cross_validate(cfg, cross_validate.train_fold)
  assert [f["fold"] for f in out["per_fold"]] == [0, 1]
  assert sum(f["test_examples"] for f in out["per_fold"]) == 120
  tested = []
  for k in range(2):
    splits, _ = data.load_splits(dataclasses.replace(cfg.data, fold=k))
    tested += [(x["text"], x["text_pair"]) for x, _ in splits["test"].as_numpy_iterator()]
    export_dir = tmp_path / "cv" / f"fold_{k}" / "saved_models" / "pairs_lstm" / "1"
    assert set(signatures.read_signature_defs(str(export_dir))["serving_default"].inputs) == {
        "text", "text_pair"}
  with open(cfg.data.dataset[len("csv:"):], encoding="utf-8") as f:
    rows = [(r["premise"].encode(), r["hypothesis"].encode()) for r in csv.DictReader(f)]
  assert sorted(tested) == sorted(rows)


@pytest.mark.slow
def test_evaluate_scores_a_pair_export_only_on_pairs(lstm_run, trained_run, tmp_path):
  """tfagent evaluate --saved_model --dataset: a pair export given one text a record, or a
  one-text export given pairs, is one clear error naming the export, before any data is read;
  the pair export on its pairs is scored."""
  from tfagent import evaluate  # pylint: disable=import-outside-toplevel
  cfg, result = lstm_run
  single = dataclasses.replace(cfg.data, text_pair_field="")
  with pytest.raises(ConfigError, match=f"--saved_model={result['saved_model']} reads "
                                        "sentence pairs.*give --text_pair_field"):
    evaluate.run_labelled_source(single, result["saved_model"], str(tmp_path / "a"))
  one_text = trained_run[1]["saved_model"]
  with pytest.raises(ConfigError, match=f"--saved_model={one_text} reads one text; leave "
                                        "--text_pair_field empty"):
    evaluate.run_labelled_source(cfg.data, one_text, str(tmp_path / "b"))
  scored = evaluate.run_labelled_source(cfg.data, result["saved_model"], str(tmp_path / "c"))
  assert scored["accuracy"] > 0.8
