"""Input pipeline vs model: is tf.data ever the bottleneck? And what does bucketing save?

  python bench/data_bench.py [--dataset=...] [--train_batches=20] [--out=bench/data_bench.json]

In one run, on IMDB (../shared/data/imdb, official split) when present and on
the embedded corpus otherwise:
  1. pipeline alone: examples/s out of `make_input_fn` (read, tokenize, bucket,
     batch), first epoch (tokenizing) and second epoch (token ids cached);
  2. model: examples/s the Transformer (ModelConfig(name="transformer"),
     defaults) consumes in training steps on batches from that pipeline;
  3. padded tokens per epoch: length buckets vs padding every batch to the
     maximum length (and vs padding to each batch's longest text).
"""

import json
import os
import sys
import time

from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import imdb  # noqa: E402
from tfagent import config, data, models  # noqa: E402

FLAGS = flags.FLAGS


def data_config() -> config.DataConfig:
  """IMDB's official split when the shared copy is there, else the embedded corpus."""
  if FLAGS.dataset:
    return config.DataConfig(dataset=FLAGS.dataset, batch_size=FLAGS.batch_size)
  if os.path.exists(imdb.TRAIN):
    return imdb.official_split(batch_size=FLAGS.batch_size)
  logging.warning("%s not found: benchmarking the embedded corpus instead.", imdb.TRAIN)
  return config.DataConfig(batch_size=FLAGS.batch_size)


def time_epoch(ds: tf.data.Dataset) -> tuple:
  """Iterates one epoch; returns `(examples, seconds, batches as (ids, labels) shapes)`."""
  start, n, widths = time.perf_counter(), 0, []
  for ids, labels in ds:
    n += int(labels.shape[0])
    widths.append((int(labels.shape[0]), int(ids.shape[1]), int(tf.math.count_nonzero(ids))))
  return n, time.perf_counter() - start, widths


def pipeline_speed(train_ds, tokenizer, data_cfg, model_cfg) -> dict:
  """Examples/s of the training input pipeline alone, uncached then cached."""
  ds = data.make_input_fn(train_ds, tokenizer, data_cfg, training=True,
                          model_cfg=model_cfg)()
  n, first, widths = time_epoch(ds)
  _, second, _ = time_epoch(ds)
  return {"examples": n, "epoch1_examples_per_s": n / first,
          "epoch2_cached_examples_per_s": n / second, "batches": widths}


def model_speed(model, train_ds, data_cfg, model_cfg, steps: int) -> dict:
  """Examples/s the classifier consumes in training steps (input prepared beforehand)."""
  tokenizer = model.tokenizer
  classifier = model.classifier
  classifier.compile(optimizer=keras.optimizers.AdamW(1e-3),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  ds = data.make_input_fn(train_ds, tokenizer, data_cfg, training=True,
                          model_cfg=model_cfg)()
  batches = list(ds.take(steps + 3))  # Held in memory: only the model is timed.
  for ids, labels in batches[:3]:  # Warm-up: tracing, one per padded width.
    classifier.train_on_batch(ids, labels)
  start, n = time.perf_counter(), 0
  for ids, labels in batches[3:]:
    classifier.train_on_batch(ids, labels)
    n += int(labels.shape[0])
  seconds = time.perf_counter() - start
  mean_width = float(np.mean([int(b[0].shape[1]) for b in batches[3:]]))
  return {"examples": n, "seconds": seconds, "examples_per_s": n / seconds,
          "mean_batch_width": mean_width}


def padding(bucketed: list, longest: list, max_length: int) -> dict:
  """Padded tokens per epoch: buckets vs batch-longest vs every batch at max length."""
  real = sum(nz for _, _, nz in bucketed)
  examples = sum(b for b, _, _ in bucketed)
  def pad(widths):
    return sum(b * w - nz for b, w, nz in widths)
  to_max = examples * max_length - real
  out = {"real_tokens": real, "pad_bucketed": pad(bucketed), "pad_batch_longest": pad(longest),
         "pad_max_length": to_max, "positions_bucketed": real + pad(bucketed),
         "positions_max_length": examples * max_length}
  out["pad_cut_vs_max_length"] = 1 - out["pad_bucketed"] / to_max
  out["positions_cut_vs_max_length"] = 1 - out["positions_bucketed"] / out["positions_max_length"]
  return out


def main(argv):
  del argv
  data_cfg = data_config()
  splits, info = data.load_splits(data_cfg)
  model_cfg = config.ModelConfig(name="transformer")
  logging.info("Learning the vocabulary on %s train examples...", info.split_sizes["train"])
  model = models.build_model(model_cfg, info.class_names,
                             splits["train"].map(lambda t, _: t).batch(1024))
  tokenizer = model.tokenizer
  pipe = pipeline_speed(splits["train"], tokenizer, data_cfg, model_cfg)
  no_buckets = config.DataConfig(**{**data_cfg.__dict__, "bucket_width": 0})
  _, _, longest = time_epoch(data.make_input_fn(splits["train"], tokenizer, no_buckets,
                                                training=True)())
  fit = model_speed(model, splits["train"], data_cfg, model_cfg, FLAGS.train_batches)
  pad = padding(pipe.pop("batches"), longest, model_cfg.sequence_length)
  result = {"dataset": data_cfg.dataset, "batch_size": data_cfg.batch_size,
            "sequence_length": model_cfg.sequence_length, "bucket_width": data_cfg.bucket_width,
            "cpu_count": os.cpu_count(), "pipeline": pipe, "transformer_train": fit,
            "ratio_pipeline_to_model": pipe["epoch1_examples_per_s"] / fit["examples_per_s"],
            "padding": pad}
  print(json.dumps(result, indent=2))
  print(f"\npipeline {pipe['epoch1_examples_per_s']:.0f} ex/s (epoch 1, tokenizing), "
        f"{pipe['epoch2_cached_examples_per_s']:.0f} ex/s (epoch 2, cached) | Transformer "
        f"training {fit['examples_per_s']:.0f} ex/s | ratio {result['ratio_pipeline_to_model']:.1f}x"
        f"\npad tokens/epoch: buckets {pad['pad_bucketed']:,}, batch-longest "
        f"{pad['pad_batch_longest']:,}, max length {pad['pad_max_length']:,} "
        f"(cut {pad['pad_cut_vs_max_length']:.1%}); positions computed: "
        f"{pad['positions_bucketed']:,} vs {pad['positions_max_length']:,} "
        f"(cut {pad['positions_cut_vs_max_length']:.1%})")
  if FLAGS.out:
    with open(FLAGS.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  flags.DEFINE_string("dataset", "", "Source to benchmark; empty: IMDB if present, else embedded.")
  flags.DEFINE_integer("batch_size", 64, "Global batch size, as in training.")
  flags.DEFINE_integer("train_batches", 20, "Timed Transformer training steps (after 3 warm-up).")
  flags.DEFINE_string("out", "", "Optional JSON file for the results.")
  app.run(main)
