"""Vocabularies read from files, so that a SavedModel carries them as assets, not constants.

A lookup table built from tensors (tf.lookup.KeyValueTensorInitializer, as Keras'
TextVectorization and models/wide.py build theirs) is saved in saved_model.pb as
constants: the keys and, for the wide path, their int64 ids (configs/transformer.flags:
255,251 n-grams, 3.3 MB of strings and 2.0 MB of ids). A table read by
tf.lookup.TextFileInitializer is saved as its file, in the export's assets/, which TF
Serving loads as it loads any asset. `as_assets(model)` swaps such tables in while an
export is written; the layers that can (`NgramWide`, `TextTokenizer`) have a
`vocabulary_from_file(folder)` context manager.

TextFileInitializer reads one key a line: it splits at "\\n", drops a line's trailing
"\\r" and refuses an empty line. The tokenizers make no such key (tf.strings.split cuts
at ASCII whitespace and keeps no empty token), so vocabularies are written verbatim
and looked up as they are. A vocabulary that holds one anyway (set by hand) is kept
escaped (`table_keys`), in memory and in its file, and NgramWide escapes the n-grams
alike (`escape`) before the lookup; Keras' TextVectorization, whose lookup Keras
makes, then keeps its vocabulary as constants.
"""

import contextlib
import os
import tempfile

from absl import logging
import tensorflow as tf

# "%" first, so that escaping is one to one; the empty key, which no line can be, is "%".
ESCAPES = (("%", "%25"), ("\n", "%0A"), ("\r", "%0D"))
EMPTY = "%"


def fits_lines(vocabulary) -> bool:
  """Whether every entry can be a line of a TextFileInitializer file as it is."""
  return all(entry and "\n" not in entry and "\r" not in entry for entry in vocabulary)


def escape_text(entry: str) -> str:
  """One vocabulary entry as an escaped line: no line break, never empty."""
  for raw, code in ESCAPES:
    entry = entry.replace(raw, code)
  return entry or EMPTY


def escape(keys: tf.Tensor) -> tf.Tensor:
  """`<string>[n]` keys -> `<string>[n]`, each escaped as `escape_text` escapes it."""
  escaped = keys
  for raw, code in ESCAPES:
    escaped = tf.strings.regex_replace(escaped, raw, code)
  return tf.where(tf.equal(keys, ""), EMPTY, escaped)


def table_keys(vocabulary) -> list:
  """The keys a table holds for `vocabulary`: its entries, all escaped if one is no line."""
  return list(vocabulary) if fits_lines(vocabulary) else [escape_text(e) for e in vocabulary]


def memory_table(keys, first_id: int, default: int) -> tf.lookup.StaticHashTable:
  """A table from `keys[i]` to `first_id + i`, `default` else, its keys graph constants."""
  with tf.init_scope():
    values = tf.range(first_id, first_id + len(keys), dtype=tf.int64)
    if not keys:  # A table cannot be empty: "" maps to the default too.
      keys, values = [""], tf.constant([default], tf.int64)
    initializer = tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string), values)
    return tf.lookup.StaticHashTable(initializer, default)


def file_table(path: str, first_id: int, default: int) -> tf.lookup.StaticHashTable:
  """A table from each line of `path` to `first_id` + its line number; `default` else."""
  with tf.init_scope():
    initializer = tf.lookup.TextFileInitializer(
        path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
        tf.lookup.TextFileIndex.LINE_NUMBER, value_index_offset=first_id)
    return tf.lookup.StaticHashTable(initializer, default)


def write_lines(folder: str, name: str, lines) -> str:
  """Writes `lines` (no line break in any, none empty) to a new file in `folder`; its path."""
  path, n = os.path.join(folder, f"{name}.txt"), 1
  while os.path.exists(path):  # Two layers of one name: the asset names must differ.
    n += 1
    path = os.path.join(folder, f"{name}_{n}.txt")
  with open(path, "wb") as f:
    f.write("".join(f"{line}\n" for line in lines).encode("utf-8"))
  return path


@contextlib.contextmanager
def table_from_file(layer, folder: str, keys):
  """Within the scope, `layer.table` (`keys[i]` -> i + 1, else 0) reads `keys` from a file
  written to `folder`; its in-memory table is set back after."""
  kept = layer.table
  if keys:
    layer.table = file_table(write_lines(folder, layer.name, keys), first_id=1, default=0)
  try:
    yield
  finally:
    layer.table = kept


@contextlib.contextmanager
def keras_lookup_from_file(layer, folder: str, name: str):
  """Within the scope, Keras lookup `layer` (TextVectorization, StringLookup) reads its
  vocabulary from a file in `folder`; its in-memory vocabulary is set back after."""
  vocabulary = layer.get_vocabulary()
  tokens = layer.get_vocabulary(include_special_tokens=False)
  if not fits_lines(tokens) or not tokens:
    if tokens:
      logging.info("%s: a token of its vocabulary holds a line break or is empty; the "
                   "vocabulary stays in saved_model.pb.", name)
    yield
    return
  layer.set_vocabulary(write_lines(folder, name, tokens))
  try:
    yield
  finally:
    layer.set_vocabulary(vocabulary)


@contextlib.contextmanager
def as_assets(model):
  """Within the scope, the vocabularies of `model`'s layers that can (those with
  `vocabulary_from_file`) are read from files, which a SavedModel written then carries
  in assets/."""
  layers = [t for t in tf.train.TrackableView(model).descendants()
            if callable(getattr(t, "vocabulary_from_file", None))]
  with tempfile.TemporaryDirectory(prefix="tfagent-vocabulary-") as folder:
    with contextlib.ExitStack() as stack:
      for layer in layers:
        stack.enter_context(layer.vocabulary_from_file(folder))
      yield
