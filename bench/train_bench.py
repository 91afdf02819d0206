"""Training speed: a plain padded float32 Keras loop vs length buckets + XLA + bfloat16.

  python bench/train_bench.py [--train_examples=4000] [--epochs=2] [--out=bench/results/train_bench.json]

In one run, on IMDB reviews (../shared/data/imdb/train.csv.gz, split 80/10/10
by the seeded text hash; training on a seeded sample of --train_examples), the
same Transformer (--sequence_length tokens, 512 as in configs/imdb_transformer.flags;
layer sizes cut for 2 CPU cores) is trained from the same seed for the same
number of steps, once per setup, with the training code's own pieces
(`training.build_and_compile`, `data.make_input_fn`'s training stream,
`optim.precision_policy`):

  plain:            float32, no XLA, every batch padded to --sequence_length;
  buckets + XLA + bfloat16: length buckets (--bucket_width), XLA (`jit_compile`,
                    one program per bucket width), mixed bfloat16;
  and, to show what each part brings: buckets alone, buckets + bfloat16, and
  buckets + XLA in float32 (--setups picks which run).

Reported per setup: training examples/s over the epochs after the first
(the first traces, and with XLA compiles each bucket width), the first
epoch's, and validation accuracy on the whole validation split (~2.5k reviews),
measured with one evaluation loop (no XLA, each model in its own dtype) for all setups.
"""

import json
import os
import sys
import time

from absl import app, flags, logging
import keras
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import imdb  # noqa: E402
from tfagent import config, data, evaluate, optim, training  # noqa: E402

FLAGS = flags.FLAGS
SETUPS = {
    "plain": dict(pad_to_max=True, mixed_precision="float32", jit_compile=False),
    "buckets": dict(pad_to_max=False, mixed_precision="float32", jit_compile=False),
    "buckets+bf16": dict(pad_to_max=False, mixed_precision="bfloat16", jit_compile=False),
    "buckets+xla": dict(pad_to_max=False, mixed_precision="float32", jit_compile=True),
    "buckets+xla+bf16": dict(pad_to_max=False, mixed_precision="bfloat16", jit_compile=True),
}

flags.DEFINE_integer("train_examples", 4000, "Seeded sample of IMDB train reviews to train on.")
flags.DEFINE_integer("epochs", 2, "Epochs per setup (at least 2); examples/s is measured "
                     "after the first.")
# Checked when the flags are parsed, before any setup trains (examples/s needs a 2nd epoch).
flags.register_validator("epochs", lambda epochs: epochs >= 2,
                         "--epochs must be at least 2: examples/s is measured over the epochs "
                         "after the first (which traces, and with XLA compiles).")
flags.DEFINE_integer("batch_size", 32, "Global batch size.")
flags.DEFINE_integer("sequence_length", 512, "Tokens kept per review; the plain setup pads "
                     "every batch to it (512 as configs/imdb_transformer.flags).")
flags.DEFINE_integer("bucket_width", 64, "Bucket width in tokens for the bucketed setups "
                     "(XLA compiles one program per width: 512/64 = 8).")
flags.DEFINE_list("setups", list(SETUPS), f"Setups to run, the first being the baseline: "
                  f"{', '.join(SETUPS)}.")
flags.DEFINE_string("out", "bench/results/train_bench.json", "Where the figures go (JSON).")


def bench_config(setup: dict) -> config.Config:
  """A Transformer at IMDB length (--sequence_length), layers sized for 2 CPU cores."""
  return config.Config(
      data=config.DataConfig(dataset=f"csv:{imdb.TRAIN}", class_names=imdb.CLASS_NAMES,
                             batch_size=FLAGS.batch_size,
                             max_train_examples=FLAGS.train_examples,
                             bucket_width=0 if setup["pad_to_max"] else FLAGS.bucket_width),
      model=config.ModelConfig(name="transformer", vocab_size=20_000,
                               sequence_length=FLAGS.sequence_length,
                               embedding_dim=64, num_layers=2, num_heads=4,
                               intermediate_dim=128, dropout=0.1),
      train=config.TrainConfig(epochs=FLAGS.epochs, learning_rate=1e-3,
                               mixed_precision=setup["mixed_precision"],
                               jit_compile=setup["jit_compile"]))


def padded_to_max(tokenizer, sequence_length: int):
  """`<string>[batch] -> <int64>[batch, sequence_length]`: the plain setup's fixed padding."""
  def preprocess(text):
    ids = tokenizer(text)
    return tf.pad(ids, [[0, 0], [0, sequence_length - tf.shape(ids)[1]]])
  return preprocess


def plain_input(split, preprocess, data_cfg) -> tf.data.Dataset:
  """The plain Keras loop's input: shuffle, batch, tokenize padded to the maximum, repeat."""
  return (split.shuffle(data_cfg.shuffle_buffer, seed=data_cfg.seed).repeat()
          .batch(data_cfg.batch_size, drop_remainder=True)
          .map(lambda text, label: (preprocess(text), label), num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


class EpochTimer(keras.callbacks.Callback):
  """Seconds per epoch of training steps."""

  def on_train_begin(self, logs=None):
    self.seconds = []

  def on_epoch_begin(self, epoch, logs=None):
    self.start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self.start)


def val_accuracy(model: keras.Model, val_split: tf.data.Dataset) -> float:
  """Accuracy of the string model on the whole validation split (same loop for all setups)."""
  predict = tf.function(lambda text: tf.nn.softmax(model(text, training=False)))
  return evaluate.accuracy_and_loss(predict, val_split, batch_size=256)["accuracy"]


def run_setup(name: str, setup: dict, splits, info) -> dict:
  """Trains one setup for the same steps from the same seed; returns its figures."""
  cfg = bench_config(setup)
  keras.utils.set_random_seed(cfg.data.seed)
  n_train = info.split_sizes["train"]
  steps = n_train // cfg.data.batch_size
  strategy = tf.distribute.get_strategy()
  with optim.precision_policy(cfg.train.mixed_precision):
    model, classifier = training.build_and_compile(cfg, strategy, splits["train"],
                                                info.class_names, steps * cfg.train.epochs)
    tokenizer = model.tokenizer
    if setup["pad_to_max"]:
      train_ds = plain_input(splits["train"],
                             padded_to_max(tokenizer, cfg.model.sequence_length), cfg.data)
    else:
      train_ds = data.make_input_fn(splits["train"], tokenizer, cfg.data, training=True,
                                    model_cfg=cfg.model, start_step=0)()
    timer = EpochTimer()
    history = classifier.fit(train_ds, epochs=cfg.train.epochs, steps_per_epoch=steps,
                             callbacks=[timer], verbose=2)
    accuracy = val_accuracy(model, splits["validation"])
  examples = steps * cfg.data.batch_size
  rate = examples * (len(timer.seconds) - 1) / sum(timer.seconds[1:])
  return {"setup": name, **setup, "steps_per_epoch": steps,
          "examples_per_s": rate, "examples_per_s_first_epoch": examples / timer.seconds[0],
          "epoch_seconds": timer.seconds, "train_loss": history.history["loss"],
          "val_accuracy": accuracy}


def main(argv):
  del argv
  if not os.path.exists(imdb.TRAIN):
    logging.warning("%s not found (../shared/data/imdb); nothing to benchmark.", imdb.TRAIN)
    return
  splits, info = data.load_splits(bench_config(next(iter(SETUPS.values()))).data)
  unknown = set(FLAGS.setups) - set(SETUPS)
  if unknown:
    raise app.UsageError(f"--setups: unknown {sorted(unknown)}; valid: {', '.join(SETUPS)}")
  rows = [run_setup(name, SETUPS[name], splits, info) for name in FLAGS.setups]
  plain = rows[0]
  for r in rows:
    r["speedup"] = r["examples_per_s"] / plain["examples_per_s"]
    r["accuracy_points_vs_plain"] = 100 * (r["val_accuracy"] - plain["val_accuracy"])
  summary = {"rows": rows, "train_examples": info.split_sizes["train"],
             "validation_examples": info.split_sizes["validation"], "epochs": FLAGS.epochs,
             "batch_size": FLAGS.batch_size, "bucket_width": FLAGS.bucket_width,
             "sequence_length": FLAGS.sequence_length, "cpus": os.cpu_count(),
             "load_average_at_end": os.getloadavg()}
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(summary, f, indent=2)
  print(f"{'setup':20} {'ex/s':>8} {'ex/s epoch 1':>13} {'speed-up':>9} {'val acc':>8} {'pts':>6}")
  for r in rows:
    print(f"{r['setup']:20} {r['examples_per_s']:8.1f} {r['examples_per_s_first_epoch']:13.1f} "
          f"{r['speedup']:8.2f}x {r['val_accuracy']:8.4f} {r['accuracy_points_vs_plain']:+6.2f}")


if __name__ == "__main__":
  app.run(main)
