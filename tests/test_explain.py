"""The explain signature: integrated gradients inside the export, for every from-scratch model."""

import dataclasses
import json
import os
import random
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from tfagent import config, explain, models, signatures
from tfagent.errors import ConfigError
from tfagent.models import wide
from test_bert import VOCAB as BERT_VOCAB
from test_bert import write_tiny_preset
from test_export import tensor_infos

TEXTS = ["great movie loved it", "难看 垃圾 失望", "", "an unseen sentence 未见过 great great",
         "terrible movie hated it, truly awful"]
CLASSES = ["negative", "positive"]

# Only TensorFlow: what TF Serving has. No tfagent, keras or keras-hub.
RELOAD = """
import importlib, json, sys
import tensorflow as tf
for module in sys.argv[3:]:
  importlib.import_module(module)
assert "tfagent" not in sys.modules and "keras_hub" not in sys.modules
explain = tf.saved_model.load(sys.argv[1]).signatures["explain"]
out = explain(text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"attributions": out["attributions"].numpy().tolist(),
                  "tokens": [[t.decode() for t in row] for row in out["tokens"].numpy()]}))
"""


def tiny_model_config(**overrides) -> config.ModelConfig:
  fields = dict(name="lstm", vocab_size=60, sequence_length=12, embedding_dim=8, hidden_dim=4,
                num_layers=1, num_heads=2, intermediate_dim=8, dropout=0.0)
  fields.update(overrides)
  return config.ModelConfig(**fields)


def untrained(cfg: config.ModelConfig) -> keras.Model:
  """A tiny model with random weights (completeness holds for any weights)."""
  keras.utils.set_random_seed(1)
  corpus = tf.data.Dataset.from_tensor_slices(TEXTS).batch(4)
  wide_fit = None
  if cfg.wide_ngrams:
    pairs = tf.data.Dataset.from_tensor_slices((TEXTS * 2, [1, 0, 1, 1, 0] * 2))
    wide_fit = wide.fit_wide(cfg, pairs, pairs, 2, seed=0)
  return models.build_model(cfg, CLASSES, corpus, wide_fit)


def explained(model, texts, steps=64, classes=CLASSES) -> dict:
  out = explain.make_explain_fn(model, classes, steps, details=True)(tf.constant(texts))
  return {k: v.numpy() for k, v in out.items()}


def completeness_ratio(out: dict) -> float:
  """Mean completeness error over mean |F(x) - F(baseline)|."""
  return out["completeness_error"].mean() / np.abs(out[explain.LOGIT_DIFFERENCE]).mean()


def best_model(cfg) -> keras.Model:
  return keras.saving.load_model(os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))


def test_export_has_the_explain_signature(trained_run):
  _, result = trained_run
  sig = signatures.read_signature_defs(result["saved_model"])[signatures.EXPLAIN_SIGNATURE]
  assert tensor_infos(sig.inputs) == {"text": ("string", (-1,))}
  assert tensor_infos(sig.outputs) == {"tokens": ("string", (-1, -1)),
                                "attributions": ("float32", (-1, -1)),
                                "probabilities": ("float32", (-1, 2)),
                                "classes": ("string", (-1,)),
                                "completeness_error": ("float32", (-1,))}
  assert set(sig.outputs) == set(signatures.EXPLAIN_OUTPUTS)
  assert sig.method_name == signatures.PREDICT_METHOD


def test_completeness_on_the_trained_model_and_it_shrinks_with_more_steps(trained_run):
  cfg, _ = trained_run
  model = best_model(cfg)
  texts = TEXTS + [f"{a} {b}" for a in ("great", "awful", "很好", "讨厌") for b in TEXTS[:3]]
  at64, at128 = explained(model, texts, 64), explained(model, texts, 128)
  ratio64, ratio128 = completeness_ratio(at64), completeness_ratio(at128)
  print(f"completeness error / |F(x) - F(baseline)|: {ratio64:.2e} at 64 steps, "
        f"{ratio128:.2e} at 128")
  assert ratio64 <= 0.01
  assert at128["completeness_error"].mean() < at64["completeness_error"].mean()
  total = at64["attributions"].sum(-1)
  np.testing.assert_allclose(np.abs(total - at64[explain.LOGIT_DIFFERENCE]),
                             at64["completeness_error"], atol=1e-5)


def test_probabilities_and_classes_are_the_models(trained_run):
  cfg, _ = trained_run
  model = best_model(cfg)
  out = explained(model, TEXTS, steps=4)
  expected = tf.nn.softmax(model(tf.constant(TEXTS), training=False)).numpy()
  np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
  assert [c.decode() for c in out["classes"]] == [CLASSES[i] for i in expected.argmax(-1)]


@pytest.mark.parametrize("overrides", [
    dict(name="transformer"), dict(ensemble_size=2), dict(ngrams=2),
    dict(wide_ngrams=2, wide_min_count=1, wide_c=1.0),
    dict(name="transformer", ensemble_size=2, ngrams=2, wide_ngrams=2, wide_min_count=1)],
    ids=["transformer", "ensemble", "bigrams", "wide", "all"])
def test_completeness_holds_for_every_from_scratch_architecture(overrides):
  """Random weights: 128 steps, as an untrained tiny Transformer's ReLUs need 1.1 % at 64."""
  model = untrained(tiny_model_config(**overrides))
  if "wide_ngrams" in overrides:  # A deep weight other than 1 must be honoured.
    model.get_layer(models.WIDE_DEEP).deep_weight.assign(0.4)
  out = explained(model, TEXTS, steps=128)
  assert completeness_ratio(out) <= 0.01


@pytest.mark.slow
def test_an_ensemble_wide_deep_export_serves_the_in_process_explanation(tmp_path):
  from tfagent import export
  model = untrained(tiny_model_config(name="transformer", ensemble_size=2, ngrams=2,
                                      wide_ngrams=2, wide_min_count=1))
  path = export.export_model(model, CLASSES, config.ExportConfig(
      export_dir=str(tmp_path), model_name="all", explain_steps=8))
  served = signatures.load_signature(path, signatures.EXPLAIN_SIGNATURE)(text=tf.constant(TEXTS))
  expected = explained(model, TEXTS, steps=8)
  for key in signatures.EXPLAIN_OUTPUTS:
    if key == signatures.EXPLAIN_TOKENS or key == signatures.EXPLAIN_CLASSES:
      assert served[key].numpy().tolist() == expected[key].tolist()
    else:
      np.testing.assert_allclose(served[key].numpy(), expected[key], atol=1e-5)


def test_explain_steps_below_one_names_the_flag():
  with pytest.raises(ConfigError, match="--explain_steps=0: expected 1 or more"):
    explain.make_explain_fn(untrained(tiny_model_config()), CLASSES, 0)


def test_wide_path_attributions_are_its_exact_ngram_weights():
  """With deep weight 0 the model is the wide path: each n-gram's weight split over its words."""
  model = untrained(tiny_model_config(wide_ngrams=2, wide_min_count=1, wide_c=1.0))
  model.get_layer(models.WIDE_DEEP).deep_weight.assign(0.0)
  layer = model.get_layer(models.WIDE)
  kernel = layer.kernel.numpy()
  index = {g: i + 1 for i, g in enumerate(layer.vocabulary())}
  out = explained(model, ["great movie great", "zebra"], steps=2)
  c = int(np.argmax(out["probabilities"][0]))
  weight = lambda g: kernel[index.get(g, 0), c]
  # "great" occurs twice: its weight is split over both; bigrams give half to each word.
  expected = [weight("great") / 2 + weight("great movie") / 2,
              weight("movie") + weight("great movie") / 2 + weight("movie great") / 2,
              weight("great") / 2 + weight("movie great") / 2]
  np.testing.assert_allclose(out["attributions"][0], expected, atol=1e-6)
  np.testing.assert_allclose(out["completeness_error"], 0.0, atol=1e-6)


def test_tokens_are_the_texts_words_padded_and_bigrams_fold_onto_them():
  model = untrained(tiny_model_config(ngrams=2, sequence_length=6))
  out = explained(model, ["Great MOVIE, 很好", "", "a b c d e f g h"])
  tokens = [[t.decode() for t in row] for row in out["tokens"]]
  # Words as the tokenizer standardizes them; the window of 6 keeps 6 words of the last text.
  assert tokens == [["great", "movie", ",", "很", "好", ""], [""] * 6,
                    ["a", "b", "c", "d", "e", "f"]]
  assert (out["attributions"][0, 5] == 0) and (out["attributions"][1] == 0).all()
  assert out["attributions"].shape == out["tokens"].shape
  assert completeness_ratio(out) <= 0.01


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> keras.Model:
  preset = write_tiny_preset(tmp_path_factory.mktemp("tiny_bert"))
  cfg = config.ModelConfig(name="bert", preset=preset, sequence_length=8, dropout=0.0)
  return models.build_model(cfg, CLASSES, None)


def test_bert_is_explained_over_its_word_pieces(tiny_bert):
  texts = ["great films !", "", "a truly awful mess , hated it"]
  out = explained(tiny_bert, texts)
  tokens = [[t.decode() for t in row] for row in out["tokens"]]
  # [CLS] left out; [SEP] and padding are ""; "films" is two pieces; 8 ids keep 6 pieces.
  assert tokens == [["great", "film", "##s", "!", "", "", ""], [""] * 7,
                    ["a", "truly", "awful", "mess", ",", "hated", ""]]
  assert set(BERT_VOCAB) >= {t for row in tokens for t in row if t}
  assert (out["attributions"][0, 4:] == 0).all() and (out["attributions"][1] == 0).all()
  assert completeness_ratio(out) <= 0.01
  expected = tf.nn.softmax(tiny_bert(tf.constant(texts), training=False)).numpy()
  np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)


PLANTED = {"pos": "zapato", "neg": "ventana", "none": None}


def write_planted_corpus(path, n_per_class=200, seed=0) -> str:
  """JSON lines: 6-9 random filler words and the class's planted word, or none for "none".

  The third class matters: with two, a model may learn one word only and read the
  other class from its absence (the tiny Transformer did: the all-padding baseline
  already said "pos", so "zapato" rightly got no credit and won in 54 % of texts).
  """
  rng = random.Random(seed)
  filler = [f"w{i}" for i in range(40)]
  with open(path, "w", encoding="utf-8") as f:
    for label, planted in PLANTED.items():
      for _ in range(n_per_class):
        words = rng.sample(filler, rng.randint(6, 9))
        if planted:
          words.insert(rng.randint(0, len(words)), planted)
        f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
  return str(path)


def planted_texts(n=100, seed=1) -> tuple:
  rng = random.Random(seed)
  texts, positions = [], []
  for i in range(n):
    words = [f"w{rng.randrange(40)}" for _ in range(rng.randint(6, 9))]
    position = rng.randint(0, len(words))
    words.insert(position, (PLANTED["pos"], PLANTED["neg"])[i % 2])
    texts.append(" ".join(words))
    positions.append(position)
  return texts, np.array(positions)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [dict(name="lstm"), dict(name="transformer"),
                                       dict(name="lstm", wide_ngrams=2, wide_min_count=2)],
                         ids=["lstm", "transformer", "wide_deep"])
def test_the_planted_word_gets_the_largest_attribution(overrides, tmp_path):
  cfg = tiny_config("", tmp_path / "run", tmp_path / "saved_models")
  corpus = write_planted_corpus(tmp_path / "planted.jsonl")
  data = dataclasses.replace(cfg.data, dataset=f"jsonl:{corpus}", class_names="neg,pos,none")
  cfg = dataclasses.replace(
      cfg, data=data, model=dataclasses.replace(cfg.model, **overrides),
      train=dataclasses.replace(cfg.train, epochs=6))
  from tfagent import train
  train.train_and_evaluate(cfg)
  texts, positions = planted_texts()
  out = explained(best_model(cfg), texts, classes=["neg", "pos", "none"])
  hits = (out["attributions"].argmax(-1) == positions).mean()
  print(f"{overrides}: planted word top-attributed in {hits:.0%} of {len(texts)} texts; "
        f"completeness ratio {completeness_ratio(out):.2e}")
  assert hits >= 0.95
  assert completeness_ratio(out) <= 0.01


@pytest.mark.slow
def test_explain_reloads_in_a_clean_process_and_gives_the_in_process_attributions(trained_run):
  cfg, result = trained_run
  expected = explained(best_model(cfg), TEXTS, steps=cfg.export.explain_steps)
  got = reload_in_a_clean_process(result["saved_model"], TEXTS)
  np.testing.assert_allclose(np.array(got["attributions"]), expected["attributions"], atol=1e-5)
  assert got["tokens"] == [[t.decode() for t in row] for row in expected["tokens"]]


@pytest.mark.slow
def reload_in_a_clean_process(path: str, texts, *modules) -> dict:
  """The explain signature's outputs in a process that imports only TensorFlow and `modules`."""
  proc = subprocess.run([sys.executable, "-c", RELOAD, path, json.dumps(texts), *modules],
                        capture_output=True, text=True, check=True,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bert_explain_reloads_with_tensorflow_text_only(tiny_bert, tmp_path):
  from tfagent import export
  path = export.export_model(tiny_bert, CLASSES, config.ExportConfig(
      export_dir=str(tmp_path), model_name="bert", explain_steps=16))
  texts = ["great films !", "", "a truly awful mess , hated it"]
  expected = explained(tiny_bert, texts, steps=16)
  got = reload_in_a_clean_process(path, texts, "tensorflow_text")
  np.testing.assert_allclose(np.array(got["attributions"]), expected["attributions"], atol=1e-5)
  assert got["tokens"] == [[t.decode() for t in row] for row in expected["tokens"]]


@pytest.mark.slow
def test_saved_model_cli_lists_the_explain_signature(trained_run):
  _, result = trained_run
  shown = subprocess.run(["saved_model_cli", "show", "--dir", result["saved_model"], "--all"],
                         capture_output=True, text=True, check=True).stdout
  sig = shown.split("signature_def['explain']")[1].split("signature_def[")[0]
  assert "inputs['text'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in sig
  for name, dtype, shape in (("tokens", "DT_STRING", "(-1, -1)"),
                             ("attributions", "DT_FLOAT", "(-1, -1)"),
                             ("probabilities", "DT_FLOAT", "(-1, 2)"),
                             ("classes", "DT_STRING", "(-1)"),
                             ("completeness_error", "DT_FLOAT", "(-1)")):
    assert f"outputs['{name}'] tensor_info:\n        dtype: {dtype}\n        shape: {shape}" in sig
  assert "Method name is: tensorflow/serving/predict" in sig


def word_pushes(row: dict, word: str, positive: str) -> list:
  """The summed attribution of each occurrence of `word` (its characters, adjacent tokens)
  toward `positive`: the attributions are toward the predicted class, so a negative
  prediction flips their sign."""
  tokens, scores, n = row["tokens"], row["attributions"], len(word)
  sign = 1.0 if row["class"] == positive else -1.0
  return [sign * sum(scores[i:i + n]) for i in range(len(tokens) - n + 1)
          if "".join(tokens[i:i + n]) == word]


@pytest.mark.slow
def test_sentiment_words_push_their_way_on_the_embedded_reviews(tmp_path):
  """好 / 不错 push toward positive and 差 / 失望 toward negative in most test texts holding them:
  a small BiLSTM + wide path trained on 4,000 texts of the embedded corpus (Chinese reviews)."""
  import tfagent
  from tfagent import data, train
  cfg = config.Config(
      data=config.DataConfig(dataset="embedded:", max_train_examples=4000),
      model=config.ModelConfig(name="lstm", ngrams=2, vocab_size=8000, sequence_length=64,
                               embedding_dim=16, hidden_dim=16, dropout=0.3, wide_ngrams=2),
      train=config.TrainConfig(model_dir=str(tmp_path / "run"), epochs=2, verbose=0),
      export=config.ExportConfig(export_dir=str(tmp_path / "sm"), model_name="zh",
                                 explain_steps=32))
  result = train.train_and_evaluate(cfg)
  test_texts = [t.decode() for t, _ in data.load_splits(cfg.data)[0]["test"].as_numpy_iterator()]
  model = tfagent.load(result["saved_model"])
  found = {}  # word -> (occurrences, share pushing its way)
  for word, toward in (("好", 1), ("不错", 1), ("差", -1), ("失望", -1)):
    holding = [t for t in test_texts if word in t][:150]
    pushes = [p for row in model.explain(holding) for p in word_pushes(row, word, "positive")]
    found[word] = (len(pushes), float(np.mean(np.sign(pushes) == toward)))
  assert all(n >= 30 and right > 0.5 for n, right in found.values()), found
