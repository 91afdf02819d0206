"""`tfrecord:GLOB`: sharded TFRecords of `tf.train.Example` written by `convert`.

Files are `SPLIT-NNNNN-of-MMMMM.tfrecord`; `dataset_info.json` beside them
carries class names and split sizes, so reading needs no pass over the data.
"""

import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from tfagent.data import multilabel, pairs, sources
from tfagent.data.labels import given_class_names
from tfagent.errors import DATA_ERROR_MARK, ConfigError, DataError

INFO_FILE = "dataset_info.json"
FEATURES = {"text": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}


def serialize(text, label) -> bytes:
  """One example as a serialized `tf.train.Example` with features text and label.

  `text`: bytes, or a sentence pair's dict of bytes `{text, text_pair}` (both stored).
  `label`: an int (multiclass) or a multi-hot `<float32>[C]` (multilabel, a float list).
  """
  if np.ndim(label):
    value = tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(label).tolist()))
  else:
    value = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
  texts = text if isinstance(text, dict) else {"text": text}
  feature = {name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t]))
             for name, t in texts.items()}
  return tf.train.Example(features=tf.train.Features(feature={
      **feature, "label": value})).SerializeToString()


def shard_name(split: str, index: int, count: int) -> str:
  """File name of one shard, e.g. `train-00003-of-00008.tfrecord`."""
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _parser(data_cfg, num_classes: int):
  """Parses a record into `(text, label)`: the label `<int32>[]`, or multi-hot `<float32>[C]`
  (multilabel); the text `<string>[]`, or a sentence pair's dict `{text, text_pair}`."""
  features = dict(FEATURES)
  if multilabel.is_multilabel(data_cfg):
    features["label"] = tf.io.FixedLenFeature([num_classes], tf.float32)
  if pairs.is_pair(data_cfg):
    features[pairs.TEXT_PAIR] = tf.io.FixedLenFeature([], tf.string)

  def parse(record):
    ex = tf.io.parse_single_example(record, features)
    label = ex.pop("label")
    text = ex if pairs.is_pair(data_cfg) else ex["text"]
    if label.dtype == tf.float32:
      return text, label
    if num_classes:  # Else -1 would read as the last class, 5 as an index error later.
      # Short: TensorFlow elides the middle of a longer string in an assertion's message.
      message = (f"{DATA_ERROR_MARK} a tfrecord label outside 0..{num_classes - 1} "
                 f"({num_classes} classes) in --dataset")
      with tf.control_dependencies([
          tf.debugging.assert_greater_equal(label, tf.constant(0, label.dtype), message),
          tf.debugging.assert_less(label, tf.constant(num_classes, label.dtype), message)]):
        label = tf.identity(label)
    return text, tf.cast(label, tf.int32)
  return parse


def read_files(files: list, data_cfg, num_classes: int = 0) -> tf.data.Dataset:
  """Streams `(text, label)` from TFRecord shards, several files at once (`num_classes`: the
  multi-hot width of a multilabel task)."""
  ds = tf.data.Dataset.from_tensor_slices(files)
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                     num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=data_cfg.deterministic)
  return ds.map(_parser(data_cfg, num_classes), num_parallel_calls=tf.data.AUTOTUNE)


def _remapped(ds: tf.data.Dataset, remap: list) -> tf.data.Dataset:
  """Labels mapped by `remap[stored_id]`: the stored classes in another order."""
  table = tf.constant(remap, tf.int32)
  if ds.element_spec[1].shape.rank:  # Multi-hot: new column j is stored column remap⁻¹[j].
    columns = tf.constant([remap.index(j) for j in range(len(remap))], tf.int32)
    return ds.map(lambda text, label: (text, tf.gather(label, columns)),
                  num_parallel_calls=tf.data.AUTOTUNE)
  return ds.map(lambda text, label: (text, tf.gather(table, label)),
                num_parallel_calls=tf.data.AUTOTUNE)


def _info_path(files: list) -> str:
  return os.path.join(os.path.dirname(files[0]), INFO_FILE)


def _read_info(files: list) -> dict:
  path = _info_path(files)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def check_task(arg: str, info: dict, data_cfg) -> None:
  """The shards' task and --text_pair_field (dataset_info.json; multiclass and one text when
  absent) must be the run's."""
  for flag, stored, given in (("task", info.get("task", "multiclass"), data_cfg.task),
                              ("text_pair_field", info.get("text_pair_field", ""),
                               data_cfg.text_pair_field)):
    if stored != given:
      raise ConfigError(f"--{flag}={given}: tfrecord:{arg} was converted with "
                        f"--{flag}={stored} (its {INFO_FILE}); pass --{flag}={stored}, or "
                        f"convert the source again with the --{flag} you want.")


def load_tfrecord(arg: str, data_cfg) -> tuple:
  """`tfrecord:GLOB`: streamed splits by file-name prefix; classes from dataset_info.json."""
  files = sorted(tf.io.gfile.glob(arg))
  if not files:
    raise DataError(f"tfrecord:{arg}: matches no file; give a glob of the shards "
                    "python -m tfagent.data.convert wrote, e.g. /data/out/*.tfrecord.")
  by_split = {s: [f for f in files if os.path.basename(f).startswith(f"{s}-")]
              for s in sources.SPLITS}
  missing = [s for s, fs in by_split.items() if not fs]
  if missing:
    raise DataError(f"tfrecord:{arg}: no files for split(s) {', '.join(missing)} among "
                    f"{len(files)} matched; expected names like {shard_name('train', 0, 8)} "
                    "(written by python -m tfagent.data.convert).")
  info = _read_info(files)
  check_task(arg, info, data_cfg)
  stored = info.get("class_names", ())
  class_names = (sources.stored_class_names(stored, data_cfg, _info_path(files)) if stored
                 else given_class_names(data_cfg))
  if not class_names:
    raise DataError(f"tfrecord:{arg}: no {INFO_FILE} beside the files and no "
                    "--class_names; give the class names in label order.")
  sizes = info.get("split_sizes") or {}
  balance = (info.get("report") or {}).get("class_balance") or {}
  splits = {}
  for s in sources.SPLITS:
    counts = balance.get(s)  # By class name, so it holds in any order of the names.
    label_counts = {i: counts.get(n, 0) for i, n in enumerate(class_names)} if counts else None
    ds = read_files(by_split[s], data_cfg, len(stored or class_names))
    if stored and tuple(stored) != class_names:
      ds = _remapped(ds, sources.id_remap(stored, class_names))
    splits[s] = sources.Streamed(ds, sizes.get(s), label_counts)
  logging.info("tfrecord:%s: %s files per split.", arg,
               {s: len(fs) for s, fs in by_split.items()})
  # The conversion's own report describes these very records: its duplicates, conflicting
  # labels and skipped records (the model card's warnings) and the splits' digests (tfagent
  # evaluate's check that a run's test split is unchanged) stand as a csv run's would.
  # class_balance and what follows it are measured again on what this run reads.
  report = {**(info.get("report") or {}),
            "tfrecord_files": {s: len(fs) for s, fs in by_split.items()}}
  return splits, class_names, report


sources.SOURCES["tfrecord"] = load_tfrecord
