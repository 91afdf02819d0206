"""Flags of the data sources and input pipeline, shared by the train and convert entry points.

Only entry points call `define_data_flags`; library code takes a DataConfig.
"""

from absl import flags


def define_data_flags() -> None:
  """Defines the source, validation and pipeline flags (field names of DataConfig)."""
  flags.DEFINE_string("text_field", "text", "Column (CSV/TSV) or key (JSONL) holding the text.")
  flags.DEFINE_string("label_field", "label", "Column or key holding the label "
                      "(a class name or an integer id).")
  flags.DEFINE_string("test_path", "", "Official test file for csv/tsv/jsonl; without "
                      "it the file is split 80/10/10 by a seeded hash of the text.")
  flags.DEFINE_string("class_names", "", "Comma-separated class names in label order; "
                      "fixes the order and makes any other label an error.")
  flags.DEFINE_bool("normalize_labels", False, "Merge labels that differ only in case or "
                    "spacing (POS, pos); off, such labels are an error, not two classes.")
  flags.DEFINE_float("validation_fraction", 0.1, "Share of train held out for validation "
                     "when the source has its own test split (test is never touched).")
  flags.DEFINE_enum("on_bad_record", "error", ["error", "skip"], "error stops at the "
                    "first bad record naming file and line; skip counts it by reason "
                    "in data_report.json.")
  flags.DEFINE_bool("dedup", False, "Drop repeated texts and train texts also in test "
                    "(they are always counted and reported).")
  flags.DEFINE_string("tfds_data_dir", "", "TFDS data dir; empty uses TFDS's default.")
  flags.DEFINE_string("tfds_manual_dir", "", "Folder with hand-downloaded TFDS archives "
                      "for offline preparation; empty is DATA_DIR/downloads/manual.")
  flags.DEFINE_string("tfds_test_split", "test", "TFDS split used as test; GLUE hides "
                      "test labels, so use validation there.")
  flags.DEFINE_integer("cache_max_mb", 128, "Sources with less text than this are held "
                       "in memory and their token ids cached; larger ones stream from disk.")
  flags.DEFINE_integer("bucket_width", 16, "Batch texts in length buckets this many "
                       "tokens wide so little padding is computed; 0 turns it off.")
  flags.DEFINE_bool("deterministic", True, "Fixed element order for reproducible runs; "
                    "false lets parallel stages reorder elements, for speed.")
