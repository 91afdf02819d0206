"""K-fold cross-validation through the same training path as `tfagent.train`.

  python -m tfagent.cross_validate --flagfile=configs/quickstart.flags --folds=5

A seeded hash of each text picks its fold, so copies of a text share a fold and
no text is scored in two folds; with --group_field the group's hash picks it, so
each group lies in one fold. Fold k trains on the other folds (validation
carved from them by --validation_fraction) and is scored on fold k, through
the exported SavedModel as in a normal run. An official test split (csv with
--test_path, tfds) is not read: the folds cover train+validation and test stays
untouched for the final figures. Writes MODEL_DIR/fold_K/ (a normal run
directory and export each) and MODEL_DIR/cross_validation.json: each fold's
metrics, and their mean and standard deviation.
"""

import dataclasses
import json
import os

from absl import app, flags, logging
import numpy as np

from tfagent import cli, config, fileio
from tfagent.errors import ConfigError

FLAGS = flags.FLAGS
SUMMARY_FILE = "cross_validation.json"
# Summarised over folds; micro_f1 of multilabel runs, whose accuracy is subset accuracy.
METRICS = ("accuracy", "macro_f1", "validation_accuracy", "micro_f1")


def fold_config(cfg: config.Config, fold: int) -> config.Config:
  """The config of fold `fold`: its own run directory and export under MODEL_DIR/fold_K."""
  run = os.path.join(cfg.train.model_dir, f"fold_{fold}")
  return dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, fold=fold),
      train=dataclasses.replace(cfg.train, model_dir=run),
      export=dataclasses.replace(cfg.export, export_dir=os.path.join(run, "saved_models")))


def fold_record(fold: int, result: dict) -> dict:
  """What one fold's result contributes to the summary."""
  record = {"fold": fold, "accuracy": result["accuracy"], "macro_f1": result["macro_f1"],
            "test_examples": result["examples"],
            "train_examples": result.get("train_examples"),
            "train_seconds": result.get("train_seconds")}
  if "validation" in result:
    record["validation_accuracy"] = result["validation"]["accuracy"]
  if "micro_f1" in result:  # Multilabel: Keras' validation accuracy is per label; the export's.
    record["micro_f1"] = result["micro_f1"]
    record["validation_accuracy"] = result["validation_metrics"]["subset_accuracy"]
  if "paths" in result:  # Each path of a wide+deep model alone.
    record["paths"] = {name: path["test"]["accuracy"] for name, path in result["paths"].items()}
  return record


def summarize(records: list) -> dict:
  """Mean and sample standard deviation of each metric over the folds."""
  summary = {}
  for metric in METRICS:
    values = [r[metric] for r in records if metric in r]
    if values:
      summary[metric] = {"mean": float(np.mean(values)),
                         "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
  return summary


def cross_validate(cfg: config.Config, run_fold) -> dict:
  """Runs `run_fold(fold_cfg) -> metrics` on every fold; writes and returns the summary.

  Args:
    cfg: the run's Config; `cfg.data.folds` >= 2.
    run_fold: trains and evaluates one fold's config, e.g. training.train_and_evaluate.
  """
  folds = cfg.data.folds
  if folds < 2:
    raise ConfigError(f"--folds={folds}: cross-validation needs 2 or more folds "
                          "(5 is usual).")
  if not cfg.data.read_test:
    raise ConfigError("--noread_test: each fold is scored on the part it holds out (its test "
                      "split); an official test split is never read by cross-validation "
                      "anyway. Leave --read_test on.")
  records = []
  for fold in range(folds):
    logging.info("Cross-validation: fold %d of %d.", fold + 1, folds)
    records.append(fold_record(fold, run_fold(fold_config(cfg, fold))))
    logging.info("Fold %d: test accuracy %.4f on %d texts.", fold, records[-1]["accuracy"],
                 records[-1]["test_examples"])
  out = {"dataset": cfg.data.dataset, "folds": folds, "seed": cfg.data.seed,
         "per_fold": records, **summarize(records)}
  fileio.write_text_atomically(os.path.join(cfg.train.model_dir, SUMMARY_FILE),
                               json.dumps(out, indent=2))
  logging.info("Cross-validation over %d folds: accuracy %.4f +- %.4f (std).", folds,
               out["accuracy"]["mean"], out["accuracy"]["std"])
  return out


def train_fold(fold_cfg: config.Config) -> dict:
  """One fold through tfagent.train's path, with Keras' global state cleared after it."""
  import keras
  from tfagent import training
  try:
    return training.train_and_evaluate(fold_cfg)
  finally:
    keras.backend.clear_session()


def define_flags(flag_values=FLAGS) -> None:
  """Defines this entry point's flags, one per config field; called only as a program."""
  config.define_flags(config.SECTIONS.values(), flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")

  def body():
    cfg = config.from_flag_values(FLAGS)
    from tfagent import models
    config.check_applicable(cfg, {name for name in FLAGS if FLAGS[name].present})
    models.check_model_config(cfg.model)
    logging.info("Config: %s", json.dumps(cfg.to_dict(), sort_keys=True))
    cross_validate(cfg, train_fold)
  cli.run_main(body)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(
      __doc__, [s.__name__ for s in config.SECTIONS.values()]))
