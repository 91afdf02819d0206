"""The training library: data, strategy, model, compile, fit, export, evaluate.

The optimizer and precision live in tfagent/optim.py; what follows the fit (the deep
path's weight, scoring the export, the model card) in tfagent/scoring.py.

`train_and_evaluate(cfg)` reads top to bottom; it takes a frozen Config and
never reads flags. The command line (`python -m tfagent.train`) and the Python
API (`tfagent.train(...)`) live in tfagent/train.py.
"""

import dataclasses
import hashlib
import json
import os
import time

from absl import logging
import keras
import tensorflow as tf

from tfagent import (_compat, backup, config, data, distill, distribute, evaluate, export, fileio,
                     imbalance, model_card, models, optim, progress, quantize, scoring, semi,
                     summaries, tasks)
from tfagent.callbacks import EpochHistory, fit_verbosity, make_callbacks
from tfagent.data import unlabeled
from tfagent.errors import ConfigError


def prepare_run_dir(model_dir: str, cfg: config.Config) -> None:
  """Creates the run directory, checks it is writable and saves config.json."""
  try:
    tf.io.gfile.makedirs(model_dir)
    config.save_json(cfg, os.path.join(model_dir, "config.json"))
  except (OSError, tf.errors.OpError) as e:
    reason = e.strerror if isinstance(e, OSError) else e.message
    raise ConfigError(f"--model_dir={model_dir}: cannot write there "
                      f"({reason}); choose a writable directory.") from None


def for_this_worker(cfg: config.Config, scratch: str) -> config.Config:
  """The config whose directories this worker writes: the real ones on the chief."""
  if scratch is None:
    return cfg
  return dataclasses.replace(
      cfg, train=dataclasses.replace(cfg.train, model_dir=os.path.join(scratch, "run")),
      export=dataclasses.replace(cfg.export, export_dir=os.path.join(scratch, "saved_models")))


@progress.stage("Building the model (its vocabulary from the training split)")
def build_and_compile(cfg: config.Config, strategy, train_ds, class_names, total_steps: int,
                      wide_fit=None):
  """Builds the string model and compiles its classifier inside `strategy.scope()`."""
  with strategy.scope():
    model = models.build_model(cfg.model, class_names, data.single_texts(train_ds).batch(1024),
                               wide_fit, data.is_pair(cfg.data))
    classifier = model.classifier
    classifier.compile(optimizer=optim.make_optimizer(cfg.train, total_steps,
                                                models.find_backbone(classifier)),
                       **distill.compile_args(cfg.train, tasks.compile_args(
                           cfg.data.task, cfg.train.monitor, len(class_names))),
                       jit_compile=cfg.train.jit_compile)
  return model, classifier


def build_from_spec(classifier: keras.Model, strategy, element_spec) -> None:
  """Builds metrics, loss and optimizer from the input's element spec, not a real batch.

  Under a strategy, Keras 3.15's TF trainer builds a model at the start of fit
  and evaluate by MEAN-reducing the first distributed batch across replicas,
  which fails (or, across workers, cannot agree) when replicas' batches differ
  in shape: length buckets, a partial last batch, another worker's shard. Only
  shapes and dtypes are needed, so build from the spec and skip that step.
  """
  with strategy.scope():
    _compat.build_from_spec(classifier, element_spec)


def write_shard_report(ds, contexts: list, strategy, cfg: config.Config) -> None:
  """Writes `shards/TASK.json`: hashes of the training texts this worker's pipelines read."""
  task_type, task_id = distribute.task_of(strategy)
  hashes = []
  for num_pipelines, pipeline_id in contexts:
    for text, _ in ds.shard(num_pipelines, pipeline_id).as_numpy_iterator():
      hashes.append(hashlib.sha1(data.joined(text)).hexdigest())
  folder = os.path.join(cfg.train.model_dir, "shards")
  fileio.write_text_atomically(
      os.path.join(folder, f"{task_type or 'local'}-{task_id}.json"),
      json.dumps({"input_pipelines": contexts, "examples": len(hashes),
                  "text_sha1": sorted(hashes)}))


def train_input(strategy, split, tokenizer, cfg: config.Config, start_step: int,
                contexts: list, weights=None):
  """The distributed endless training stream from `start_step`; records input contexts.

  With class `weights` each batch also carries its examples' weights (imbalance.weighted).
  """
  input_fn = imbalance.weighted(data.make_input_fn(split, tokenizer, cfg.data, training=True,
                                                   model_cfg=cfg.model, start_step=start_step),
                                weights)

  def recorded(ctx):
    contexts.append((ctx.num_input_pipelines, ctx.input_pipeline_id))
    return input_fn(ctx)
  return strategy.distribute_datasets_from_function(recorded)


@dataclasses.dataclass(frozen=True)
class FitInputs:
  """What each fit is given besides the model: data and callbacks."""
  make_train: object  # skip -> the distributed training stream after `skip` batches.
  validation: object  # The distributed validation dataset.
  callbacks: list


def trained_here(n_train: int, epochs_run: int, start, steps_per_epoch: int,
                 seconds: float) -> float:
  """Training examples a second of this process: the epochs it ran since `start` (a
  backup.Position), fractions included; NaN if it trained none (a resumed, finished run)."""
  epochs = epochs_run - start.global_step(steps_per_epoch) / steps_per_epoch
  return n_train * epochs / max(seconds, 1e-9) if epochs > 0 else float("nan")


@progress.stage("Training")
def fit_remaining(classifier, inputs: FitInputs, cfg, steps_per_epoch,
                  start: backup.Position) -> dict:
  """Runs the epochs left after `start`; a resumed partial epoch is a fit of its own. None
  are left when early stopping ended the run before a restart (killed while exporting).

  Returns the logs of every epoch run, before a restart too, as one dict of lists.
  """
  reached = start.epoch + bool(start.step)  # Epochs begun before a restart.
  if cfg.train.epochs < reached:  # It would train past its own schedule's end, and say less.
    raise ConfigError(f"--epochs={cfg.train.epochs}: the backup of this run has begun epoch "
                      f"{reached}; give --epochs={reached} or more to resume it, or start "
                      "fresh (delete its backup/ or give a new --model_dir).")
  first = start.epoch
  plan = [(first, first + 1, steps_per_epoch - start.step)] if start.step else []
  first += bool(start.step)
  plan.append((first, cfg.train.epochs, steps_per_epoch))
  stopped = start.callbacks.get("early_stopping", {}).get("stopped_epoch")
  if stopped:
    logging.info("Early stopping ended this run at epoch %d, before the restart: no epoch "
                 "left to train.", stopped + 1)
    plan = []
  for initial, end, steps in plan:
    if initial >= end:
      continue
    skip = initial * steps_per_epoch + steps_per_epoch - steps
    classifier.fit(inputs.make_train(skip), validation_data=inputs.validation,
                   initial_epoch=initial, epochs=end, steps_per_epoch=steps,
                   callbacks=inputs.callbacks, verbose=fit_verbosity(cfg.train),
                   shuffle=False)  # tf.data shuffles; Keras cannot shuffle a dataset.
    if classifier.stop_training:
      break
  return next(c for c in inputs.callbacks if isinstance(c, EpochHistory)).so_far()


@progress.stage("Restoring the best epoch's weights")
def restore_best(classifier: keras.Model, checkpoint_dir: str) -> None:
  """Loads the classifier weights of the best epoch (best --monitor), saved atomically."""
  path = os.path.join(checkpoint_dir, "best.keras")
  if tf.io.gfile.exists(path):
    best = evaluate.load_checkpoint(path)
    classifier.set_weights(best.classifier.get_weights())


def check_vocabulary(cfg: config.Config, model: keras.Model, splits, sample: int = 2000) -> float:
  """Share of unknown tokens: of BERT's pieces of training texts (a preset whose vocabulary
  misses the language), else of validation texts; warns above model_card.UNKNOWN_WARN."""
  split = splits["train"] if cfg.model.name in models.PRETRAINED else splits["validation"]
  texts = [t.decode("utf-8") for t in data.single_texts(split).take(sample).as_numpy_iterator()]
  share = model_card.unknown_share(model, texts)
  warning = model_card.vocabulary_warning(cfg, share)
  if warning:
    logging.warning("%s", warning)
  return share


def fit_wide(cfg: config.Config, splits, info, class_weight=None):
  """Fits the wide path on the training split (C on validation), classes weighed by
  `class_weight` as the deep path's loss weighs them; None when it is off."""
  if not cfg.model.wide_ngrams:
    return None
  with progress.stage("Fitting the wide path (n-gram logistic regression)"):
    return models.wide_fit.fit_wide(cfg.model, splits["train"], splits["validation"],
                                    len(info.class_names), cfg.data.seed, class_weight)


def train_and_evaluate(cfg: config.Config, before_fit=None) -> dict:
  """Trains under the configured strategy, exports the SavedModel and evaluates it.

  The strategy comes first: multi-worker collectives must be set up before
  other TensorFlow work. Workers other than the chief write into a scratch
  folder that is removed at the end; all of them read the chief's backup.
  `before_fit(model)`, if given, sees the built model (vocabularies and wide path
  fitted) before the first step and may raise to end the run there (tfagent tune's
  --max_export_mb).
  """
  strategy = distribute.get_strategy(cfg.train.strategy, cfg.train.tpu)
  with distribute.worker_scratch(strategy) as scratch, distribute.keras_logs_agree(strategy), \
      optim.precision_policy(cfg.train.mixed_precision):
    return train_in(cfg, for_this_worker(cfg, scratch), strategy, before_fit)


@progress.stage("Reading and checking the data")
def load_data(cfg: config.Config, out: config.Config) -> tuple:
  """Run directory, seed, splits and their report; returns `(splits, info, n_train)`.

  A backup of another run in the run directory is an error before config.json is
  overwritten (all workers read the chief's backup).
  """
  backup.check_same_run(os.path.join(cfg.train.model_dir, "backup"), backup.run_fingerprint(cfg))
  prepare_run_dir(out.train.model_dir, cfg)
  keras.utils.set_random_seed(cfg.data.seed)
  splits, info = data.load_splits(cfg.data)
  backup.check_same_data(os.path.join(cfg.train.model_dir, "backup"),
                         os.path.join(out.train.model_dir, "backup"), backup.data_fingerprint(info))
  data.write_report(info, os.path.join(out.train.model_dir, "data_report.json"))
  # Streamed sources may not know their size: count train in one streaming pass.
  n_train = info.split_sizes["train"] if info.split_sizes else data.count_examples(splits["train"])
  return splits, info, n_train


def log_start(cfg: config.Config, out: config.Config, model, steps_per_epoch: int) -> None:
  """Logs the model's size and writes the run's hyperparameters for TensorBoard."""
  logging.info("Model %s: %d parameters, vocabulary %d; %d steps an epoch of %d examples.",
               cfg.model.name, model.count_params(),
               len(model.tokenizer.vocabulary()), steps_per_epoch,
               cfg.data.batch_size)
  logdir = summaries.log_dirs(out.train.model_dir)[0]
  # The run dir's whole path: HParams averages the runs of one trial id as repeats (two
  # cross-validations' fold_0 became one row of their mean).
  summaries.write_hparams(logdir, cfg.to_dict(), trial_id=fileio.absolute(cfg.train.model_dir))


def train_in(cfg: config.Config, out: config.Config, strategy, before_fit=None) -> dict:
  """Data, model, resume, fit, export, evaluate; `out` names the folders this worker writes."""
  tasks.check_config(cfg)
  semi.check_config(cfg)
  export.check_version(cfg.export)
  splits, info, n_train = load_data(cfg, out)
  held_out = unlabeled.held_out_once(splits, cfg.data)  # Read once, if either flag needs it.
  extra = semi.learn(cfg, splits, held_out)  # --unlabeled: its texts (none of val., test), vectors.
  taught = distill.teach(cfg, splits, info, n_train, held_out=held_out)  # --teacher's targets.
  steps_per_epoch = max(1, taught.n_train // cfg.data.batch_size)
  weights = imbalance.run_weights(cfg.train, info, splits["train"])
  wide_fit = fit_wide(cfg, splits, info, weights)
  vocab_corpus = semi.vocabulary_corpus(cfg, taught.train, extra)
  model, classifier = build_and_compile(cfg, strategy, vocab_corpus, info.class_names,
                                        steps_per_epoch * cfg.train.epochs, wide_fit)
  tokenizer = model.tokenizer
  semi.init_embeddings(model, extra)  # --unlabeled's skip-gram vectors.
  unknown = check_vocabulary(cfg, model, splits)
  val_fn = data.make_input_fn(splits["validation"], tokenizer, cfg.data, training=False,
                              model_cfg=cfg.model)
  build_from_spec(classifier, strategy, val_fn().element_spec)
  if before_fit is not None:
    before_fit(model)
  val_ds = strategy.distribute_datasets_from_function(val_fn)
  backup.check_same_data(  # The weights of a backup fit its vocabulary and teacher only.
      os.path.join(cfg.train.model_dir, "backup"), os.path.join(out.train.model_dir, "backup"),
      backup.learned_fingerprint(tokenizer.vocabulary(), {
          "unlabeled": extra and extra.report, "distill_unlabeled": taught.report.get(
              "unlabeled")}, taught.report.get("teacher_export")),
      backup.LEARNED_FILE, "vocabulary, unlabelled texts or teacher",
      "the same flags now read other unlabelled texts, preset or teacher export")
  with strategy.scope():
    start = backup.restore(classifier, os.path.join(cfg.train.model_dir, "backup"),
                           steps_per_epoch)
  if start == backup.Position():  # A fresh run: an earlier run's best.keras is not its best.
    for name in ("best.keras", "last.keras"):  # (A NaN --monitor never writes its own.)
      path = os.path.join(out.train.model_dir, "checkpoints", name)
      if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)
  log_start(cfg, out, model, steps_per_epoch)
  contexts = []
  fit_start = time.perf_counter()
  inputs = FitInputs(
      lambda skip: train_input(strategy, taught.train, tokenizer, cfg, skip, contexts,
                               weights),
      val_ds, make_callbacks(out, model, start, steps_per_epoch))
  history = fit_remaining(classifier, inputs, cfg, steps_per_epoch, start)
  train_seconds = time.perf_counter() - fit_start
  epochs_run = len(history.get("loss", []))
  if cfg.train.shard_report:
    write_shard_report(splits["train"], sorted(set(contexts)), strategy, cfg)
  restore_best(classifier, os.path.join(out.train.model_dir, "checkpoints"))
  paths = None  # Each path's logits on each split, for the deep weight and the ablation.
  if wide_fit is not None:
    paths, wide_fit.report["deep_weight"] = scoring.weigh_paths(model, splits["validation"], out,
                                                                weights)
  final = classifier.evaluate(val_ds, verbose=0, return_dict=True)
  # A few real texts become TF Serving's warm-up requests (assets.extra).
  warmup = data.split_rows(splits["validation"].take(4))
  thresholds = tasks.tune_thresholds(cfg, model, splits["validation"])  # Multilabel only.
  # Scored and given its model card before it is published: a version never changes.
  publishing, quantized = quantize.staged_export(model, info.class_names, out.export, warmup,
                                                 splits["validation"], thresholds)
  with publishing as staged:
    result = {"history": history, "validation": {k: float(v) for k, v in final.items()},
              "saved_model": staged.final, "train_seconds": start.seconds + train_seconds,
              "epochs_run": epochs_run, "train_examples": n_train,
              **({"wide": wide_fit.report} if wide_fit is not None else {}),
              **({"distillation": taught.report} if taught.report else {}),
              **({"unlabeled": extra.report} if extra else {}),
              **({"quantization": quantized} if quantized else {}),
              **({"class_weights": dict(zip(info.class_names, weights.tolist()))}
                 if weights is not None else {}),
              "unknown_token_share": unknown,
              **({"thresholds": thresholds.tolist()} if thresholds is not None else {}),
              # This process's epochs over its seconds (a resumed run's earlier epochs ran in
              # time not counted here); each validation pass included, as a wall clock does.
              "train_examples_per_second": trained_here(n_train, epochs_run, start,
                                                        steps_per_epoch, train_seconds)}
    if distribute.is_chief(strategy):
      result = scoring.evaluate_export(cfg, result, splits, info, paths, staged.path)
  backup.clear(os.path.join(out.train.model_dir, "backup"))
  if distribute.is_chief(strategy) and cfg.data.read_test:
    logging.info("Done.\n%s", progress.final_summary(cfg, result, warmup[0]))
  return result

