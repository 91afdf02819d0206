"""Classifies texts with an exported SavedModel, streaming: texts in, one row each out.

  tfagent predict --saved_model=saved_models/quickstart "some text" "another"
  cat texts.txt | tfagent predict --saved_model=saved_models/quickstart
  tfagent predict --saved_model=saved_models/quickstart --input=new.csv --output=pred.csv --top_k=2

  tfagent predict --saved_model=saved_models/quickstart --explain --explain_html=why.html "text"
  tfagent predict --saved_model=saved_models/quickstart --explain_class=negative "text"

Input: texts given as arguments, a csv/tsv/jsonl file (`.gz` too; the text in
--text_field), or one text per non-blank line of standard input. A sentence-pair export
(trained with --text_pair_field) reads its pairs from --input, the second text in
--text_pair_field:

  tfagent predict --saved_model=saved_models/pairs --input=pairs.csv --text_field=premise \
      --text_pair_field=hypothesis

Output: JSON lines (the text, its class, class id and every class's probability) or csv
(--output=*.csv or --format=csv), to standard output or --output. Texts are read,
classified and written --batch_size at a time, so the input may be larger than memory.
With --explain, each text's tokens and their attributions (the export's `explain`
signature) instead: coloured on a terminal, `token(+0.42)` otherwise, JSON lines with
--format=jsonl; --explain_html also writes them as one self-contained HTML page.
--explain_class=NAME explains toward that class instead of the predicted one.
"""

import csv
import functools
import itertools
import json
import os
import sys

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

from tfagent import cli, explain_view, fileio, signatures
from tfagent.data import records
from tfagent.data.pairs import text_of
from tfagent.errors import ConfigError, DataError
from tfagent.versions import resolve_saved_model

FLAGS = flags.FLAGS
FORMATS = ("jsonl", "csv")
LABEL_DELIMITER = "|"  # A multilabel csv's labels, as --label_delimiter's default reads them back.
# Texts a model call from the Python API; an explain call holds steps x texts inputs.
PREDICT_BATCH, EXPLAIN_BATCH = 256, 32


class Predictor:
  """Texts -> rows, backed by a SavedModel's serving_default (and explain) signature."""

  def __init__(self, path: str):
    self.export_dir = export_dir = resolve_saved_model(path)
    self.loaded = signatures.load_saved_model(export_dir)  # Loaded once, for every signature.
    self.serve = signatures.load_signature(export_dir, loaded=self.loaded)
    self.class_names = signatures.class_names(export_dir, self.loaded)
    # A sentence-pair export (--text_pair_field) takes text_pair beside text.
    self.pairs = signatures.TEXT_PAIR in self.serve.structured_input_signature[1]
    self.multilabel = "label_mask" in self.serve.structured_outputs  # Its thresholds decide.
    self._explainers = {}

  def explainer(self, class_name: str = None):
    """The export's explain (or, with `class_name`, explain_class) signature as `texts ->
    rows`; ConfigError when the export has none or `class_name` is not one of its classes."""
    if class_name is not None and class_name not in self.class_names:
      raise ConfigError(f"--explain_class={class_name!r}: not a class of {self.export_dir}; "
                        f"valid: {', '.join(self.class_names)}.")
    by_class = class_name is not None
    if by_class not in self._explainers:
      self._explainers[by_class] = explain_view.load_explainer(self.export_dir, by_class,
                                                               self.loaded)
    return self._explainers[by_class]

  def explain(self, texts: list, class_name: str = None) -> list:
    """One dict a text: text, class, probabilities, tokens (padding dropped), their
    attributions toward the predicted class (or toward `class_name`, then "class"),
    completeness_error (tfagent/explain_view.py). EXPLAIN_BATCH texts a model call."""
    explain = self.explainer(class_name)
    return [row for batch in batches(signatures.text_rows(texts), EXPLAIN_BATCH)
            for row in explain(batch, class_name)]

  def predict(self, texts: list, top_k: int = 0) -> list:
    """One dict a text: text, class, class_id, probabilities in class order (top_k when > 0).
    A multilabel export's rows hold `labels`, the names its thresholds select, instead of
    class and class_id (its argmax is not its answer). A sentence-pair export takes
    `(text, text_pair)` tuples; its rows hold text_pair too. One string alone is one text.
    PREDICT_BATCH texts a model call, so memory does not grow with the input."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
      raise ValueError(f"top_k={top_k!r}: give a whole number of classes, 0 for all.")
    return [row for batch in batches(signatures.text_rows(texts), PREDICT_BATCH)
            for row in self._predict(batch, top_k)]

  def _predict(self, texts: list, top_k: int) -> list:
    """`predict` of one batch."""
    columns = self.columns(texts)
    out = self.serve(**{name: tf.constant(c, tf.string) for name, c in columns.items()})
    probs = out["probabilities"].numpy()
    masks = out["label_mask"].numpy() if "label_mask" in out else [None] * len(probs)
    rows = []
    for *text, p, mask in zip(*columns.values(), probs, masks):
      best = int(p.argmax())
      row = {**dict(zip(columns, text)), "class": self.class_names[best], "class_id": best,
             "probabilities": [round(float(v), 6) for v in p]}
      if mask is not None:
        del row["class"], row["class_id"]
        row["labels"] = [n for n, on in zip(self.class_names, mask) if on]
      if top_k:
        order = np.argsort(-p, kind="stable")[:top_k]
        row["top_k"] = [[self.class_names[i], round(float(p[i]), 6)] for i in order]
      rows.append(row)
    return rows

  def columns(self, texts: list) -> dict:
    """Input name -> texts (signatures.text_columns), checked against the export."""
    columns = signatures.text_columns(texts)
    self.check_pairs(signatures.TEXT_PAIR in columns)
    return columns

  def check_pairs(self, pairs: bool) -> None:
    """A ConfigError when sentence pairs (`pairs`), or single texts, do not fit the export."""
    if pairs and not self.pairs:
      raise ConfigError(f"{self.export_dir} reads one text a row (trained without "
                        "--text_pair_field); give texts, not pairs (no --text_pair_field).")
    if self.pairs and not pairs:
      raise ConfigError(f"{self.export_dir} takes text and text_pair (trained with "
                        "--text_pair_field): give (text, text_pair) pairs; on the command "
                        "line --input=FILE with --text_field and --text_pair_field.")


def file_texts(path: str, text_field: str, text_pair_field: str = ""):
  """Yields the texts of a csv/tsv/jsonl file (`.gz` too), in order; a bad one is an error.

  Read as training reads its files (tfagent.data.records), so a text that
  training takes (a 200 KiB csv field, a byte-order mark) is taken here too. With
  `text_pair_field`, `(text, text_pair)` tuples.
  """
  name = path[:-3] if path.endswith(".gz") else path
  kind = os.path.splitext(name)[1].lower().lstrip(".")
  if kind not in ("csv", "tsv", "jsonl"):
    raise ConfigError(f"--input={path}: expected a .csv, .tsv or .jsonl file (or .gz of "
                      "one), or no --input to read texts from arguments or standard input.")
  read = (records.read_jsonl if kind == "jsonl" else
          functools.partial(records.read_delimited, delimiter="," if kind == "csv" else "\t"))
  for record in read(path, fields=(text_field,), pair=text_pair_field):
    if isinstance(record, records.BadRecord):
      raise DataError(str(record))
    yield text_of(record)


def input_texts(args: list, path: str, text_field: str, stdin, text_pair_field: str = ""):
  """The texts to classify: arguments, else the file, else non-blank lines of stdin; sentence
  pairs (`text_pair_field`) come from the file only."""
  if args and path:
    raise ConfigError("Give texts as arguments or --input, not both.")
  if text_pair_field and not path:
    raise ConfigError(f"--text_pair_field={text_pair_field}: sentence pairs are read from "
                      "--input=FILE (csv, tsv or jsonl with --text_field and "
                      "--text_pair_field), not from arguments or standard input.")
  if args:
    return iter(args)
  if path:
    return file_texts(path, text_field, text_pair_field)
  return (line.rstrip("\r\n") for line in stdin if line.strip())


def batches(texts, size: int):
  """Lists of up to `size` texts from an iterator, read lazily."""
  texts = iter(texts)
  while True:
    batch = list(itertools.islice(texts, size))
    if not batch:
      return
    yield batch


def output_format(output: str, fmt: str) -> str:
  """--format, else the output file's extension, else JSON lines."""
  if fmt:
    return fmt
  return "csv" if output.lower().endswith((".csv", ".csv.gz")) else "jsonl"


class RowWriter:
  """Writes rows as JSON lines, or csv with a header of the class names. A multilabel export's
  csv has `labels` (those its thresholds select, joined by LABEL_DELIMITER) where others have
  `class`."""

  def __init__(self, out, fmt: str, class_names: list, top_k: int, pairs: bool = False,
               multilabel: bool = False):
    top_k = min(top_k, len(class_names))  # Every row lists that many: a header to match.
    self.out, self.fmt, self.class_names, self.top_k = out, fmt, class_names, top_k
    self.texts = [signatures.TEXT, signatures.TEXT_PAIR][:1 + pairs]  # Their columns.
    self.decided = "labels" if multilabel else "class"
    self.csv = None
    joined = [n for n in class_names if LABEL_DELIMITER in n] if multilabel else []
    if fmt == "csv" and joined:  # "a|b" could not be told from the labels a and b.
      raise ConfigError(f"class names {joined} hold {LABEL_DELIMITER!r}, which joins a "
                        "multilabel csv's labels: write JSON lines (--format=jsonl).")
    if fmt == "csv":
      self.csv = csv.writer(out)
      extra = ([h for k in range(1, top_k + 1) for h in (f"class_{k}", f"probability_{k}")]
               if top_k else [f"probability_{name}" for name in class_names])
      self.csv.writerow([*self.texts, self.decided, *extra])

  def write(self, row: dict) -> None:
    if self.csv is None:
      self.out.write(json.dumps(row, ensure_ascii=False) + "\n")
      return
    texts = [row[name] for name in self.texts]
    decided = row[self.decided]
    decided = LABEL_DELIMITER.join(decided) if isinstance(decided, list) else decided
    if self.top_k:
      self.csv.writerow([*texts, decided, *itertools.chain(*row["top_k"])])
    else:
      self.csv.writerow([*texts, decided, *row["probabilities"]])


def predict_stream(predictor: Predictor, texts, out, fmt: str, top_k: int,
                   batch_size: int) -> int:
  """Classifies `texts` batch by batch and writes each row to `out`; returns the count."""
  writer, n = RowWriter(out, fmt, predictor.class_names, top_k, predictor.pairs,
                       predictor.multilabel), 0
  for batch in batches(texts, batch_size):
    for row in predictor.predict(batch, top_k):
      writer.write(row)
    n += len(batch)
  return n


def define_flags(flag_values=FLAGS) -> None:
  """Defines this entry point's flags; called only when run as a program."""
  own = {"module_name": __name__, "flag_values": flag_values}
  flags.DEFINE_string("saved_model", None, "SavedModel version dir, or a base path "
                      "(saved_models/NAME) whose latest version is used.", **own)
  flags.DEFINE_string("input", "", "csv, tsv or jsonl file (.gz too) of texts; empty: the "
                      "arguments, else one text per line of standard input.", **own)
  flags.DEFINE_string("text_field", "text", "Column (csv/tsv) or key (jsonl) of the text.", **own)
  flags.DEFINE_string("text_pair_field", "", "Sentence-pair exports: column or key of each "
                      "row's second text in --input; empty: one text a row.", **own)
  flags.DEFINE_string("output", "", "File to write (gzip-compressed when it ends in .gz); "
                      "empty: standard output.", **own)
  flags.DEFINE_enum("format", "", ["", *FORMATS], "jsonl or csv; empty: csv for an "
                    "--output ending in .csv, else jsonl.", **own)
  flags.DEFINE_integer("top_k", 0, "Also list the K most probable classes of each text "
                       "(csv: instead of one column per class); 0: off.", **own)
  flags.DEFINE_integer("batch_size", 256, "Texts per model call (and held in memory).", **own)
  flags.DEFINE_bool("explain", False, "Show why: each text's tokens with their attribution "
                    "toward the predicted class (the export's `explain` signature, integrated "
                    "gradients), coloured on a terminal, `token(+0.42)` otherwise, JSON lines "
                    "with --format=jsonl or an --output ending in .jsonl. Costs several model "
                    "calls a text.", **own)
  flags.DEFINE_string("explain_html", "", "Also write the explanations as one self-contained "
                      "HTML page to this file (implies --explain), to share or to read long "
                      "texts; empty: none.", **own)
  flags.DEFINE_string("explain_class", "", "Explain toward this class (a class name of the "
                      "export) instead of each text's predicted class, e.g. why a text is "
                      "not `negative` (implies --explain; the export's `explain_class` "
                      "signature); empty: the predicted class.", **own)
  flags.mark_flag_as_required("saved_model", flag_values=flag_values)


def explain_format(fmt: str, output: str, top_k: int) -> str:
  """--explain's output: "text" (the terminal view) or "jsonl" (one row a line)."""
  if top_k or output_format(output, fmt) == "csv":
    raise ConfigError("--explain writes each text's tokens and scores as text, or as JSON "
                      "lines with --format=jsonl; not with --top_k or csv (--format=csv, an "
                      "--output ending in .csv).")
  if fmt:
    return fmt
  return "jsonl" if output.lower().endswith((".jsonl", ".jsonl.gz", ".json")) else "text"


def explain_stream(predictor: Predictor, texts, out, fmt: str, page, batch_size: int,
                   class_name: str = None) -> int:
  """Explains `texts` (toward `class_name`, else the predicted class) batch by batch: each
  row to `out` (the terminal view, coloured when `fmt` is "colour", or a JSON line) and,
  with a `page`, as an HTML section; returns the count."""
  n, names = 0, predictor.class_names
  for batch in batches(texts, batch_size):
    for row in predictor.explain(batch, class_name):
      out.write(json.dumps(row, ensure_ascii=False) + "\n" if fmt == "jsonl" else
                explain_view.terminal(row, colour=fmt == "colour", class_names=names))
      if page is not None:
        page.write(explain_view.html_section(row, names))
    n += len(batch)
  return n


def run(argv: list) -> None:
  """`tfagent predict` from parsed flags: predictions, or explanations with --explain."""
  if FLAGS.top_k < 0 or FLAGS.batch_size < 1:
    raise ConfigError("--top_k must be 0 or more and --batch_size 1 or more.")
  fileio.check_filesystems({"saved_model": FLAGS.saved_model, "input": FLAGS.input,
                            "output": FLAGS.output, "explain_html": FLAGS.explain_html})
  explain = FLAGS.explain or bool(FLAGS.explain_html) or bool(FLAGS.explain_class)
  class_name = FLAGS.explain_class or None
  fmt = (explain_format(FLAGS.format, FLAGS.output, FLAGS.top_k) if explain
         else output_format(FLAGS.output, FLAGS.format))
  predictor = Predictor(FLAGS.saved_model)
  predictor.check_pairs(bool(FLAGS.text_pair_field))  # Before any input is read.
  if explain:
    predictor.explainer(class_name)  # A missing signature or class: an error before input.
  texts = input_texts(argv[1:], FLAGS.input, FLAGS.text_field, sys.stdin, FLAGS.text_pair_field)
  with (fileio.atomic_output(FLAGS.output, sys.stdout) as out,
        fileio.atomic_output(FLAGS.explain_html) as page):
    if not explain:
      n = predict_stream(predictor, texts, out, fmt, FLAGS.top_k, FLAGS.batch_size)
    else:
      if fmt == "text" and not FLAGS.output and explain_view.use_colour(sys.stdout):
        fmt = "colour"
      if page is not None:
        page.write(explain_view.html_head(class_name))
      n = explain_stream(predictor, texts, out, fmt, page, FLAGS.batch_size, class_name)
      if page is not None:
        page.write(explain_view.HTML_TAIL)
  for path in filter(None, (FLAGS.output, FLAGS.explain_html)):
    logging.info("Wrote %d %s to %s.", n, "explanations" if explain else "predictions", path)


def main(argv):
  cli.run_main(lambda: run(argv))

if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(__doc__, [__name__]))
