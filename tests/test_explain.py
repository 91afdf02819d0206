"""The explain signature: integrated gradients inside the export, for every from-scratch model."""

import dataclasses
import json
import os
import random
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
import pooled_python
from tfagent import config, explain, models, signatures
from tfagent.errors import ConfigError
from tfagent.models.wide_fit import fit_wide
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
for module in sys.argv[2:]:
  importlib.import_module(module)
assert "tfagent" not in sys.modules and "keras_hub" not in sys.modules
got = {}
for path, texts in json.loads(sys.argv[1]).items():
  out = tf.saved_model.load(path).signatures["explain"](text=tf.constant(texts))
  got[path] = {"attributions": out["attributions"].numpy().tolist(),
               "tokens": [[t.decode() for t in row] for row in out["tokens"].numpy()]}
print(json.dumps(got))
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
    wide_fit = fit_wide(cfg, pairs, pairs, 2, seed=0)
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
    model.set_deep_weight(0.4)
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
  model.set_deep_weight(0.0)
  layer = model.wide
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
  _, positions, out = explain_planted(tmp_path, 6, **overrides)
  hits = (out["attributions"].argmax(-1) == positions).mean()
  assert_planted_found(hits, out, f"{overrides}: planted word top-attributed")


def explain_planted(tmp_path, epochs: int, model_cfg=None, **overrides) -> tuple:
  """`(texts, positions, explanation)`: a tiny model (`model_cfg`, else the tiny config's
  with `overrides`) trained on the planted corpus, explaining planted_texts toward its class."""
  cfg = tiny_config("", tmp_path / "run", tmp_path / "saved_models")  # Explained in-process.
  corpus = write_planted_corpus(tmp_path / "planted.jsonl")
  data = dataclasses.replace(cfg.data, dataset=f"jsonl:{corpus}", class_names="neg,pos,none")
  cfg = dataclasses.replace(
      cfg, data=data, model=model_cfg or dataclasses.replace(cfg.model, **overrides),
      train=dataclasses.replace(cfg.train, epochs=epochs))
  from tfagent import train
  train.train_and_evaluate(cfg)
  texts, positions = planted_texts()
  return texts, positions, explained(best_model(cfg), texts, classes=["neg", "pos", "none"])


def assert_planted_found(hits: float, out: dict, what: str) -> None:
  """The planted word comes first in 95 % of the texts, and completeness holds within 1 %."""
  print(f"{what} in {hits:.0%} of {len(out['attributions'])} texts; completeness ratio "
        f"{completeness_ratio(out):.2e}")
  assert hits >= 0.95
  assert completeness_ratio(out) <= 0.01


@pytest.mark.slow
def test_explain_reloads_in_a_clean_process_and_gives_the_in_process_attributions(trained_run):
  cfg, result = trained_run
  expected = explained(best_model(cfg), TEXTS, steps=cfg.export.explain_steps)
  got = reload_in_a_clean_process({result["saved_model"]: TEXTS})[result["saved_model"]]
  np.testing.assert_allclose(np.array(got["attributions"]), expected["attributions"], atol=1e-5)
  assert got["tokens"] == [[t.decode() for t in row] for row in expected["tokens"]]


def reload_in_a_clean_process(texts_by_path: dict, *modules) -> dict:
  """Path -> the explain signature's outputs on its texts, all in one process that imports
  only TensorFlow and `modules`."""
  return pooled_python.clean_json(RELOAD, json.dumps(texts_by_path), *modules, modules=modules)


@pytest.fixture(scope="module")
def bert_exports(tiny_bert, tiny_bert_preset, tmp_path_factory) -> dict:
  """Name -> (model, path, texts, reloaded): the tiny BERT and the tiny BERT with a wide path,
  exported with 16 steps and explained in one clean process with tensorflow_text only."""
  from tfagent import export
  root = tmp_path_factory.mktemp("bert_exports")
  runs = {"bert": (tiny_bert, ["great films !", "", "a truly awful mess , hated it"]),
          "bert_wide": (bert_wide(tiny_bert_preset),
                        ["great movie great", "", "a truly awful mess , hated it"])}
  paths = {name: export.export_model(model, CLASSES, config.ExportConfig(
      export_dir=str(root), model_name=name, explain_steps=16))
           for name, (model, _) in runs.items()}
  got = reload_in_a_clean_process({paths[n]: texts for n, (_, texts) in runs.items()},
                                  "tensorflow_text")
  return {n: (model, paths[n], texts, got[paths[n]]) for n, (model, texts) in runs.items()}


@pytest.mark.slow
def test_bert_explain_reloads_with_tensorflow_text_only(bert_exports):
  model, _, texts, got = bert_exports["bert"]
  expected = explained(model, texts, steps=16)
  np.testing.assert_allclose(np.array(got["attributions"]), expected["attributions"], atol=1e-5)
  assert got["tokens"] == [[t.decode() for t in row] for row in expected["tokens"]]


@pytest.mark.slow
def test_saved_model_cli_lists_the_explain_signatures(trained_run):
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
  by_class = shown.split("signature_def['explain_class']")[1].split("signature_def[")[0]
  for name in ("text", "class_name"):
    assert f"inputs['{name}'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in by_class
  assert "outputs['attributions'] tensor_info:" in by_class
  assert "Method name is: tensorflow/serving/predict" in by_class


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


def bert_wide(preset: str, deep_weight: float = 0.4) -> keras.Model:
  """A tiny BERT with a wide path of 1-2-grams fitted on TEXTS; deep weight not 1."""
  model = untrained(config.ModelConfig(name="bert", preset=preset, sequence_length=8,
                                       dropout=0.0, wide_ngrams=2, wide_min_count=1, wide_c=1.0))
  model.set_deep_weight(deep_weight)
  return model


@pytest.fixture(scope="module")
def tiny_bert_preset(tmp_path_factory) -> str:
  return write_tiny_preset(tmp_path_factory.mktemp("tiny_bert_wide"))


def test_bert_with_a_wide_path_lists_the_ngrams_after_the_pieces(tiny_bert_preset):
  """Pieces (weighted by the deep weight), then each known n-gram once, with its exact weight."""
  model = bert_wide(tiny_bert_preset)
  layer = model.wide
  index = {g: i + 1 for i, g in enumerate(layer.vocabulary())}
  texts = ["great movie great", "", "zebra films", "a truly awful mess , hated it"]
  out = explained(model, texts)
  tokens = [[t.decode() for t in row] for row in out["tokens"]]
  assert tokens[0][:4] == ["great", "movie", "great", "<great>"]
  # "great" is one feature however often it occurs; "movie great" is not in TEXTS, so
  # unknown to the wide path, as "zebra" is to both paths.
  assert [t for t in tokens[0] if t] == ["great", "movie", "great", "<great>", "<movie>",
                                         "<great movie>"]
  assert not any(tokens[1])
  assert [t for t in tokens[2] if t] == ["[UNK]", "film", "##s"]  # No known n-gram.
  # The 8-id window keeps 6 pieces; the wide path reads every word.
  assert tokens[3][:6] == ["a", "truly", "awful", "mess", ",", "hated"]
  assert "<hated it>" in tokens[3] and "<it>" in tokens[3]
  c = np.argmax(out["probabilities"], -1)
  for row, (toks, scores) in enumerate(zip(tokens, out["attributions"])):
    for token, score in zip(toks, scores):
      if token.startswith("<"):
        assert score == pytest.approx(layer.kernel.numpy()[index[token[1:-1]], c[row]], abs=1e-6)
  assert out["attributions"].shape == out["tokens"].shape
  assert (out["attributions"][out["tokens"] == b""] == 0).all()
  assert completeness_ratio(out) <= 0.01
  assert explained(model, [""], steps=2)["tokens"].tolist() == [[]]  # No n-gram in the batch.


def test_bert_with_a_wide_path_and_deep_weight_zero_is_the_wide_path_exactly(tiny_bert_preset):
  out = explained(bert_wide(tiny_bert_preset, deep_weight=0.0), ["great movie great"], steps=2)
  pieces = out["attributions"][0][:3]
  np.testing.assert_array_equal(pieces, 0.0)
  np.testing.assert_allclose(out["completeness_error"], 0.0, atol=1e-6)


def explained_toward(model, texts, class_names, steps=64) -> dict:
  """explain_class's outputs (with LOGIT_DIFFERENCE) toward `class_names`, one a text."""
  fn = explain.make_explain_fns(model, CLASSES, steps, details=True)[1]
  out = fn(tf.constant(texts), tf.constant(class_names))
  return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("overrides", [dict(name="lstm", wide_ngrams=2, wide_min_count=1),
                                       dict(name="transformer", ensemble_size=2)],
                         ids=["wide_deep", "ensemble"])
def test_explain_class_is_toward_the_named_class_and_complete(overrides):
  model = untrained(tiny_model_config(**overrides))
  predicted = explained(model, TEXTS, steps=128)
  other = [CLASSES[1 - CLASSES.index(c.decode())] for c in predicted["classes"]]
  same = explained_toward(model, TEXTS, [c.decode() for c in predicted["classes"]], steps=128)
  toward = explained_toward(model, TEXTS, other, steps=128)
  assert [c.decode() for c in toward["classes"]] == other
  np.testing.assert_allclose(same["attributions"], predicted["attributions"], atol=1e-6)
  assert same["tokens"].tolist() == toward["tokens"].tolist() == predicted["tokens"].tolist()
  np.testing.assert_allclose(toward["probabilities"], predicted["probabilities"], atol=1e-6)
  real = [i for i, t in enumerate(TEXTS) if t]
  assert np.abs(toward["attributions"][real] - predicted["attributions"][real]).max() > 1e-3
  assert completeness_ratio(toward) <= 0.01


def test_explain_class_of_a_two_class_wide_path_is_the_predicted_class_negated():
  """The 2-class wide path's logits are ±(its decision) / 2: toward the other class, every
  n-gram's weight flips its sign."""
  model = untrained(tiny_model_config(wide_ngrams=2, wide_min_count=1, wide_c=1.0))
  model.set_deep_weight(0.0)
  predicted = explained(model, TEXTS[:2], steps=2)
  other = [CLASSES[1 - CLASSES.index(c.decode())] for c in predicted["classes"]]
  toward = explained_toward(model, TEXTS[:2], other, steps=2)
  assert np.abs(predicted["attributions"]).max() > 0.01
  np.testing.assert_allclose(toward["attributions"], -predicted["attributions"], atol=1e-6)


def test_an_unknown_class_name_is_an_error_naming_the_valid_ones():
  fn = explain.make_explain_fns(untrained(tiny_model_config()), CLASSES, 2)[1]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="class_name: expected one of negative, positive; got.*neutral"):
    fn(tf.constant(["a", "b"]), tf.constant(["positive", "neutral"]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="one class name a text"):
    fn(tf.constant(["a", "b"]), tf.constant(["positive"]))


@pytest.mark.slow
def test_bert_wide_export_has_both_signatures_and_reloads_with_tensorflow_text_only(
    bert_exports):
  model, path, texts, got = bert_exports["bert_wide"]
  defs = signatures.read_signature_defs(path)
  assert {signatures.EXPLAIN_SIGNATURE, signatures.EXPLAIN_CLASS_SIGNATURE} <= set(defs)
  expected = explained(model, texts, steps=16)
  np.testing.assert_allclose(np.array(got["attributions"]), expected["attributions"], atol=1e-5)
  assert got["tokens"] == [[t.decode() for t in row] for row in expected["tokens"]]
  assert "<great movie>" in got["tokens"][0]
  served = signatures.load_signature(path, signatures.EXPLAIN_CLASS_SIGNATURE)(
      text=tf.constant(texts), class_name=tf.constant(["negative"] * 3))
  toward = explained_toward(model, texts, ["negative"] * 3, steps=16)
  np.testing.assert_allclose(served["attributions"].numpy(), toward["attributions"], atol=1e-5)


def write_planted_bert_preset(folder) -> str:
  """A tiny random BERT whose vocabulary holds the planted corpus' words."""
  import keras_hub
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *PLANTED_WORDS]
  keras.utils.set_random_seed(0)
  keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=1, num_heads=2,
                                hidden_dim=8, intermediate_dim=16,
                                max_sequence_length=16).save_to_preset(str(folder))
  keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True).save_to_preset(str(folder))
  return str(folder)


PLANTED_WORDS = [f"w{i}" for i in range(40)] + [w for w in PLANTED.values() if w]


@pytest.mark.slow
def test_the_planted_word_gets_the_largest_attribution_with_bert_and_a_wide_path(tmp_path):
  """The top entry is the planted word's piece, or a wide n-gram holding it."""
  model_cfg = config.ModelConfig(name="bert", preset=write_planted_bert_preset(tmp_path / "bert"),
                                 sequence_length=16, dropout=0.0, wide_ngrams=2,
                                 wide_min_count=2)
  texts, _, out = explain_planted(tmp_path, 2, model_cfg)
  top = [row[i].decode() for row, i in zip(out["tokens"], out["attributions"].argmax(-1))]
  planted = [(PLANTED["pos"], PLANTED["neg"])[i % 2] for i in range(len(texts))]
  hits = np.mean([w in t.strip("<>").split() for t, w in zip(top, planted)])
  exact = np.mean([t in (w, f"<{w}>") for t, w in zip(top, planted)])
  assert_planted_found(hits, out, f"bert+wide: the top entry holds the planted word (is the "
                       f"word alone in {exact:.0%})")


@pytest.mark.slow
def test_toward_the_other_class_the_trained_models_attributions_flip(trained_run):
  """A trained 2-class softmax model: toward the class it did not predict, the tokens that
  pushed toward its prediction push away, and completeness holds for that class. Not exactly
  (the two logits are not each other's negation), so over all tokens together."""
  cfg, _ = trained_run
  model = best_model(cfg)
  texts = ["great movie loved it", "terrible movie hated it, truly awful",
           "a truly wonderful delight", "boring film, a mess", "很好看", "难看 失望 差"]
  predicted = explained(model, texts)
  other = [CLASSES[1 - CLASSES.index(c.decode())] for c in predicted["classes"]]
  toward = explained_toward(model, texts, other)
  assert [c.decode() for c in toward["classes"]] == other
  real = predicted["tokens"] != b""
  a, b = predicted["attributions"][real], toward["attributions"][real]
  corr = np.corrcoef(a, b)[0, 1]
  top = [np.sign(p[np.abs(p).argmax()]) != np.sign(t[np.abs(p).argmax()])
         for p, t in zip(predicted["attributions"], toward["attributions"])]
  print(f"{len(a)} tokens: correlation of the two classes' attributions {corr:.3f}; each "
        f"text's top token flips its sign in {np.mean(top):.0%} of {len(texts)} texts")
  assert corr < -0.5
  assert np.mean(top) >= 5 / 6
  assert completeness_ratio(toward) <= 0.01


@pytest.mark.slow
def test_python_api_and_predict_explain_class(trained_run, monkeypatch, capfd):
  import tfagent
  from conftest import run_command
  cfg, result = trained_run
  path = result["saved_model"]
  model = tfagent.load(path)
  rows = model.explain(TEXTS, class_name="negative")
  assert [r["class"] for r in rows] == ["negative"] * len(TEXTS)
  expected = explained_toward(best_model(cfg), TEXTS, ["negative"] * len(TEXTS),
                              steps=cfg.export.explain_steps)
  for row, scores in zip(rows, expected["attributions"]):
    np.testing.assert_allclose(row["attributions"], scores[:len(row["attributions"])], atol=1e-5)
  with pytest.raises(ConfigError, match="--explain_class='neutral': not a class .*"
                     "valid: negative, positive"):
    model.explain(["x"], class_name="neutral")
  assert run_command(monkeypatch, "predict", f"--saved_model={path}", "--explain_class=negative",
                     "great movie loved it") == 0
  head = capfd.readouterr().out.splitlines()[0]
  predicted = model.predict(["great movie loved it"])[0]
  p_negative, p_positive = predicted["probabilities"]
  assert predicted["class"] == "positive"  # So the view says toward which class, and why not.
  assert head.startswith(f"toward negative {p_negative:.3f} (predicted positive "
                         f"{p_positive:.3f}) (completeness error")
  assert run_command(monkeypatch, "predict", f"--saved_model={path}", "--explain_class=neutral",
                     "x") == 1
  assert capfd.readouterr().out == ""
