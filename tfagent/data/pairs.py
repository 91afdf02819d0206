"""Sentence pairs (`--text_pair_field`): two texts a record, for NLI or paraphrase tasks.

A record's second text comes from the column (csv/tsv), key (jsonl) or feature (TFDS)
that --text_pair_field names; a record without it, or with it blank, is a bad record
naming its file and line. Splits and duplicates follow both texts (`content`). Through
tf.data a pair is the features dict `{"text": <string>[], "text_pair": <string>[]}`,
named as the export's inputs, so every stage passes it to the model as it is.
"""

import numpy as np
import tensorflow as tf

from tfagent.errors import ConfigError
from tfagent.signatures import TEXT, TEXT_PAIR

# Sources whose records can hold a second text; dir: and embedded: hold one text a file/line.
PAIR_SOURCES = ("csv", "tsv", "jsonl", "tfrecord", "tfds")
SEPARATOR = "\0"  # Joins a pair's texts for hashing: no text holds NUL (records.check_text).
SHOWN = " \u21c4 "  # " ⇄ ": between a pair's texts where one line shows both (TensorBoard).


def is_pair(data_cfg) -> bool:
  return bool(getattr(data_cfg, "text_pair_field", ""))


def check_source(kind: str, data_cfg) -> None:
  """Fails when --text_pair_field is given a source whose records hold one text each."""
  if is_pair(data_cfg) and kind not in PAIR_SOURCES:
    raise ConfigError(f"--text_pair_field={data_cfg.text_pair_field}: --dataset="
                      f"{data_cfg.dataset} holds one text a record; sentence pairs come from "
                      f"{', '.join(k + ':' for k in PAIR_SOURCES)} (leave --text_pair_field "
                      "empty for one text a record).")


def content(record) -> str:
  """What identifies a record's text for its split and duplicates: the text, or both texts,
  each with its spacing collapsed, joined by SEPARATOR."""
  if record.text_pair is None:
    return record.text
  return SEPARATOR.join(" ".join(t.split()) for t in (record.text, record.text_pair))


def text_of(record):
  """A record's text as the splits hold it: a string, or a `(text, text_pair)` tuple."""
  return record.text if record.text_pair is None else (record.text, record.text_pair)


def features(text):
  """One element's text for tf.data: the string, or a pair's features dict."""
  return {TEXT: text[0], TEXT_PAIR: text[1]} if isinstance(text, tuple) else text


def text_tensors(texts: list, pair: bool):
  """`<string>[n]` of `texts`, or a pair's features dict of two `<string>[n]`."""
  if not pair:
    return tf.constant(texts, tf.string)
  firsts, seconds = ([t[0] for t in texts], [t[1] for t in texts])
  return {TEXT: tf.constant(firsts, tf.string), TEXT_PAIR: tf.constant(seconds, tf.string)}


def text_spec(pair: bool):
  """The spec of one element's text: `<string>[]`, or a pair's dict of two."""
  one = tf.TensorSpec([], tf.string)
  return {TEXT: one, TEXT_PAIR: one} if pair else one


def single_texts(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Every text of a dataset of `(text, label)` elements, a pair's two one after the other:
  what a vocabulary is learned from."""
  texts = ds.map(lambda text, _: text)
  if isinstance(texts.element_spec, dict):
    return texts.map(lambda f: tf.stack([f[TEXT], f[TEXT_PAIR]])).unbatch()
  return texts


def joined(text, separator: str = SEPARATOR):
  """An element's or a batch's text (numpy bytes) as bytes: a pair's two joined by `separator`
  (SEPARATOR to hash it, SHOWN for a table cell); a single text as it is."""
  if not isinstance(text, dict):
    return text
  first, second, sep = text[TEXT], text[TEXT_PAIR], separator.encode("utf-8")
  if isinstance(first, bytes):
    return first + sep + second
  return [a + sep + b for a, b in zip(first, second)]


def rows(text) -> list:
  """A batch's texts (numpy or tensors) as Python strings, one a row: a pair's as
  `(text, text_pair)`, as the in-memory splits hold them."""
  if isinstance(text, dict):
    return list(zip(rows(text[TEXT]), rows(text[TEXT_PAIR])))
  return [t.decode("utf-8", "replace") for t in np.asarray(text).tolist()]


def split_rows(ds: tf.data.Dataset) -> list:
  """The texts of a (small) dataset of `(text, label)` elements, as `rows` gives them."""
  return [row for text, _ in ds.batch(256).as_numpy_iterator() for row in rows(text)]
