"""Where users see an export's `explain` signature: its rows, a terminal view, an HTML page.

Keras-free: TensorFlow is imported only inside `load_explainer`, so `tfagent
predict`, the Python API and the TensorBoard summary share this without a
model library. A row is one text's explanation:

  {"text": str, "class": str, "probabilities": [C floats], "tokens": [n str],
   "attributions": [n floats], "completeness_error": float}

Attributions are integrated gradients toward the predicted class (or, from the
`explain_class` signature, toward the class asked for, which is then "class"):
positive pushes toward it, negative away (docs/python_api.md#explain).
"""

import html
import os

from tfagent import model_card, signatures
from tfagent.errors import ConfigError

# The export's `explain` signature (tfagent/signatures.py holds the contract).
EXPLAIN_SIGNATURE = signatures.EXPLAIN_SIGNATURE
EXPLAIN_CLASS_SIGNATURE = signatures.EXPLAIN_CLASS_SIGNATURE
EXPLAIN_INPUT = "text"
TOKENS = signatures.EXPLAIN_TOKENS
ATTRIBUTIONS = signatures.EXPLAIN_ATTRIBUTIONS
PROBABILITIES = signatures.EXPLAIN_PROBABILITIES
CLASSES = signatures.EXPLAIN_CLASSES
COMPLETENESS_ERROR = signatures.EXPLAIN_COMPLETENESS

TOP_TOKENS = 5  # Tokens the TensorBoard table lists a text: enough to see why, one line.
RESET = "\x1b[0m"
# 256-colour backgrounds, faint to strong, by sign; strong ones take white text.
GREENS, REDS = (194, 120, 28), (224, 210, 160)


def has_explain(export_dir: str, name: str = EXPLAIN_SIGNATURE) -> bool:
  """Whether the export at `export_dir` carries the `explain` (or `name`) signature."""
  return name in signatures.read_signature_defs(export_dir)


def missing_explain_error(export_dir: str, name: str = EXPLAIN_SIGNATURE) -> ConfigError:
  """The error for an export without the signature: a task that has none, or it predates
  explanations."""
  defs = signatures.read_signature_defs(export_dir)
  found = ", ".join(sorted(defs))
  feature, flags = (("explanations", "--explain and --explain_html") if name == EXPLAIN_SIGNATURE
                    else ("explanations toward a named class", "--explain_class"))
  serve = defs.get(signatures.DEFAULT_SIGNATURE)
  task = ("a multilabel export (--task=multilabel): integrated gradients here attribute one "
          "softmax class, and its labels are independent sigmoids" if serve is not None
          and "label_mask" in serve.outputs else
          "a sentence-pair export (--text_pair_field): integrated gradients here attribute "
          "the tokens of one text" if serve is not None and signatures.TEXT_PAIR in serve.inputs
          else "")
  if task:
    return ConfigError(f"{export_dir} has no '{name}' signature (it has: {found}): it is "
                       f"{task}, so {flags} do not apply to it (docs/tasks.md).")
  if exported_without_explain(export_dir):
    return ConfigError(f"{export_dir} has no '{name}' signature (it has: {found}): it was "
                       "exported with --explain_steps=0, which leaves explanations out. "
                       f"Re-export it with --explain_steps above 0 (64 by default); {flags} "
                       "need that.")
  return ConfigError(
      f"{export_dir} has no '{name}' signature (it has: {found}): it was exported before "
      f"{feature} existed. Re-export it (tfagent train with the same flagfile) to explain "
      f"its predictions; {flags} need that.")


def exported_without_explain(export_dir: str) -> bool:
  """Whether the export's model card says it was made with --explain_steps=0."""
  card = model_card.read(export_dir)
  return card.get("config", {}).get("export", {}).get("explain_steps") == 0


def load_explainer(export_dir: str, by_class: bool = False, loaded=None):
  """`(texts, class_name=None) -> [row, ...]` from the export's explain signature, or with
  `by_class` its explain_class signature (`class_name`: one class for every text);
  ConfigError without it. `loaded`: the SavedModel, already loaded."""
  name = EXPLAIN_CLASS_SIGNATURE if by_class else EXPLAIN_SIGNATURE
  if not has_explain(export_dir, name):
    raise missing_explain_error(export_dir, name)
  import tensorflow as tf
  explain = signatures.load_signature(export_dir, name, loaded)

  def run(texts: list, class_name: str = None) -> list:
    inputs = {EXPLAIN_INPUT: tf.constant(list(texts), tf.string)}
    if by_class:
      inputs[signatures.EXPLAIN_CLASS_INPUT] = tf.constant([class_name] * len(texts), tf.string)
    out = explain(**inputs)
    return rows_from_outputs(texts, {k: v.numpy() for k, v in out.items()})
  return run


def rows_from_outputs(texts: list, out: dict) -> list:
  """The signature's outputs (numpy, `[batch, ...]`) -> one row a text, padding dropped."""
  rows = []
  for i, text in enumerate(texts):
    tokens = [t.decode("utf-8", "replace") for t in out[TOKENS][i]]
    n = len(tokens)
    while n and not tokens[n - 1]:  # Padding is "" at the end only.
      n -= 1
    rows.append({"text": text, "class": _text(out[CLASSES][i]),
                 "probabilities": [round(float(p), 6) for p in out[PROBABILITIES][i]],
                 "tokens": tokens[:n],
                 "attributions": [float(a) for a in out[ATTRIBUTIONS][i][:n]],
                 "completeness_error": float(out[COMPLETENESS_ERROR][i])})
  return rows


def _text(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def top_tokens(row: dict, k: int = TOP_TOKENS) -> list:
  """The `k` (token, attribution) pairs of largest |attribution|, largest first."""
  pairs = list(zip(row["tokens"], row["attributions"]))
  return sorted(pairs, key=lambda p: -abs(p[1]))[:k]


def class_probability(row: dict, class_names=None) -> float:
  """The row's class's probability: by name in `class_names` (in id order) when given,
  else the largest (the predicted class's, which `explain` rows hold)."""
  if class_names and row["class"] in class_names:
    return row["probabilities"][list(class_names).index(row["class"])]
  return max(row["probabilities"])


def heading(row: dict, class_names=None) -> str:
  """`class probability`; for a row toward a class that was not predicted (explain_class),
  `toward class probability (predicted other probability)`, so it is not read as the answer."""
  p = class_probability(row, class_names)
  probabilities = list(row["probabilities"])
  best = probabilities.index(max(probabilities))
  if class_names and class_names[best] != row["class"]:
    return (f"toward {row['class']} {p:.3f} (predicted {class_names[best]} "
            f"{probabilities[best]:.3f})")
  return f"{row['class']} {p:.3f}"


def use_colour(stream) -> bool:
  """Colour for a terminal, unless NO_COLOR is set (no-color.org)."""
  return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")


def _strength(score: float, scale: float) -> int:
  """0, 1 or 2: how strong a score is beside the text's largest |score|."""
  share = abs(score) / scale if scale > 0 else 0.0
  return 0 if share < 1 / 3 else 1 if share < 2 / 3 else 2


def _coloured(token: str, score: float, scale: float) -> str:
  level = _strength(score, scale)
  background = (GREENS if score >= 0 else REDS)[level]
  foreground = 15 if level == 2 else 16
  return f"\x1b[48;5;{background};38;5;{foreground}m{token}{RESET}"


def terminal(row: dict, colour: bool, class_names=None) -> str:
  """Two lines: class, probability and the text; then each token with its score
  (`token(+0.42)`), or coloured by sign and strength on a terminal."""
  head = (f"{heading(row, class_names)} (completeness error "
          f"{row['completeness_error']:.2g}): {row['text']}")
  scale = max((abs(a) for a in row["attributions"]), default=0.0)
  if colour:
    body = " ".join(_coloured(t, a, scale) for t, a in zip(row["tokens"], row["attributions"]))
  else:
    body = " ".join(f"{t}({a:+.2f})" for t, a in zip(row["tokens"], row["attributions"]))
  return f"{head}\n  {body}\n"


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tfagent explanations</title>
<style>
body { font: 15px/1.6 system-ui, sans-serif; margin: 2em; max-width: 60em; }
section { border-top: 1px solid #ccc; padding: .6em 0; }
.meta { color: #444; font-size: 90%; } .text { white-space: pre-wrap; }
.tok { padding: 0 .15em; border-radius: .2em; }
</style></head><body>
<h1>Why the model said this</h1>
<p class="meta">Integrated gradients toward {toward}: <span class="tok"
style="background: rgba(0,150,0,.5)">green</span> pushes toward it, <span class="tok"
style="background: rgba(210,0,0,.5)">red</span> away; the strength is beside the text's
largest score. Hover a token for its score.</p>
"""
HTML_TAIL = "</body></html>\n"


def html_head(class_name: str = None) -> str:
  """The page's head: what the colours mean, toward `class_name` (--explain_class) if given."""
  toward = (f"the class {html.escape(class_name)} (--explain_class), whatever each text's "
            "prediction" if class_name else "the predicted class")
  return _HTML_HEAD.replace("{toward}", toward)


def html_token(token: str, score: float, scale: float) -> str:
  """One token as a span carrying its score (`data-score`, `title`), coloured by sign."""
  alpha = 0.08 + 0.72 * (abs(score) / scale if scale > 0 else 0.0)
  rgb = "0,150,0" if score >= 0 else "210,0,0"
  return (f'<span class="tok" data-score="{score:.6g}" title="{score:+.4f}" '
          f'style="background: rgba({rgb},{alpha:.2f})">{html.escape(token)}</span>')


def html_section(row: dict, class_names=None) -> str:
  """One text's block of the page, every user string escaped."""
  scale = max((abs(a) for a in row["attributions"]), default=0.0)
  tokens = " ".join(html_token(t, a, scale) for t, a in zip(row["tokens"], row["attributions"]))
  return (f'<section><p class="meta">{html.escape(heading(row, class_names))} · '
          f'completeness error {row["completeness_error"]:.2g}</p>\n'
          f'<p class="text">{html.escape(row["text"])}</p>\n'
          f'<p class="tokens">{tokens}</p></section>\n')
