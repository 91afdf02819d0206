"""Classifies texts with an exported SavedModel and prints one JSON line each.

  python -m tfagent.predict --saved_model=saved_models/quickstart "some text" ...
  cat texts.txt | python -m tfagent.predict --saved_model=saved_models/quickstart
"""

import json
import sys

from absl import app, flags, logging
import tensorflow as tf

from tfagent import signatures
from tfagent.errors import TfagentError
from tfagent.versions import resolve_saved_model

FLAGS = flags.FLAGS


def load_predictor(path: str):
  """Returns `texts -> list of dicts` backed by the SavedModel's serving_default."""
  serve = signatures.load_signature(resolve_saved_model(path))

  def predict(texts: list) -> list:
    out = serve(text=tf.constant(texts, tf.string))
    probs = out["probabilities"].numpy()
    return [{"text": text, "class": out["classes"][i].numpy().decode("utf-8"),
             "class_id": int(out["class_ids"][i]),
             "probabilities": [round(float(p), 6) for p in probs[i]]}
            for i, text in enumerate(texts)]
  return predict


def read_texts(args: list, stream) -> list:
  """Texts from the command line, else one per non-empty line of `stream`."""
  if args:
    return list(args)
  return [line.rstrip("\n") for line in stream if line.strip()]


def define_flags() -> None:
  """Defines this entry point's flags; called only when run as a program."""
  flags.DEFINE_string("saved_model", None, "SavedModel version dir, or a base path "
                      "(saved_models/NAME) whose latest version is used.")
  flags.DEFINE_integer("batch_size", 256, "Texts per model call.")
  flags.mark_flag_as_required("saved_model")


def main(argv):
  try:
    predict = load_predictor(FLAGS.saved_model)
  except TfagentError as e:
    logging.error("%s", e)
    sys.exit(1)
  texts = read_texts(argv[1:], sys.stdin)
  for start in range(0, len(texts), FLAGS.batch_size):
    for row in predict(texts[start:start + FLAGS.batch_size]):
      sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
  define_flags()
  app.run(main)
