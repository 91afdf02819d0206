"""Writes any source as sharded TFRecords that `--dataset=tfrecord:GLOB` streams back.

  python -m tfagent.data.convert --dataset=csv:big.csv.gz --output_dir=/data/big \
      --num_shards=16 [--on_bad_record=skip --dedup]

Validation, dedup and the train/validation/test split happen once, here; the
shards then stream from many files in parallel with no pass over the text.
"""

import json
import os
import time

from absl import app, flags, logging
import tensorflow as tf

from tfagent import cli, config, fileio
from tfagent.data import sources, tfrecord
from tfagent.errors import ConfigError

FLAGS = flags.FLAGS
LOG_EVERY_S = 10  # Seconds between progress lines.


def write_split(ds: tf.data.Dataset, out_dir: str, split: str, num_shards: int) -> int:
  """Writes `(text, label)` elements round-robin into `num_shards` files; returns the count."""
  paths = [os.path.join(out_dir, tfrecord.shard_name(split, i, num_shards))
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  n, last_log = 0, time.monotonic()
  try:
    for text, label in ds.as_numpy_iterator():
      writers[n % num_shards].write(tfrecord.serialize(text, label))
      n += 1
      if time.monotonic() - last_log > LOG_EVERY_S:
        logging.info("%s: %d examples written...", split, n)
        last_log = time.monotonic()
  finally:
    for w in writers:
      w.close()
  logging.info("%s: %d examples in %d shards.", split, n, num_shards)
  return n


def check_output_dir(out_dir: str) -> None:
  """Refuses a folder that holds files: shards of an earlier convert would be read too."""
  if not tf.io.gfile.isdir(out_dir):
    return
  names = sorted(tf.io.gfile.listdir(out_dir))
  if names:
    shown = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
    raise ConfigError(f"--output_dir={out_dir}: holds {len(names)} "
                      f"file{'s' if len(names) > 1 else ''} already ({shown}); tfrecord:GLOB "
                      "would read the files of an earlier convert with the new ones. Give an "
                      "empty or new folder, or delete this one first.")


def convert(data_cfg, out_dir: str, num_shards: int) -> dict:
  """Loads, validates and splits `data_cfg.dataset`, then writes shards and dataset_info.json.

  `out_dir` must be empty or new (see check_output_dir).
  """
  check_output_dir(out_dir)
  splits, info = sources.load_splits(data_cfg)
  tf.io.gfile.makedirs(out_dir)
  sizes = {s: write_split(splits[s], out_dir, s, num_shards) for s in sources.SPLITS}
  meta = {"name": info.name, "class_names": list(info.class_names), "task": data_cfg.task,
          **({"text_pair_field": data_cfg.text_pair_field} if data_cfg.text_pair_field else {}),
          "split_sizes": sizes, "report": info.report}
  with tf.io.gfile.GFile(os.path.join(out_dir, tfrecord.INFO_FILE), "w") as f:
    f.write(json.dumps(meta, indent=2, sort_keys=True))
  logging.info("Wrote %s to %s; read it with --dataset=tfrecord:%s", sizes, out_dir,
               os.path.join(out_dir, "*.tfrecord"))
  return meta


def define_flags(flag_values=FLAGS) -> None:
  """Defines this entry point's flags (the data section's and its own) as a program."""
  config.define_flags([config.DataConfig], flag_values)
  flags.DEFINE_string("output_dir", None, "Empty or new folder for SPLIT-NNNNN-of-MMMMM"
                      ".tfrecord files; one holding files is refused, as its old shards "
                      "would be read with the new ones.",
                      module_name=__name__, flag_values=flag_values)
  flags.DEFINE_integer("num_shards", 8, "Files per split; several let readers and "
                       "workers stream in parallel.", module_name=__name__,
                       flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  def body():
    data_cfg = config.section_from_flags(config.DataConfig, FLAGS)
    logging.info("Data config: %s", data_cfg)
    fileio.check_filesystems({"output_dir": FLAGS.output_dir})
    convert(data_cfg, FLAGS.output_dir, FLAGS.num_shards)
  cli.run_main(body)


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("output_dir")
  app.run(main, flags_parser=cli.parse_flags(__doc__, [__name__, "DataConfig"]))
