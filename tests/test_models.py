"""Models stage: contract (strings in, logits out), tokenizer, save/reload, training step."""

import os

import numpy as np
import pytest
import keras
import tensorflow as tf

from tfagent import config, models
from tfagent.errors import ConfigError

CORPUS = ["great film, loved it", "terrible film", "这个东西很好用", "不错", "bad movie"]


def tiny(name: str, **overrides) -> config.ModelConfig:
  fields = dict(name=name, vocab_size=50, sequence_length=8, embedding_dim=8,
                hidden_dim=4, num_layers=2, num_heads=2, intermediate_dim=8, dropout=0.1)
  fields.update(overrides)
  return config.ModelConfig(**fields)


def build(name: str, **overrides) -> keras.Model:
  corpus = tf.data.Dataset.from_tensor_slices(CORPUS).batch(2)
  return models.build_model(tiny(name, **overrides), ["neg", "pos"], corpus)


def test_tokenizer_splits_cjk_characters_and_keeps_words():
  tok = build("lstm").tokenizer
  vocab = tok.vocabulary()
  for token in ["great", "film", "这", "个", "好", ","]:
    assert token in vocab
  ids = tok(tf.constant(["great 好", "unseen"])).numpy()
  assert list(ids[0][:2]) == [vocab.index("great"), vocab.index("好")]
  assert ids[1][0] == 1  # Out-of-vocabulary: not learned outside the corpus.


def test_tokenizer_truncates_pads_and_handles_empty_text():
  tok = build("lstm", sequence_length=4).tokenizer
  ids = tok(tf.constant(["这个东西很好用", "", "不错"])).numpy()
  assert ids.shape == (3, 4)
  assert list(ids[1]) == [0, 0, 0, 0] and list(ids[2][2:]) == [0, 0]


def test_tokenizer_bigrams_extend_the_vocabulary():
  tok = build("lstm", ngrams=2, sequence_length=32).tokenizer
  assert "很 好" in tok.vocabulary()
  assert tok(tf.constant(["很好"])).shape[1] == 3  # Two characters and one bigram.


def peak_memory_growth_mb(fn) -> float:
  """Peak resident memory (MB) above the start while `fn` runs; Linux resets the peak on request."""
  def status(key):
    with open("/proc/self/status") as f:
      return next(int(line.split()[1]) for line in f if line.startswith(key))
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Resets VmHWM, the peak, to the current resident size.
  before = status("VmRSS")
  fn()
  return (status("VmHWM") - before) / 1024


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc")
def test_tokenizer_truncates_a_huge_text_before_padding_its_batch():
  tok = build("lstm", sequence_length=8).tokenizer
  texts = tf.constant(["great film " * 500_000] + ["bad movie"] * 39)  # 5.5 MB: 1M tokens.
  tok(texts[:2])  # Warm-up: the first call's one-time allocations are not the batch's.
  growth = peak_memory_growth_mb(lambda: tok(texts))
  ids = tok(texts).numpy()
  assert ids.shape == (40, 8)
  assert list(ids[0]) == list(tok(tf.constant(["great film " * 4])).numpy()[0])
  # Padded before truncation the batch is 40 x 1M int64 ids: 320 MB; truncated first, the
  # one text's ragged ids and tokens stay well under that.
  assert growth < 150, f"{growth:.0f} MB"


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_raw_strings_in_logits_out(name):
  model = build(name)
  logits = model(tf.constant(CORPUS + [""]))
  assert logits.shape == (6, 2) and logits.dtype == tf.float32
  assert np.isfinite(logits.numpy()).all()


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_padding_does_not_change_logits(name):
  model = build(name)
  alone = model(tf.constant(["不错"]), training=False).numpy()
  padded = model(tf.constant(["不错", "这个东西很好用 great film"]), training=False).numpy()
  np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_classifier_takes_the_empty_batch_of_an_idle_replica(name):
  """tf.distribute gives a replica with no examples left (the end of an evaluation pass
  that does not fill every replica) a dummy batch whose unknown dims are 0: `[0, 0]` ids."""
  classifier = build(name).classifier
  step = tf.function(lambda ids: classifier(ids, training=False),
                     input_signature=[tf.TensorSpec([None, None], tf.int64)])
  assert step(tf.zeros([0, 0], tf.int64)).shape == (0, 2)
  assert step(tf.ones([3, 2], tf.int64)).shape == (3, 2)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_save_and_reload_gives_the_same_logits(name, tmp_path):
  model = build(name, ngrams=2)
  path = str(tmp_path / "m.keras")
  model.save(path)
  reloaded = keras.saving.load_model(path)
  texts = tf.constant(CORPUS)
  np.testing.assert_allclose(reloaded(texts).numpy(), model(texts).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_one_training_step_changes_every_trainable_weight(name):
  model = build(name, dropout=0.0)
  classifier = model.classifier
  classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  ids = model.tokenizer(tf.constant(CORPUS))
  before = [w.numpy().copy() for w in classifier.trainable_weights]
  classifier.train_on_batch(ids, np.array([1, 0, 1, 1, 0]))
  unchanged = [w.path for w, b in zip(classifier.trainable_weights, before)
               if np.array_equal(w.numpy(), b)]
  assert not unchanged, f"not updated by one step: {unchanged}"


def test_unknown_model_lists_valid_ones():
  with pytest.raises(ConfigError, match="'cnn' is unknown; valid models: bert, lstm, transformer"):
    models.check_model_name("cnn")


def test_ensemble_predicts_the_mean_of_its_members_probabilities():
  model = build("lstm", ensemble_size=3)
  classifier = model.classifier
  ids = model.tokenizer(tf.constant(CORPUS))
  member_probs = [tf.nn.softmax(classifier.get_layer(f"member_{k}")(ids)).numpy()
                  for k in range(3)]
  assert not np.allclose(member_probs[0], member_probs[1])  # Own initial weights.
  ensemble_probs = tf.nn.softmax(model(tf.constant(CORPUS))).numpy()
  np.testing.assert_allclose(ensemble_probs, np.mean(member_probs, axis=0), atol=1e-6)


@pytest.mark.slow
def test_ensemble_step_trains_each_member_on_its_own_batch_and_reloads(tmp_path):
  model = build("transformer", ensemble_size=2, dropout=0.0)
  classifier = model.classifier
  classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  tok = model.tokenizer
  member_0 = classifier.get_layer("member_0")
  before = [w.numpy().copy() for w in classifier.trainable_weights]
  # Each member gets its own batch; labels are [batch, members].
  ids = (tok(tf.constant(CORPUS)), tok(tf.constant(CORPUS[::-1])))
  classifier.train_on_batch(ids, np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 1]]))
  unchanged = [w.path for w, b in zip(classifier.trainable_weights, before)
               if np.array_equal(w.numpy(), b)]
  assert not unchanged, f"not updated by one step: {unchanged}"
  assert len(classifier.trainable_weights) == 2 * len(member_0.trainable_weights)
  path = str(tmp_path / "m.keras")
  model.save(path)
  texts = tf.constant(CORPUS)
  np.testing.assert_allclose(keras.saving.load_model(path)(texts).numpy(),
                             model(texts).numpy(), atol=1e-6)


def test_ensemble_size_is_checked():
  with pytest.raises(ConfigError, match="--ensemble_size=0 is invalid"):
    models.check_model_config(tiny("lstm", ensemble_size=0))
  with pytest.raises(ConfigError, match="--ensemble_size=2 is not supported with --model=bert"):
    models.check_model_config(tiny("bert", ensemble_size=2))
