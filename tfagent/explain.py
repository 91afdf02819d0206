"""Integrated gradients in the graph: which tokens made the model predict its class.

F is the predicted class's logit of the whole model (for an ensemble the logit
MemberAverage returns, log of the mean of the members' probabilities; with a
wide path `wide + deep_weight * deep`), not its probability; in the
`explain_class` signature, the logit of the class the request names.
- Deep path: integrated gradients (Sundararajan et al. 2017) over the token
  embeddings, from a baseline of the padding token's embedding at every position
  (the padding mask unchanged, so the baseline has the text's length), by the
  midpoint rule with `steps` points, CHUNK points at a time in a tf.while_loop so
  memory grows with CHUNK, not with `steps`. An ensemble's members move along one
  straight path together, so their attributions add up to the averaged logit's change.
- Wide path: linear in its binary n-gram features, so its part is exact against
  a baseline of no n-grams (its logits are then its bias): each n-gram's weight
  is split evenly over the words it covers (and over its occurrences, as a
  repeated n-gram counts once). Attributions are `wide + deep_weight * deep`, so
  completeness holds for the whole logit.
- Tokens are the text's words as the tokenizer standardizes them (a CJK character
  each; out-of-vocabulary words shown as written). The deep path's n-gram ids
  (`--ngrams=2` bigrams) are split evenly over the words they cover, like the
  wide path's. Without a wide path only the words inside the model's window
  (`sequence_length`) are shown; with one, all (the wide path reads them all).
- BERT: the same over the backbone's token embeddings (positions and segments are
  added after, as in the backbone), [CLS] and [SEP] kept in the baseline, so they
  get none; tokens are the word pieces as the vocabulary spells them ("##" marks
  a word's continuation), [CLS] left out, [SEP] and padding "".
- BERT with a wide path: the wide path reads words, BERT word pieces, and the two
  do not line up, so the wide path's part is reported per n-gram, not spread:
  after the text's word pieces come the wide path's n-grams of the text, each
  once (its feature is binary), in order of first occurrence, written in angle
  brackets (`<not good>`), each with its exact weight toward F; n-grams out of
  its vocabulary weigh 0 and are left out. Then padding "".
"""

import dataclasses

import keras
import tensorflow as tf

from tfagent import signatures
from tfagent.errors import ConfigError
from tfagent.models import TextClassifier, bert, ensemble
from tfagent.models.layers import TextTokenizer, standardize
from tfagent.models.wide import ngram_strings

# Interpolation points a gradient call: 16x the batch's activations at once.
CHUNK = 16
EMBEDDING = "embedding"  # The token embedding layer of the from-scratch models.
LOGIT_DIFFERENCE = "logit_difference"  # F(x) - F(baseline), an output of details=True only.
NGRAM_MARKS = ("<", ">")  # Around a wide n-gram after BERT's word pieces.
PREDICTED = -1  # The target id that stands for the predicted class.


@dataclasses.dataclass(frozen=True)
class Parts:
  """The pieces of a string-in, logits-out model that the explanation needs."""
  tokenizer: keras.layers.Layer  # TextTokenizer or bert.WordPieceEncoder.
  paths: tuple  # (embedding layer, keras.Model [ids, embeddings] -> logits) a member.
  average: keras.layers.Layer  # MemberAverage, or None for one model.
  wide: keras.layers.Layer  # NgramWide, or None.
  wide_deep: keras.layers.Layer  # WideDeep, or None.


def embedding_path(member: keras.Model) -> tuple:
  """`(embedding layer, keras.Model [ids, <float>[batch, L, D]] -> logits)` of one classifier."""
  embedding = member.get_layer(EMBEDDING)
  return embedding, keras.Model([member.input, embedding.output], member.output)


def supported(model: keras.Model) -> bool:
  """Whether `model` can be explained: a TextClassifier whose tokenizer explain.py knows."""
  return (isinstance(model, TextClassifier)
          and isinstance(model.tokenizer, (TextTokenizer, bert.WordPieceEncoder)))


def model_parts(model: TextClassifier) -> Parts:
  """The parts of the model object that the explanation uses."""
  if not supported(model):
    raise NotImplementedError(f"{model.name}: not a TextClassifier with a tokenizer that "
                              "explain.py knows (TextTokenizer or bert.WordPieceEncoder).")
  path = embedding_path if isinstance(model.tokenizer, TextTokenizer) else bert.embedding_path
  return Parts(model.tokenizer, tuple(path(m) for m in model.members), model.average,
               model.wide, model.wide_deep)


def is_bert(parts: Parts) -> bool:
  """Whether the tokens are BERT's word pieces."""
  return isinstance(parts.tokenizer, bert.WordPieceEncoder)


def baseline_ids(parts: Parts, ids: tf.Tensor) -> tf.Tensor:
  """Padding (id 0) in place of every token but BERT's [CLS] and [SEP], which every text has."""
  if not is_bert(parts):
    return tf.zeros_like(ids)
  wordpiece = parts.tokenizer.tokenizer
  special = (ids == wordpiece.cls_token_id) | (ids == wordpiece.sep_token_id)
  return tf.where(special, ids, tf.zeros_like(ids))


def wordpiece_tokens(parts: Parts, ids, id_attributions) -> tuple:
  """`(pieces <string>[batch, L-1], attributions <float32>[batch, L-1])`, [CLS] left out."""
  pieces = tf.gather(tf.constant(parts.tokenizer.vocabulary(), tf.string), ids[:, 1:])
  real = tf.equal(baseline_ids(parts, ids)[:, 1:], 0) & tf.not_equal(ids[:, 1:], 0)
  # [CLS] and [SEP] equal their baseline: their attributions are exactly 0.
  return tf.where(real, pieces, ""), id_attributions[:, 1:]


def deep_logits(parts: Parts, ids: tf.Tensor, embeddings: list) -> tf.Tensor:
  """`<float32>[batch, C]` deep-path logits from each member's `<float>[batch, L, D]` embeddings."""
  logits = [tf.cast(rest([ids, e], training=False), tf.float32)
            for (_, rest), e in zip(parts.paths, embeddings)]
  if parts.average is None:
    return logits[0]
  return parts.average(tf.stack(logits, axis=ensemble.MEMBER_AXIS))


def combine(parts: Parts, deep: tf.Tensor, wide: tf.Tensor) -> tf.Tensor:
  """The model's logits `<float32>[batch, C]` from its paths', as WideDeep adds them."""
  return deep if parts.wide_deep is None else parts.wide_deep([wide, deep])


def deep_weight(parts: Parts) -> tf.Tensor:
  """The deep path's scale in the logits (WideDeep.deep_weight; 1 without a wide path)."""
  if parts.wide_deep is None:
    return tf.constant(1.0)
  return tf.cast(tf.convert_to_tensor(parts.wide_deep.deep_weight), tf.float32)


def chunk_gradients(parts: Parts, ids, inputs, baselines, alphas, target) -> list:
  """Gradients of F at path points `alphas` `<float32>[k]`: `<float32>[k, batch, L, D]` a member."""
  k = tf.shape(alphas)[0]
  points = []
  for x, b in zip(inputs, baselines):
    point = b[tf.newaxis] + alphas[:, tf.newaxis, tf.newaxis, tf.newaxis] * (x - b)[tf.newaxis]
    points.append(tf.reshape(point, tf.concat([[-1], tf.shape(x)[1:]], 0)))
  with tf.GradientTape() as tape:
    tape.watch(points)
    logits = deep_logits(parts, tf.tile(ids, [k, 1]), points)
    f = tf.reduce_sum(tf.gather(logits, tf.tile(target, [k]), batch_dims=1))
  return [tf.reshape(g, tf.concat([[k], tf.shape(x)], 0))
          for g, x in zip(tape.gradient(f, points), inputs)]


def integrated_gradients(parts: Parts, ids, inputs, baselines, target, steps: int) -> tf.Tensor:
  """`<float32>[batch, L]` attributions of each id to deep logit `target` `<int64>[batch]`."""
  chunk = min(CHUNK, steps)
  chunks = -(-steps // chunk)

  def body(c, totals):
    index = c * chunk + tf.range(chunk)
    alphas = (tf.cast(index, tf.float32) + 0.5) / steps  # Midpoints: error O(1 / steps^2).
    weights = tf.cast(index < steps, tf.float32)  # The last chunk may run past `steps`.
    grads = chunk_gradients(parts, ids, inputs, baselines, alphas, target)
    return c + 1, [t + tf.einsum("k,kbld->bld", weights, g) for t, g in zip(totals, grads)]
  _, totals = tf.while_loop(lambda c, _: c < chunks, body,
                            (tf.constant(0), [tf.zeros_like(x) for x in inputs]))
  return tf.add_n([tf.reduce_sum((x - b) * t, -1)
                   for x, b, t in zip(inputs, baselines, totals)]) / steps


def ngram_layout(lengths: tf.Tensor, n: int) -> tuple:
  """`(starts, widths)` `<int64>[batch, (grams)]`: the words each 1..n-gram covers, in the
  order tf.strings.ngrams (and so TextVectorization and NgramWide) lists them."""
  starts = [tf.ragged.range(tf.maximum(lengths - w + 1, 0)) for w in range(1, n + 1)]
  widths = [s.with_flat_values(tf.fill(tf.shape(s.flat_values), tf.constant(w, tf.int64)))
            for w, s in zip(range(1, n + 1), starts)]
  return tf.concat(starts, axis=1), tf.concat(widths, axis=1)


def spread(values: tf.RaggedTensor, starts, widths, num_tokens, n: int) -> tf.Tensor:
  """`<float32>[batch, num_tokens]`: each n-gram's value split evenly over the words it covers."""
  rows = values.value_rowids() * tf.cast(num_tokens, tf.int64)
  share = values.flat_values / tf.cast(widths.flat_values, tf.float32)
  index, parts = [], []
  for offset in range(n):
    keep = widths.flat_values > offset
    index.append(tf.boolean_mask(rows + starts.flat_values + offset, keep))
    parts.append(tf.boolean_mask(share, keep))
  total = tf.math.unsorted_segment_sum(tf.concat(parts, 0), tf.concat(index, 0),
                                       values.nrows() * tf.cast(num_tokens, tf.int64))
  return tf.reshape(total, [-1, num_tokens])


def wide_values(wide, text: tf.Tensor, target: tf.Tensor) -> tf.RaggedTensor:
  """`<float32>[batch, (grams)]`: each n-gram occurrence's share of its weight for `target`."""
  ids = wide.ngram_ids(text)
  rows = ids.value_rowids()
  keys, occurrence = tf.unique(rows * (wide.vocabulary_size + 1) + ids.flat_values)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(occurrence, tf.float32), occurrence,
                                        tf.size(keys))
  weights = tf.gather(wide.kernel_rows(ids.flat_values), tf.gather(target, rows), batch_dims=1)
  return ids.with_flat_values(tf.cast(weights, tf.float32) / tf.gather(counts, occurrence))


def distinct_ngrams(wide, text: tf.Tensor, target: tf.Tensor) -> tuple:
  """`(n-grams <string>[batch, (grams)], weights <float32>[batch, (grams)])`: each known
  n-gram of each text once, in order of first occurrence, and its weight toward `target`."""
  ids, grams = wide.ngram_ids(text), ngram_strings(text, wide.ngrams)
  rows, flat = ids.value_rowids(), ids.flat_values
  keys, occurrence = tf.unique(rows * (wide.vocabulary_size + 1) + flat)
  position = tf.range(tf.size(occurrence))
  first = tf.math.unsorted_segment_min(position, occurrence, tf.size(keys))
  keep = tf.not_equal(flat, 0) & tf.equal(tf.gather(first, occurrence), position)
  weights = tf.gather(wide.kernel_rows(flat), tf.gather(target, rows), batch_dims=1)
  kept_rows = tf.boolean_mask(rows, keep)
  ragged = lambda values: tf.RaggedTensor.from_value_rowids(
      tf.boolean_mask(values, keep), kept_rows, nrows=ids.nrows())
  return ragged(grams.flat_values), ragged(tf.cast(weights, tf.float32))


def wordpieces_and_ngrams(parts: Parts, text, pieces, piece_attributions, target) -> tuple:
  """BERT's `(pieces, attributions)` `[batch, L-1]` with the wide path's n-grams after the
  pieces of each text: `(tokens <string>[batch, T], attributions <float32>[batch, T])`."""
  pieces = tf.RaggedTensor.from_tensor(pieces, padding="")  # [SEP] and padding trail.
  scores = tf.RaggedTensor.from_tensor(piece_attributions, lengths=pieces.row_lengths())
  grams, weights = distinct_ngrams(parts.wide, text, target)
  marked = tf.strings.join([NGRAM_MARKS[0], grams.flat_values, NGRAM_MARKS[1]])
  tokens = tf.concat([pieces, grams.with_flat_values(marked)], axis=1)
  return tokens.to_tensor(""), tf.concat([scores, weights], axis=1).to_tensor(0.0)


def token_attributions(parts: Parts, text, id_attributions, target) -> tuple:
  """`(tokens <string>[batch, T], attributions <float32>[batch, T])` on the text's words."""
  words = tf.strings.split(standardize(text))
  shown = words if parts.wide is not None else words[:, :parts.tokenizer.sequence_length]
  num_tokens = tf.maximum(tf.reduce_max(shown.row_lengths()), 0)
  n = parts.tokenizer.ngrams
  starts, widths = ngram_layout(words.row_lengths(), n)
  window = parts.tokenizer.sequence_length
  starts, widths = starts[:, :window], widths[:, :window]
  deep = tf.RaggedTensor.from_tensor(id_attributions, lengths=starts.row_lengths())
  attributions = deep_weight(parts) * spread(deep, starts, widths, num_tokens, n)
  if parts.wide is not None:
    starts, widths = ngram_layout(words.row_lengths(), parts.wide.ngrams)
    attributions += spread(wide_values(parts.wide, text, target), starts, widths, num_tokens,
                           parts.wide.ngrams)
  return shown.to_tensor(""), attributions  # Padded to num_tokens.


def explain_batch(parts: Parts, class_names: tf.Tensor, text: tf.Tensor, target: tf.Tensor,
                  steps: int) -> dict:
  """The explain signature's outputs for `<string>[batch]`, plus LOGIT_DIFFERENCE `[batch]`.

  `target` `<int64>[batch]`: the class id F is the logit of, PREDICTED for the predicted one.
  """
  ids = parts.tokenizer(text)
  inputs = [tf.cast(embedding(ids), tf.float32) for embedding, _ in parts.paths]
  base_ids = baseline_ids(parts, ids)
  baselines = [tf.cast(embedding(base_ids), tf.float32) for embedding, _ in parts.paths]
  # The text and its baseline in one call: one copy of the model in the graph, not two.
  both = deep_logits(parts, tf.concat([ids, ids], 0),
                     [tf.concat([x, b], 0) for x, b in zip(inputs, baselines)])
  deep, deep_base = tf.split(both, 2)
  wide = None if parts.wide is None else tf.cast(parts.wide(text), tf.float32)
  logits = combine(parts, deep, wide)
  wide_base = None if wide is None else tf.zeros_like(wide) + tf.cast(parts.wide.bias, tf.float32)
  base = combine(parts, deep_base, wide_base)
  target = tf.where(target == PREDICTED, tf.argmax(logits, axis=-1), target)
  difference = (tf.gather(logits, target, batch_dims=1) - tf.gather(base, target, batch_dims=1))
  id_attributions = integrated_gradients(parts, ids, inputs, baselines, target, steps)
  if is_bert(parts):
    tokens, attributions = wordpiece_tokens(parts, ids, deep_weight(parts) * id_attributions)
    if parts.wide is not None:
      tokens, attributions = wordpieces_and_ngrams(parts, text, tokens, attributions, target)
  else:
    tokens, attributions = token_attributions(parts, text, id_attributions, target)
  return {signatures.EXPLAIN_TOKENS: tokens,  # <string>[batch, T]
          signatures.EXPLAIN_ATTRIBUTIONS: attributions,  # <float32>[batch, T]
          signatures.EXPLAIN_PROBABILITIES: tf.nn.softmax(logits, -1),  # <float32>[batch, C]
          signatures.EXPLAIN_CLASSES: tf.gather(class_names, target),  # <string>[batch]
          signatures.EXPLAIN_COMPLETENESS: tf.abs(tf.reduce_sum(attributions, -1) - difference),
          LOGIT_DIFFERENCE: difference}


def class_ids(class_names: list, names: tf.Tensor, text: tf.Tensor) -> tf.Tensor:
  """`<int64>[batch]` ids of the classes `names` `<string>[batch]` (one a text); an
  InvalidArgumentError that lists the valid names for an unknown one."""
  match = tf.equal(names[:, tf.newaxis], tf.constant(list(class_names), tf.string)[tf.newaxis])
  known = tf.reduce_any(match, axis=-1)
  checks = [
      tf.debugging.assert_equal(tf.size(names), tf.size(text), message=(
          f"{signatures.EXPLAIN_CLASS_INPUT}: expected one class name a text")),
      tf.debugging.Assert(tf.reduce_all(known), [
          f"{signatures.EXPLAIN_CLASS_INPUT}: expected one of {', '.join(class_names)}; got",
          tf.boolean_mask(names, ~known)])]
  with tf.control_dependencies(checks):
    return tf.argmax(tf.cast(match, tf.int64), axis=-1)


def make_explain_fns(model: keras.Model, class_names, steps: int, details: bool = False):
  """`(explain, explain_class)` tf.functions for the export; the model is traced once.

  explain: `text: <string>[batch] -> {tokens, attributions, probabilities, classes,
  completeness_error}` toward each text's predicted class. explain_class: the same toward
  `class_name: <string>[batch]`, a class name a text. `details` adds LOGIT_DIFFERENCE,
  F(x) - F(baseline).
  """
  if steps < 1:
    raise ConfigError(f"--explain_steps={steps}: expected 1 or more (64 is the default), or 0 "
                      "for an export without explain signatures.")
  parts = model_parts(model)
  names = tf.constant(list(class_names), tf.string)
  keys = signatures.EXPLAIN_OUTPUTS + ((LOGIT_DIFFERENCE,) if details else ())

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                tf.TensorSpec([None], tf.int64, name="target")])
  def toward(text, target):
    out = explain_batch(parts, names, text, target, steps)
    return {k: out[k] for k in keys}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
  def explain(text):
    return toward(text, tf.fill(tf.shape(text), tf.constant(PREDICTED, tf.int64)))

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name="text"),
      tf.TensorSpec([None], tf.string, name=signatures.EXPLAIN_CLASS_INPUT)])
  def explain_class(text, class_name):
    return toward(text, class_ids(class_names, class_name, text))
  return explain, explain_class


def make_explain_fn(model: keras.Model, class_names, steps: int, details: bool = False):
  """`text: <string>[batch] -> {tokens, attributions, probabilities, classes,
  completeness_error}` (make_explain_fns' explain)."""
  return make_explain_fns(model, class_names, steps, details)[0]
