"""Data stage: sources, validation, splits and tf.data pipelines."""

from tfagent.data.pairs import is_pair, joined, rows, single_texts, split_rows
from tfagent.data.pipeline import batched, count_examples, make_input_fn
from tfagent.data.sources import DatasetInfo, SPLITS, load_all, load_splits, write_report
# Importing these registers their source kinds in sources.SOURCES.
from tfagent.data import embedded, files, tfds_source, tfrecord  # noqa: F401  isort: skip
