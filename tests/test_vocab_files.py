"""Vocabularies as SavedModel assets: odd entries survive the file, in a clean process."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import pooled_python
from tfagent.models import vocab_files, wide

# Entries a line-based file would break: line breaks (TextFileInitializer splits at "\n"
# and drops a trailing "\r"), the empty entry (it refuses empty lines), and what escaping
# could confuse them with ("%0A" beside "\n", "%" beside "").
ODD = ["a\nb", "x\r", "\ry", "\n", "%0A", "%", "", "%25", "tab\tnul\x00", "é 未",
       "k\u2028l", "j\x85", " m ", "great fun"]
NEAR_MISSES = ["a b", "a\r\nb", "x", "y", "%250A", "%%", "\r", "great", "zebra"]


def test_escape_in_the_graph_is_escape_text_and_one_to_one():
  escaped = [k.decode("utf-8") for k in vocab_files.escape(tf.constant(ODD)).numpy()]
  assert escaped == [vocab_files.escape_text(e) for e in ODD]
  assert len(set(escaped)) == len(ODD)
  assert vocab_files.fits_lines(escaped) and not vocab_files.fits_lines(ODD)


def test_a_vocabulary_that_fits_lines_is_kept_verbatim():
  vocabulary = ["great", "great fun", "%0A", "é 未", "tab\there"]
  assert vocab_files.table_keys(vocabulary) == vocabulary


RELOAD = r"""
import json, sys
import tensorflow as tf
lookup = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
print(json.dumps(lookup(grams=tf.constant(json.loads(sys.argv[2])))["ids"].numpy().tolist()))
"""


@pytest.mark.slow
def test_odd_ngrams_survive_the_asset_file_in_a_clean_process(tmp_path):
  layer = wide.make_layer(2, ODD, np.zeros((len(ODD) + 1, 2), np.float32),
                          np.zeros(2, np.float32))
  grams = ODD + NEAR_MISSES
  expected = list(range(1, len(ODD) + 1)) + [0] * len(NEAR_MISSES)
  module, folder = tf.Module(), tmp_path / "files"
  folder.mkdir()
  with vocab_files.table_from_file(layer, str(folder), vocab_files.table_keys(ODD)):
    module.table = layer.table
    module.lookup = tf.function(lambda grams: {"ids": layer.lookup(grams)},
                                input_signature=[tf.TensorSpec([None], tf.string, name="grams")])
    np.testing.assert_array_equal(module.lookup(tf.constant(grams))["ids"].numpy(), expected)
    tf.saved_model.save(module, str(tmp_path / "m"), signatures=module.lookup)
  assert os.listdir(tmp_path / "m" / "assets") == ["wide.txt"]
  assert pooled_python.clean_json(RELOAD, str(tmp_path / "m"), json.dumps(grams)) == expected
  shutil.rmtree(folder)  # Out of the scope the layer's own table is back, without the file.
  np.testing.assert_array_equal(layer.lookup(tf.constant(grams)).numpy(), expected)
