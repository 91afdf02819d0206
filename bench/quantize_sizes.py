"""Export sizes, float32 beside int8, of a config's shapes without training it.

  python bench/quantize_sizes.py --flagfile_path=configs/transformer.flags --wide_vocabulary=255251

Sizes do not depend on the weights' values, only on shapes and vocabularies: the model is
built from --flagfile_path over a synthetic corpus that fills its tokenizer's vocabulary, with a
wide path of --wide_vocabulary synthetic 1-4-character n-grams (255,251: what the embedded
corpus keeps with configs/transformer.flags, bench/results/embedded.md) and random weights,
then exported as float32 and as int8 (tfagent/quantize.py). Says where the bytes go:
variables/, saved_model.pb (the graphs) and assets/ (the vocabularies, models/vocab_files.py).
"""

import json
import os
import random
import sys
import tempfile

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("flagfile_path", "configs/transformer.flags", "Config whose shapes are built.")
flags.DEFINE_integer("wide_vocabulary", 255_251, "Synthetic n-grams of the wide path (if on).")
FLAGS = flags.FLAGS


def build(cfg):
  """The config's model over synthetic texts and n-grams, random wide weights."""
  import tensorflow as tf
  from tfagent import models
  from tfagent.models import wide_fit
  rng = random.Random(0)
  words = [f"w{i}" for i in range(cfg.model.vocab_size + 10_000)]
  corpus = tf.data.Dataset.from_tensor_slices(
      [" ".join(rng.choices(words, k=30)) for _ in range(4000)])
  fit = None
  if cfg.model.wide_ngrams:
    chars = [chr(0x4E00 + i) for i in range(3000)]
    grams = sorted({" ".join(rng.choices(chars, k=rng.randint(1, cfg.model.wide_ngrams)))
                    for _ in range(int(FLAGS.wide_vocabulary * 1.5))})[:FLAGS.wide_vocabulary]
    kernel = np.random.RandomState(0).normal(0, 0.3, (len(grams) + 1, 2)).astype(np.float32)
    fit = wide_fit.WideFit(cfg.model.wide_ngrams, grams, kernel, np.zeros(2, np.float32), {})
  return models.build_model(cfg.model, ["negative", "positive"], corpus.batch(1024), fit)


def main(argv):
  del argv
  from tfagent import config, export, quantize
  cfg, _ = config.from_args(FLAGS.flagfile_path)
  model = build(cfg)
  out, folder = {}, tempfile.mkdtemp(prefix="quantize_sizes_")
  for mode in ("int8", "float32"):  # The copy first: an exported model no longer saves.
    m = quantize.quantized_copy(model, mode) if mode != "float32" else model
    path = export.export_model(m, ["negative", "positive"],
                               config.ExportConfig(export_dir=folder, model_name=mode))
    out[mode] = {**quantize.sizes(path),
                 "saved_model.pb": os.path.getsize(os.path.join(path, "saved_model.pb")),
                 "assets": quantize.folder_bytes(os.path.join(path, "assets"))}
  for row in out.values():
    row["export_ratio"] = row["export"] / out["float32"]["export"]
    row["variables_ratio"] = row["variables"] / out["float32"]["variables"]
  print(json.dumps({"flagfile": FLAGS.flagfile_path, "parameters": model.count_params(),
                    "sizes": out}, indent=1))


if __name__ == "__main__":
  app.run(main)
