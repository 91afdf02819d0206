"""Input pipeline: length bucketing, caching, sharding, options, and a streamed training run."""

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfagent import config, data
from tfagent.data import pipeline
from tfagent.models.layers import TextTokenizer

WORDS = "the a good bad film movie plot acting great awful story long short".split()


def corpus(n=300, seed=0):
  """Texts of 1..60 words with labels; lengths vary like reviews do."""
  rng = np.random.default_rng(seed)
  texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 61)))) for _ in range(n)]
  return texts, [i % 2 for i in range(n)]


def tokenizer(sequence_length=48):
  texts, _ = corpus()
  tok = TextTokenizer(vocab_size=50, sequence_length=sequence_length)
  tok.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(64))
  return tok


def dataset(n=300):
  texts, labels = corpus(n)
  return tf.data.Dataset.from_tensor_slices((texts, labels))


def input_fn(ds, tok, cfg, training, members=1, **kwargs):
  """make_input_fn given the model config the tokenizer was built with, as training.py does."""
  model_cfg = config.ModelConfig(sequence_length=tok.sequence_length, ensemble_size=members)
  return data.make_input_fn(ds, tok, cfg, training, model_cfg=model_cfg, **kwargs)


def run(ds, tok, training=False, ctx=None, **cfg):
  cfg = config.DataConfig(**{"batch_size": 16, **cfg})
  return list(input_fn(ds, tok, cfg, training)(ctx))


def test_bucketing_pads_each_batch_only_to_its_bucket():
  tok = tokenizer()
  batches = run(dataset(), tok, bucket_width=8)
  bounds = pipeline.bucket_boundaries(48, 8)
  assert bounds == [9, 17, 25, 33, 41]
  total = 0
  for ids, labels in batches:
    ids = ids.numpy()
    lengths = (ids != 0).sum(1)
    assert ids.shape[1] == lengths.max()  # Padded to the batch's longest only.
    assert lengths.max() - lengths.min() < 8  # One bucket: similar lengths.
    total += len(labels)
  assert total == 300
  # Same examples as a plain batch of the whole data set.
  plain = tok(tf.constant(corpus()[0])).numpy()
  got = sorted(tuple(r[r != 0]) for ids, _ in batches for r in ids.numpy())
  assert got == sorted(tuple(r[r != 0]) for r in plain)


def padded_tokens(batches):
  return sum(int(tf.size(ids)) - int(tf.math.count_nonzero(ids)) for ids, _ in batches)


def test_bucketing_cuts_padding_against_batch_longest_and_max_length():
  tok = tokenizer()
  bucketed = padded_tokens(run(dataset(), tok, training=True, bucket_width=8))
  longest = padded_tokens(run(dataset(), tok, training=True, bucket_width=0))
  plain = tok(tf.constant(corpus()[0])).numpy()
  to_max = plain.shape[0] * 48 - int((plain != 0).sum())
  assert bucketed < 0.4 * longest and longest <= to_max


def test_input_fn_shards_and_batches_per_replica_with_a_tokenizer():
  tok = tokenizer()
  ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0,
                                   num_replicas_in_sync=4)
  batches = run(dataset(40), tok, ctx=ctx, batch_size=8, bucket_width=0)
  assert [int(b[1].shape[0]) for b in batches] == [2] * 10  # 20 examples, 8 / 4 replicas.
  assert sorted(np.concatenate([b[1].numpy() for b in batches])) == [0] * 20


def test_evaluation_buckets_split_per_replica_without_joining_buckets():
  """Two replicas on one pipeline: each bucket's batch for both is cut in two, and a
  bucket's partial last batch is not filled up with rows of another bucket (another width)."""
  tok = tokenizer()
  ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                   num_replicas_in_sync=2)
  batches = run(dataset(), tok, ctx=ctx, batch_size=16, bucket_width=8)
  assert any(len(labels) < 8 for _, labels in batches)  # Partial batches were there to join.
  for ids, labels in batches:
    lengths = (ids.numpy() != 0).sum(1)
    assert len(labels) <= 8
    assert ids.shape[1] - lengths.min() < 8  # One bucket, padded to that bucket's batch.
  plain = tok(tf.constant(corpus()[0])).numpy()
  got = sorted(tuple(r[r != 0]) for ids, _ in batches for r in ids.numpy())
  assert got == sorted(tuple(r[r != 0]) for r in plain)


def test_training_order_is_seeded_and_reshuffled_each_epoch():
  tok = tokenizer()
  cfg = config.DataConfig(batch_size=16)
  fn = input_fn(dataset(), tok, cfg, training=True)
  ds = fn()
  first = [b[0].numpy().tobytes() for b in ds]
  second = [b[0].numpy().tobytes() for b in ds]
  assert first != second  # Reshuffled each epoch (from the cache).
  assert [b[0].numpy().tobytes() for b in fn()] == first  # Same seed, same order.


def uses_cache(ds) -> bool:
  # The serialized graph is the one place tf.data shows its stages.
  return b"CacheDataset" in ds._as_serialized_graph().numpy()  # noqa: SLF001


def test_options_and_cache_follow_the_source():
  tok = tokenizer()
  cfg = config.DataConfig(batch_size=16, deterministic=False)
  ds = input_fn(dataset(), tok, cfg, training=False)()
  assert ds.options().deterministic is False and ds.options().autotune.enabled
  texts, labels = corpus(30)
  stream = tf.data.Dataset.from_generator(
      lambda: iter(zip(texts, labels)),
      output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)))
  assert pipeline.held_in_memory(dataset()) and not pipeline.held_in_memory(stream)
  assert uses_cache(input_fn(dataset(), tok, cfg, False)())
  assert not uses_cache(input_fn(stream, tok, cfg, False)())
  assert sum(int(b[1].shape[0]) for b in run(stream, tok)) == 30
  assert data.count_examples(stream) == 30


@pytest.mark.slow
def test_training_on_a_streamed_csv_writes_data_report(tmp_path):
  from tfagent import train
  rows = [f"{' '.join(WORDS[i % 5:i % 5 + 4])} {'great' if i % 2 else 'awful'} #{i},"
          f"{'pos' if i % 2 else 'neg'}\n" for i in range(200)]
  path = tmp_path / "d.csv"
  path.write_text("text,label\n" + "".join(rows) + ",pos\n", encoding="utf-8")
  cfg = config.Config(
      data=config.DataConfig(dataset=f"csv:{path}", batch_size=16, cache_max_mb=0,
                             on_bad_record="skip"),
      model=config.ModelConfig(name="transformer", vocab_size=50, sequence_length=16,
                               embedding_dim=8, num_layers=1, num_heads=2,
                               intermediate_dim=8),
      train=config.TrainConfig(model_dir=str(tmp_path / "run"), epochs=2, verbose=0),
      export=config.ExportConfig(export_dir=str(tmp_path / "saved"), model_name="t",
                                 explain_steps=0))
  result = train.train_and_evaluate(cfg)
  report = json.load(open(tmp_path / "run" / "data_report.json"))
  assert report["skipped"]["empty_text"] == 1 and sum(report["split_sizes"].values()) == 200
  assert result["examples"] == report["split_sizes"]["test"]


def test_ensemble_members_read_their_own_streams_in_training_and_one_in_evaluation():
  tok = tokenizer()
  cfg = config.DataConfig(batch_size=16)
  steps = 300 // 16
  train = input_fn(dataset(), tok, cfg, training=True, start_step=0, members=3)()
  seen = [[], [], []]
  for (ids, labels) in train.take(steps):
    assert labels.shape == (16, 3) and len(ids) == 3
    for k in range(3):
      seen[k].append(ids[k].numpy()[:, :4].tobytes())
  assert seen[0] != seen[1] and seen[1] != seen[2]  # Own shuffle order per member.
  single = input_fn(dataset(), tok, cfg, training=True, start_step=0)()
  assert [b[0].numpy()[:, :4].tobytes() for b in single.take(steps)] == seen[0]
  for ids, labels in input_fn(dataset(), tok, cfg, training=False, members=3)():
    assert all(np.array_equal(ids[0], ids[k]) for k in (1, 2))
    assert np.array_equal(labels[:, 0], labels[:, 2])
  with pytest.raises(ValueError, match="must be a stream"):
    input_fn(dataset(), tok, cfg, training=True, members=3)


def test_bucketing_without_a_sequence_length_is_an_error_not_a_silent_fallback():
  tok = tokenizer()
  cfg = config.DataConfig(batch_size=16, bucket_width=8)
  with pytest.raises(ValueError, match="--bucket_width=8 needs the tokenizer's sequence"):
    data.make_input_fn(dataset(), tok, cfg, training=False)()
  # A wrapped tokenizer (no `sequence_length` attribute) still buckets: the length is passed.
  wrapped = lambda text: tok(text)  # noqa: E731
  widths = [int(b[0].shape[1]) for b in
            data.make_input_fn(dataset(), wrapped, cfg, False,
                               model_cfg=config.ModelConfig(sequence_length=48))()]
  assert widths == [int(b[0].shape[1]) for b in run(dataset(), tok, bucket_width=8)]
  padded = [int(b[0].shape[1]) for b in run(dataset(), tok, bucket_width=0)]
  assert widths != padded  # Buckets, not one padded batch after another.
  # Without bucketing no length is needed.
  off = config.DataConfig(batch_size=16, bucket_width=0)
  assert list(data.make_input_fn(dataset(), tok, off, training=False)())
