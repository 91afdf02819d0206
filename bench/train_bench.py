"""Training speed: a plain padded float32 loop vs length buckets + XLA + bfloat16, same model.

  python bench/train_bench.py [--train_examples=4000] [--epochs=3] [--out=bench/results/train_bench.json]

In one run, on IMDB reviews (../shared/data/imdb/train.csv.gz, split 80/10/10
by the seeded text hash; training capped to a seeded sample of
--train_examples), the same Transformer, seed, data and number of steps are
trained through `tfagent.train.train_and_evaluate` twice:
  plain: float32, no XLA, each batch padded to its longest review (on IMDB at
         256 tokens that is the maximum length: bench/data_bench.py measured
         the same padding for both on the full train split);
  fast:  length buckets 16 tokens wide, XLA (`jit_compile`), mixed bfloat16.
Reported per setup: training examples/s of the last epoch (steady state: XLA
compiles one program per bucket width, mostly in the first epoch), of all
epochs, wall time, and validation accuracy (2.5k held-out reviews).
"""

import dataclasses
import json
import os
import sys
import tempfile
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfagent import config, train  # noqa: E402

FLAGS = flags.FLAGS
IMDB_TRAIN = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                           "..", "shared", "data", "imdb", "train.csv.gz"))
SETUPS = {
    "plain (float32, no XLA, padded)": dict(bucket_width=0, mixed_precision="float32",
                                            jit_compile=False),
    "buckets + XLA + bfloat16": dict(bucket_width=16, mixed_precision="bfloat16",
                                     jit_compile=True),
}

flags.DEFINE_integer("train_examples", 4000, "Seeded sample of IMDB train reviews to train on.")
flags.DEFINE_integer("epochs", 3, "Epochs per setup; the last one is the steady-state figure.")
flags.DEFINE_integer("batch_size", 32, "Global batch size.")
flags.DEFINE_string("out", "bench/results/train_bench.json", "Where the figures go (JSON).")


def bench_config(root: str, name: str, setup: dict) -> config.Config:
  """A Transformer small enough for 2 CPU cores, at IMDB length (256 tokens)."""
  return config.Config(
      data=config.DataConfig(dataset=f"csv:{IMDB_TRAIN}", class_names="neg,pos",
                             batch_size=FLAGS.batch_size,
                             max_train_examples=FLAGS.train_examples,
                             bucket_width=setup["bucket_width"]),
      model=config.ModelConfig(name="transformer", vocab_size=20_000, sequence_length=256,
                               embedding_dim=64, num_layers=2, num_heads=2,
                               intermediate_dim=128, dropout=0.1),
      train=config.TrainConfig(model_dir=os.path.join(root, name), epochs=FLAGS.epochs,
                               learning_rate=1e-3, early_stopping_patience=FLAGS.epochs,
                               backup_every_steps=10**6, strategy="default", verbose=2,
                               mixed_precision=setup["mixed_precision"],
                               jit_compile=setup["jit_compile"]),
      export=config.ExportConfig(export_dir=os.path.join(root, "saved_models"), model_name=name))


def run_setup(root: str, index: int, name: str, setup: dict) -> dict:
  """Trains one setup through the real training path; returns its figures."""
  start = time.perf_counter()
  result = train.train_and_evaluate(bench_config(root, f"setup{index}", setup))
  rates = result["history"]["examples_per_second"]
  return {"setup": name, **setup, "examples_per_s_last_epoch": rates[-1],
          "examples_per_s_by_epoch": rates, "wall_s": time.perf_counter() - start,
          "val_accuracy": result["validation"]["accuracy"],
          "val_loss": result["validation"]["loss"], "test_accuracy": result["accuracy"]}


def main(argv):
  del argv
  if not os.path.exists(IMDB_TRAIN):
    logging.warning("%s not found (../shared/data/imdb); nothing to benchmark.", IMDB_TRAIN)
    return
  with tempfile.TemporaryDirectory() as root:
    rows = [run_setup(root, i, name, setup) for i, (name, setup) in enumerate(SETUPS.items())]
  plain, fast = rows
  summary = {"rows": rows, "train_examples": FLAGS.train_examples, "epochs": FLAGS.epochs,
             "batch_size": FLAGS.batch_size,
             "speedup_last_epoch": fast["examples_per_s_last_epoch"]
             / plain["examples_per_s_last_epoch"],
             "speedup_wall": plain["wall_s"] / fast["wall_s"],
             "val_accuracy_difference_points": 100 * (fast["val_accuracy"]
                                                      - plain["val_accuracy"])}
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(summary, f, indent=2)
  print(f"{'setup':34} {'ex/s last epoch':>16} {'ex/s by epoch':>24} {'wall s':>8} {'val acc':>8}")
  for r in rows:
    by_epoch = "/".join(f"{x:.0f}" for x in r["examples_per_s_by_epoch"])
    print(f"{r['setup']:34} {r['examples_per_s_last_epoch']:16.1f} {by_epoch:>24} "
          f"{r['wall_s']:8.1f} {r['val_accuracy']:8.4f}")
  print(f"speed-up (last epoch): {summary['speedup_last_epoch']:.2f}x; wall: "
        f"{summary['speedup_wall']:.2f}x; accuracy difference "
        f"{summary['val_accuracy_difference_points']:+.2f} points")


if __name__ == "__main__":
  app.run(main)
