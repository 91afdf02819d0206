"""The large-CSV streaming check: write a CSV of a given size, or read one back as training does.

  python bench/big_csv.py --write=/tmp/big/big.csv --mb=200       # IMDB train, copied and shuffled
  /usr/bin/time -v python bench/big_csv.py --read=/tmp/big/big.csv [--cache_max_mb=1000]
  /usr/bin/time -v python -m tfagent.train --dataset=csv:/tmp/big/big.csv --class_names=neg,pos ...

Each copy of a review gets a marker, so no copy is a duplicate. Keep the file
out of the repository (it is generated, and large).
"""

import csv
import gzip
import os
import random
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import imdb  # noqa: E402
from tfagent import config, data  # noqa: E402

FLAGS = flags.FLAGS


def write(path: str, megabytes: int) -> None:
  """Writes `text,label` rows from IMDB train until the file reaches `megabytes` MiB."""
  if not os.path.exists(imdb.TRAIN):
    logging.warning("%s not found: nothing to copy; skipping.", imdb.TRAIN)
    return
  with gzip.open(imdb.TRAIN, "rt", encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  rng, copy = random.Random(0), 0
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    while f.tell() < megabytes * 2**20:
      rng.shuffle(rows)
      writer.writerows([f"{r['text']} (copy {copy})", r["label"]] for r in rows)
      copy += 1
      logging.info("%d MiB written...", f.tell() // 2**20)
  logging.info("%s: %d bytes, %d rows.", path, os.path.getsize(path), copy * len(rows))


def read(path: str, cache_max_mb: int) -> None:
  """Loads the CSV as training does and reads every split once."""
  cfg = config.DataConfig(dataset=f"csv:{path}", class_names=imdb.CLASS_NAMES,
                          cache_max_mb=cache_max_mb)
  splits, info = data.load_splits(cfg)
  counts = {s: data.count_examples(ds) for s, ds in splits.items()}
  logging.info("Read back %s (expected %s).", counts, info.split_sizes)


def main(argv):
  del argv
  if FLAGS.write:
    write(FLAGS.write, FLAGS.mb)
  if FLAGS.read:
    read(FLAGS.read, FLAGS.cache_max_mb)


if __name__ == "__main__":
  flags.DEFINE_string("write", "", "CSV to generate (outside the repository, e.g. /tmp).")
  flags.DEFINE_integer("mb", 200, "Size of the generated CSV in MiB.")
  flags.DEFINE_string("read", "", "CSV to load and read back once, as training does.")
  flags.DEFINE_integer("cache_max_mb", 128, "As in training: below it the CSV is held in memory.")
  app.run(main)
