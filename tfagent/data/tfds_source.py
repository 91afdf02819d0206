"""`tfds:NAME[/CONFIG][:VERSION]`: TFDS text-classification data sets, offline too.

TFDS downloads an archive once and prepares it under `--tfds_data_dir`. With no
network, the user places the archive by hand in `--tfds_manual_dir` (default
DATA_DIR/downloads/manual) under the file name TFDS registers for its URL; TFDS
then prepares from it after checking its registered checksum. We check the
network before TFDS would retry for minutes, and name the file to place.
"""

import functools
import os
import socket
import urllib.parse

from absl import logging
import tensorflow as tf

from tfagent.data import multilabel, sources
from tfagent.data.records import BadRecord, Raw, check_text, with_pair
from tfagent.data.validate import LabelMap, Part, load_parts
from tfagent.errors import ConfigError, DataError

NETWORK_TIMEOUT_S = 5  # A reachable host answers in far less.


UNLABELED_SPLITS = ("unsupervised", "unlabelled", "unlabeled")  # As TFDS names them.


def _tfds():
  import tensorflow_datasets as tfds  # Slow to import; only this source needs it.
  return tfds


def make_builder(arg: str, data_cfg):
  """Returns the TFDS builder for NAME[/CONFIG][:VERSION]; unknown names are a ConfigError."""
  tfds = _tfds()
  try:
    return tfds.builder(arg, data_dir=data_cfg.tfds_data_dir or None)
  except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"--dataset=tfds:{arg}: {first}; give a TFDS name such as "
                      "imdb_reviews, ag_news_subset or glue/sst2.") from None


def label_names(feature, data_cfg):
  """The class names of a label feature: a ClassLabel's, or under --task=multilabel a
  Sequence(ClassLabel)'s (a list of labels a record); None for any other feature."""
  features = _tfds().features
  if multilabel.is_multilabel(data_cfg):
    if not isinstance(feature, features.Sequence):
      return None
    feature = feature.feature  # (A Sequence also answers `.names` with its element's.)
  return tuple(feature.names) if isinstance(feature, features.ClassLabel) else None


def label_kind(data_cfg) -> str:
  return "Sequence(ClassLabel)" if multilabel.is_multilabel(data_cfg) else "ClassLabel"


def supervised_fields(builder, arg: str, data_cfg=None) -> tuple:
  """Returns `(text_key, label_key, class_names)`; needs (text, ClassLabel) supervised keys
  (a Sequence(ClassLabel) under --task=multilabel, or --text_field and --label_field)."""
  keys = builder.info.supervised_keys
  if multilabel.is_multilabel(data_cfg) and not (keys and len(keys) == 2):
    return named_fields(builder, arg, data_cfg, ("text_field", "label_field"))
  label = builder.info.features[keys[1]] if keys and len(keys) == 2 else None
  names = label_names(label, data_cfg) if label is not None else None
  if names is None:
    raise ConfigError(f"--dataset=tfds:{arg}: supervised keys are {keys}; expected "
                      f"(text, label) with a {label_kind(data_cfg)} label.")
  return keys[0], keys[1], names


def pair_fields(builder, arg: str, data_cfg) -> tuple:
  """`(text_key, label_key, class_names)` of a sentence-pair data set (GLUE's have no
  supervised keys): --text_field, --label_field (a ClassLabel) and --text_pair_field must
  be features of it."""
  return named_fields(builder, arg, data_cfg, ("text_field", "text_pair_field", "label_field"))


def named_fields(builder, arg: str, data_cfg, flags: tuple) -> tuple:
  """`(text_key, label_key, class_names)` from the features the `flags` name (the label's a
  ClassLabel, or a Sequence(ClassLabel) under --task=multilabel)."""
  features = builder.info.features
  for flag in flags:
    if getattr(data_cfg, flag) not in features:
      raise ConfigError(f"--dataset=tfds:{arg}: no feature {getattr(data_cfg, flag)!r} "
                        f"(--{flag}); its features are {', '.join(features)}.")
  names = label_names(features[data_cfg.label_field], data_cfg)
  if names is None:
    raise ConfigError(f"--dataset=tfds:{arg}: feature {data_cfg.label_field!r} "
                      f"(--label_field) is no {label_kind(data_cfg)}; give the feature of "
                      "the classes.")
  return data_cfg.text_field, data_cfg.label_field, names


def _reachable(url: str) -> bool:
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  try:
    socket.create_connection((parsed.hostname, port), timeout=NETWORK_TIMEOUT_S).close()
    return True
  except OSError:
    return False


def prepare(builder, arg: str, data_cfg) -> None:
  """Downloads (or takes the hand-placed archive) and prepares the data set once."""
  tfds = _tfds()
  if builder.is_prepared():
    return
  download_dir = os.path.join(builder.data_dir_root, "downloads")
  manual_dir = data_cfg.tfds_manual_dir or os.path.join(download_dir, "manual")
  for url, info in (builder.url_infos or {}).items():
    placed = info.filename and tf.io.gfile.exists(os.path.join(manual_dir, info.filename))
    if not placed and not _reachable(url):
      raise DataError(f"tfds:{arg}: cannot reach {url} and {builder.data_dir} is not "
                      f"prepared. Download that URL elsewhere and place it as "
                      f"{os.path.join(manual_dir, info.filename or '<file>')} "
                      "(or pass --tfds_manual_dir=FOLDER holding it), then run again.")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  try:
    builder.download_and_prepare(download_dir=download_dir, download_config=config)
  except tfds.download.download_manager.NonMatchingChecksumError as e:
    raise DataError(f"tfds:{arg}: the archive is not the one TFDS expects: "
                    f"{str(e).splitlines()[0]}; place the original file.") from None
  except (OSError, AssertionError) as e:
    raise DataError(f"tfds:{arg}: could not prepare in {builder.data_dir}: {e}") from None


def _decoded(ex: dict, field: str, where: str):
  """Feature `field` of an example as text, or a BadRecord; None for no field."""
  try:
    return ex[field].decode("utf-8") if field else None
  except UnicodeDecodeError as e:
    return BadRecord("invalid_utf8", where, f"not valid UTF-8 ({e.reason}) in field {field!r}.")


def _label(value, class_names: tuple):
  """A TFDS label (an id, or a Sequence(ClassLabel)'s ids) by name, as names are what the
  LabelMap takes (so --class_names may reorder them); an id out of range (-1 marks an
  unlabelled example, e.g. GLUE test) stays an unknown label."""
  if getattr(value, "ndim", 0):
    return tuple(_label(v, class_names) for v in value.tolist())
  label = int(value)
  return class_names[label] if 0 <= label < len(class_names) else str(label)


def _records(builder, split: str, fields: tuple, class_names: tuple, pair: str = "",
             labels=None):
  """Yields a Raw/BadRecord per example of a TFDS split (labels as ids); `pair`: the feature
  of a second text (--text_pair_field), or "" for none; `labels`: multilabel's LabelList,
  which checks a record's list of labels (empty, a label twice)."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  name = builder.info.full_name
  for i, ex in enumerate(_tfds().as_numpy(ds)):
    where = f"tfds:{name} {split} record {i}"
    text, second = _decoded(ex, fields[0], where), _decoded(ex, pair, where)
    bad = next((t for t in (text, second) if isinstance(t, BadRecord)), None)
    if bad:
      yield bad
      continue
    label = _label(ex[fields[1]], class_names)
    if labels is not None:
      label = labels.check(where, fields[1], list(label), label)
    bad = check_text(where, fields[0], text) or (label if isinstance(label, BadRecord) else None)
    yield bad or with_pair(Raw(where, text, label), pair, second)


def load_tfds(arg: str, data_cfg) -> tuple:
  """`tfds:NAME[/CONFIG][:VERSION]`: train split (validation carved) and the test split."""
  builder = make_builder(arg, data_cfg)
  text_key, label_key, stored = (pair_fields(builder, arg, data_cfg) if data_cfg.text_pair_field
                                 else supervised_fields(builder, arg, data_cfg))
  class_names = sources.stored_class_names(
      stored, data_cfg, f"the {label_kind(data_cfg)} feature {label_key!r} of "
      f"{builder.info.full_name}")
  prepare(builder, arg, data_cfg)
  available = set(builder.info.splits)
  test = data_cfg.tfds_test_split
  if "train" not in available or test not in available:
    raise ConfigError(f"--dataset=tfds:{arg} has splits {sorted(available)}; "
                      f"expected 'train' and --tfds_test_split={test!r}.")
  logging.info("tfds:%s prepared in %s; classes %s.", arg, builder.data_dir, class_names)
  read = functools.partial(_records, builder, fields=(text_key, label_key),
                           class_names=stored, pair=data_cfg.text_pair_field,
                           labels=multilabel.label_list(data_cfg))
  parts = [Part("train", functools.partial(read, "train")),
           Part("test", functools.partial(read, test))]
  return load_parts(parts, LabelMap(class_names, "fixed", data_cfg.normalize_labels), data_cfg,
                    f"tfds:{arg}")


def unlabeled_records(arg: str, data_cfg):
  """Yields a Raw/BadRecord per text of `tfds:NAME`'s unlabelled split (imdb_reviews:
  `unsupervised`), or of its train split when it has none; labels are not checked."""
  builder = make_builder(arg, data_cfg)
  text_key, label_key, stored = supervised_fields(builder, arg, data_cfg)
  prepare(builder, arg, data_cfg)
  split = next((s for s in UNLABELED_SPLITS if s in builder.info.splits), "train")
  logging.info("Unlabelled texts: tfds:%s split %r.", arg, split)
  yield from _records(builder, split, (text_key, label_key), stored)


sources.SOURCES["tfds"] = load_tfds
