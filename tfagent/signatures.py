"""The export contract TF Serving reads, in one keras-free place.

Signature and method names, the warm-up file, reading a SavedModel's
SignatureDefs from saved_model.pb, and the in-process predictor. Shared by
export.py, predict.py, evaluate.py and serving/; TensorFlow is imported only
inside the functions that need it, so importing this module stays cheap.
"""

import os

TEXT = "text"  # The input of every signature: <string>[batch], raw text.
# The second input of a sentence-pair export (--text_pair_field): <string>[batch], a text a row.
TEXT_PAIR = "text_pair"
DEFAULT_SIGNATURE = "serving_default"  # TF Serving's kDefaultServingSignatureDefKey.
CLASSIFY_SIGNATURE = "classify"  # The export's tf.Example signature.
EXPLAIN_SIGNATURE = "explain"  # Integrated gradients of the predicted class (tfagent/explain.py).
# The same toward a class the request names: inputs `text` and EXPLAIN_CLASS_INPUT, both
# <string>[batch]. A signature of its own, as TF Serving requires every input of a signature.
EXPLAIN_CLASS_SIGNATURE = "explain_class"
EXPLAIN_CLASS_INPUT = "class_name"  # <string>[batch]: a class name a text.
SERVE_TAG = "serve"  # TF Serving's default --saved_model_tags.

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# Tensor aliases of classify- and regress-shaped signatures (signature_constants.h).
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"

# Outputs of the explain signature (method predict, input `text` <string>[batch]).
EXPLAIN_TOKENS = "tokens"  # <string>[batch, T]: the text's tokens, padded with "".
EXPLAIN_ATTRIBUTIONS = "attributions"  # <float32>[batch, T]: each token's share of F(x) - F(base).
EXPLAIN_PROBABILITIES = "probabilities"  # <float32>[batch, C], as serving_default's.
EXPLAIN_CLASSES = "classes"  # <string>[batch]: the class whose logit F is (predicted or asked for).
EXPLAIN_COMPLETENESS = "completeness_error"  # <float32>[batch]: |sum(attr) - (F(x) - F(base))|.
EXPLAIN_OUTPUTS = (EXPLAIN_TOKENS, EXPLAIN_ATTRIBUTIONS, EXPLAIN_PROBABILITIES, EXPLAIN_CLASSES,
                   EXPLAIN_COMPLETENESS)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords.


def register_text_ops() -> None:
  """Imports tensorflow_text, whose ops a BERT export's graph uses.

  A missing package is an error here, not later: the SavedModel would fail to
  load with an unregistered-op message that does not name the package.
  """
  import tensorflow_text  # noqa: F401  pylint: disable=unused-import


def saved_model_path(export_dir: str) -> str:
  return os.path.join(export_dir, "saved_model.pb")


def read_saved_model(export_dir: str):
  """The SavedModel proto of `export_dir/saved_model.pb`."""
  import tensorflow as tf
  from tensorflow.core.protobuf import saved_model_pb2
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(saved_model_path(export_dir), "rb") as f:
    saved_model.ParseFromString(f.read())
  return saved_model


def parse_tags(tags: str) -> frozenset:
  """'serve,gpu' -> {'serve', 'gpu'}, as tensorflow_model_server splits --saved_model_tags."""
  return frozenset(t for t in tags.split(",") if t) if tags else frozenset()


def read_signature_defs(export_dir: str, tags=frozenset({SERVE_TAG})) -> dict:
  """name -> SignatureDef of the MetaGraph whose tag set is exactly `tags`.

  Raises ValueError naming the tags found when no MetaGraph matches, as
  TF Serving's loader does.
  """
  saved_model = read_saved_model(export_dir)
  for meta_graph in saved_model.meta_graphs:
    if frozenset(meta_graph.meta_info_def.tags) == frozenset(tags):
      return dict(meta_graph.signature_def)
  found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
  raise ValueError(
      f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}. "
      f"{export_dir} has tag-sets {found}; `saved_model_cli show --dir {export_dir}` lists them.")


def load_saved_model(export_dir: str):
  """The loaded SavedModel (tf.saved_model.load), TF Text ops registered first."""
  import tensorflow as tf
  register_text_ops()
  return tf.saved_model.load(export_dir)


def load_signature(export_dir: str, name: str = DEFAULT_SIGNATURE, loaded=None):
  """The concrete function of one signature, of `loaded` when given (no second load)."""
  return (loaded or load_saved_model(export_dir)).signatures[name]


def text_inputs(text) -> dict:
  """A signature's text inputs as keyword arguments: `{text}`, or a sentence pair's dict
  `{text, text_pair}` as it is."""
  return text if isinstance(text, dict) else {TEXT: text}


def input_spec(model):
  """A string-input Keras model's input as a tf.function spec: `<string>[batch]` named
  `text` (whatever the Keras input's name), or a sentence pair's dict of two, named by its
  keys (`text`, `text_pair`), as the signature inputs are."""
  import tensorflow as tf
  if isinstance(model.input, dict):
    return {name: tf.TensorSpec([None], tf.string, name=name) for name in model.input}
  return tf.TensorSpec([None], tf.string, name=TEXT)


def example_texts(serialized, spec):
  """The texts of serialized tf.Examples (a classify request), shaped as `spec`: feature
  `text` `<string>[batch]`, or a sentence pair's dict with `text_pair` too."""
  import tensorflow as tf
  names = list(spec) if isinstance(spec, dict) else [TEXT]
  parsed = tf.io.parse_example(serialized, {n: tf.io.FixedLenFeature([], tf.string)
                                            for n in names})
  return parsed if isinstance(spec, dict) else parsed[TEXT]


def text_rows(texts) -> list:
  """`texts` as a list of rows, all strings or all `(text, text_pair)` pairs: one string
  given alone is one text (not a text a character); a mix is a TypeError naming the row."""
  if isinstance(texts, dict):  # list() would give its keys: "text" classified as a text.
    raise TypeError("texts is a dict: give a list of texts, or of (text, text_pair) tuples.")
  rows = [texts] if isinstance(texts, (str, bytes)) else list(texts)
  pairs = bool(rows) and isinstance(rows[0], (tuple, list))
  for n, row in enumerate(rows):
    if (isinstance(row, (tuple, list)) and len(row) == 2) if pairs else isinstance(
        row, (str, bytes)):
      continue
    raise TypeError(f"texts[{n}] is {row!r}: give texts as strings, or sentence pairs as "
                    f"(text, text_pair) tuples, not a mix (texts[0] is {rows[0]!r}).")
  return rows


def text_columns(texts) -> dict:
  """Input name -> list of texts, of texts given one a row: strings, or sentence pairs'
  `(text, text_pair)` tuples (text_rows)."""
  rows = text_rows(texts)
  if rows and isinstance(rows[0], (tuple, list)):
    return {TEXT: [t[0] for t in rows], TEXT_PAIR: [t[1] for t in rows]}
  return {TEXT: rows}


def probabilities_fn(export_dir: str, loaded=None):
  """`<string>[batch] -> <float32>[batch, C]` from a SavedModel's serving_default (a sentence
  pair export's takes the dict `{text, text_pair}`)."""
  serve = load_signature(export_dir, loaded=loaded)
  return lambda text: serve(**text_inputs(text))["probabilities"]


def class_names(export_dir: str, loaded=None) -> list:
  """The export's class names in id order: its classify signature's classes on one example
  (with both features of a sentence-pair export; one that reads one text ignores the other)."""
  import tensorflow as tf
  classify = load_signature(export_dir, CLASSIFY_SIGNATURE, loaded)
  example = tf.train.Example(features=tf.train.Features(feature={
      name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))
      for name in (TEXT, TEXT_PAIR)}))
  out = classify(inputs=tf.constant([example.SerializeToString()]))
  return [c.decode("utf-8") for c in out[CLASSIFY_CLASSES].numpy()[0]]
