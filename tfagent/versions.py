"""The export layout TF Serving reads: `BASE/<integer version>/saved_model.pb`.

No Keras here, so the server, `predict` and the bench scripts find versions
without importing the training stack; paths go through tf.io.gfile (gs://, ram://).
"""

import os

import tensorflow as tf

from tfagent.errors import ConfigError
from tfagent.signatures import saved_model_path


def list_versions(base_path: str) -> dict:
  """Integer version directories holding a saved_model.pb: version -> path."""
  try:
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(base_path)]
  except tf.errors.OpError:
    return {}
  return {int(n): os.path.join(base_path, n) for n in names if is_version(n)
          and tf.io.gfile.exists(saved_model_path(os.path.join(base_path, n)))}


def is_version(name: str) -> bool:
  """A version folder's name: ASCII digits ("²" is a digit to str.isdigit, not to int) of an
  int64, as TF Serving parses them (a larger number is no version: it skips the folder)."""
  return name.isascii() and name.isdigit() and int(name) < 2**63


def next_version(base_path: str) -> int:
  """One more than the largest integer directory, complete or not (1 if none)."""
  try:
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(base_path)]
  except tf.errors.OpError:
    return 1
  return max((int(n) for n in names if is_version(n)), default=0) + 1


def resolve_saved_model(path: str) -> str:
  """A version directory as it is, or a base path's latest complete version."""
  if tf.io.gfile.exists(saved_model_path(path)):
    return path
  versions = list_versions(path)
  if versions:
    return versions[max(versions)]
  raise ConfigError(f"{path}: no SavedModel here; expected a version directory "
                    "with saved_model.pb or a base path holding integer versions.")
