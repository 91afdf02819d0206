"""tf.data input pipelines: shard, tokenize on the host, cache, shuffle, bucket, prefetch."""

import numpy as np
import tensorflow as tf

TOKENIZE_BATCH = 256  # Texts per vectorized tokenizer call; per-call overhead amortised.


def batched(ds: tf.data.Dataset, batch_size: int, training: bool,
            seed: int, shuffle_buffer: int = 20_000) -> tf.data.Dataset:
  """Turns unbatched examples into `(text: <string>[batch], label: <int32>[batch])`."""
  if training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  return ds.batch(batch_size)


def pipeline_options(data_cfg) -> tf.data.Options:
  """Autotuned parallelism and buffers; element order fixed unless `deterministic` is off."""
  options = tf.data.Options()
  options.deterministic = data_cfg.deterministic
  options.autotune.enabled = True
  options.experimental_optimization.map_parallelization = True
  options.experimental_optimization.parallel_batch = True
  return options


def tokenize_examples(ds: tf.data.Dataset, preprocess):
  """Tokenizes in batches, then splits back into examples without their padding.

  Args:
    ds: `(text: <string>[], label: <int32>[])` elements.
    preprocess: `<string>[batch] -> <int>[batch, len]`, 0 = padding at the end.

  Returns:
    `(ids: <int64>[len_i], label: <int32>[])` elements, or None when `preprocess`
    returns anything else (then tokens cannot be regrouped by length).
  """
  def tokenize(text, label):
    ids = preprocess(text)
    return ids, tf.reduce_sum(tf.cast(tf.not_equal(ids, 0), tf.int32), axis=1), label

  probe = ds.batch(2).map(lambda text, label: preprocess(text))
  spec = probe.element_spec
  if not (isinstance(spec, tf.TensorSpec) and spec.shape.rank == 2 and spec.dtype.is_integer):
    return None
  return (ds.batch(TOKENIZE_BATCH)
          .map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
          .unbatch()
          .map(lambda ids, length, label: (ids[:length], label)))


def bucket_boundaries(max_length: int, width: int) -> list:
  """Length limits of the buckets: `width, 2*width, ...` tokens, up to `max_length`."""
  return list(range(width + 1, max_length + 1, width))


def batch_by_length(ds: tf.data.Dataset, batch_size: int, max_length, data_cfg):
  """Batches token ids with texts of similar length, padding to each batch's longest.

  Args:
    ds: `(ids: <int64>[len_i], label)` elements.
    batch_size: examples per batch (per replica).
    max_length: the tokenizer's sequence length, from the model config; needed
      when bucketing is on.
    data_cfg: DataConfig (`bucket_width`: 0 turns bucketing off).

  Returns:
    `(ids: <int64>[batch, <=max_length], label: <int32>[batch])` batches.

  Raises:
    ValueError: bucketing is on (`bucket_width` > 0) but no `max_length` is given.
  """
  width = data_cfg.bucket_width
  if width > 0 and not max_length:
    raise ValueError(f"--bucket_width={width} needs the tokenizer's sequence length to place "
                     f"the buckets, but none was given ({max_length!r}); pass "
                     "the model config (its sequence_length) to make_input_fn, or set "
                     "--bucket_width=0.")
  bounds = bucket_boundaries(max_length, width) if width > 0 else []
  if bounds:
    ds = ds.bucket_by_sequence_length(
        lambda ids, label: tf.shape(ids)[0], bounds, [batch_size] * (len(bounds) + 1))
  else:
    ds = ds.padded_batch(batch_size)
  # A batch of texts without a single known token would be 0 wide; models need 1.
  return ds.map(lambda ids, label: (
      tf.pad(ids, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(ids)[1])]]), label))


def split_batches(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
  """Cuts each batch into batches of at most `batch_size` rows, never joining two.

  `Dataset.rebatch` fills a batch with rows of the next one when a batch does not
  divide evenly, which fails when their widths differ (a length bucket's partial
  last batch beside another bucket's: "MaybeMoveContiguousSlices cannot perform copy").
  """
  return ds.flat_map(lambda *batch: tf.data.Dataset.from_tensor_slices(batch).batch(batch_size))


def held_in_memory(ds: tf.data.Dataset) -> bool:
  """True when the split has a known size, i.e. came from memory, not a stream."""
  n = tf.get_static_value(ds.cardinality())
  return n is not None and n >= 0


def make_input_fn(ds: tf.data.Dataset, preprocess, data_cfg, training: bool, *,
                  model_cfg=None, start_step: int = None):
  """Returns `input_fn(InputContext) -> dataset` for distribute_datasets_from_function.

  Each input pipeline reads its own shard and batches per replica, so the
  global batch is `data_cfg.batch_size` whatever the number of replicas.
  Tokenization (`preprocess`: `<string>[batch] -> features`) runs in tf.data on
  the host, so strings never have to be copied to an accelerator. Token ids
  are cached when the split is held in memory (later epochs skip tokenizing)
  and batched by length, so batches are not padded to the longest text; the
  buckets reach up to `model_cfg.sequence_length`, the limit the tokenizer was
  built with (a model config is required while `data_cfg.bucket_width` > 0).

  With `start_step` None the dataset is one pass over the split. With an
  integer it is an endless, seeded stream of passes (every worker then runs
  the same number of steps whatever its shard) that starts after the batches
  of the first `start_step` global steps, so a resumed run sees exactly the
  batches an uninterrupted one would.

  With `members = model_cfg.ensemble_size` > 1 (an ensemble, see
  models/ensemble.py) each element is
  `((ids_0, ..., ids_{members-1}), labels <int32>[batch, members])`: in
  training every member reads its own shuffled stream (seed + k), so members
  see different batches; in evaluation all read the same batch.
  """
  stream = start_step is not None
  sequence_length = model_cfg.sequence_length if model_cfg is not None else None
  members = model_cfg.ensemble_size if model_cfg is not None else 1
  if members > 1 and training and not stream:
    raise ValueError("An ensemble's training input must be a stream (start_step set).")

  def member_batches(local, tokens, batch, batches_per_step, seed):
    """One member's batches: from `tokens` (tokenized once, shared) or, without, from text."""
    if tokens is None:  # Not a padded-id tokenizer: batch, then preprocess.
      local = local.repeat() if stream else local
      local = batched(local, batch, training, seed, data_cfg.shuffle_buffer)
      return local.map(lambda text, label: (preprocess(text), label),
                       num_parallel_calls=tf.data.AUTOTUNE)
    if training:
      tokens = tokens.shuffle(data_cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    tokens = tokens.repeat() if stream else tokens
    # The replicas this pipeline feeds share one length bucket each step: a batch
    # for all of them is cut into equal-width per-replica batches (as one device
    # would see it, and XLA and Keras' first-batch build need equal shapes).
    local = batch_by_length(tokens, batch * batches_per_step, sequence_length, data_cfg)
    return split_batches(local, batch) if batches_per_step > 1 else local

  def input_fn(ctx: tf.distribute.InputContext = None) -> tf.data.Dataset:
    local, batch, batches_per_step = ds, data_cfg.batch_size, 1
    if ctx is not None:
      local = local.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
      batch = ctx.get_per_replica_batch_size(batch)
      # Each replica fed by this pipeline takes one batch per global step.
      batches_per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    tokens = tokenize_examples(local, preprocess)
    if tokens is not None and held_in_memory(local):
      tokens = tokens.cache()
    if members > 1 and training:
      out = tf.data.Dataset.zip(tuple(
          member_batches(local, tokens, batch, batches_per_step, data_cfg.seed + k)
          for k in range(members)))
      # Axis 1: a label with a shape of its own (distill.py's targets) stays last.
      out = out.map(lambda *pairs: (tuple(ids for ids, _ in pairs),
                                    tf.stack([label for _, label in pairs], axis=1)))
    else:
      out = member_batches(local, tokens, batch, batches_per_step, data_cfg.seed)
      if members > 1:
        out = out.map(lambda ids, label: ((ids,) * members,
                                          tf.stack([label] * members, axis=1)))
    if stream:
      out = out.skip(start_step * batches_per_step)
    return out.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options(data_cfg))
  return input_fn


def count_examples(ds: tf.data.Dataset) -> int:
  """Counts a split in one streaming pass (for sources that do not know their size)."""
  return int(ds.reduce(np.int64(0), lambda n, _: n + 1))
