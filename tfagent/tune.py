"""Hyperparameter search on KerasTuner; every trial is a normal training run.

  tfagent tune --flagfile=configs/lstm.flags --search_space=configs/search/quickstart.json \\
      --tuner=bayesian --max_trials=20 --tune_time_budget=45m --tune_dir=runs/tune_lstm

Each trial trains through tfagent.train's path with its values, in
TUNE_DIR/trials/trial_N (an ordinary run directory, its export under
saved_models/), and is scored on validation only: trials run with --noread_test,
so the test split is never held or scored while tuning (under --dedup its
records are checked, to train without their copies, as the final run does).
KerasTuner's oracle state (TUNE_DIR/oracle) lets a stopped search go on with the
same command: finished trials are kept, an interrupted one runs again from its own
backup. At the end the best trial's export alone is scored on test
(TUNE_DIR/test/metrics.json); TUNE_DIR gets best.flags (the flags given plus the
chosen values), tuning.json and tuning.md (every trial, rejected and failed ones
included). TensorBoard's HParams tab: tensorboard --logdir=TUNE_DIR/trials.
"""

import dataclasses
import json
import os
import re
import time

from absl import app, flags, logging

from tfagent import cli, config, search_space, tune_report
from tfagent.errors import ConfigError, TfagentError

FLAGS = flags.FLAGS
TUNERS = ("hyperband", "random", "bayesian")
OBJECTIVES = {"val_accuracy": "max", "val_macro_f1": "max", "val_loss": "min"}
SETTINGS_FILE = "tune_settings.json"  # What a resumed search must share with the first run.
LATENCY_TEXT = "一部不错的电影, a film worth seeing"  # One short request, as a served one.


@dataclasses.dataclass(frozen=True)
class TuneOptions:
  """The search itself, besides the base config and the space."""
  tune_dir: str = "runs/tune"
  tuner: str = "bayesian"
  max_trials: int = 10
  time_budget_s: float = 0.0  # 0: no limit.
  objective: str = "val_accuracy"
  max_export_mb: float = 0.0  # 0: no limit.
  max_latency_ms: float = 0.0  # 0: no limit (measured only when set).
  initial_trials: int = 0  # Bayesian: random trials before the GP; 0: KerasTuner's 3 per field.


def parse_duration(text: str) -> float:
  """`45m`, `1h30m`, `90s`, `2h` or plain seconds -> seconds; empty or 0 -> 0 (no limit)."""
  text = text.strip()
  if re.fullmatch(r"\d+(\.\d+)?", text or "0"):
    return float(text or 0)
  parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
  if not parts or not any(parts.groups()):
    raise ConfigError(f"--tune_time_budget={text}: expected a duration such as 45m, 1h30m, "
                      "90s or 2h (empty: no limit).")
  hours, minutes, seconds = (int(g or 0) for g in parts.groups())
  return hours * 3600.0 + minutes * 60.0 + seconds


def time_left(options: TuneOptions) -> float:
  """--tune_time_budget less the seconds of the trials already recorded in the tune dir: a
  resumed search gets what is left of the budget, not all of it again."""
  spent = tune_report.seconds_recorded(options.tune_dir)
  if spent:
    logging.info("--tune_time_budget: %.0f s spent by the trials already run, %.0f s left.",
                 spent, max(0.0, options.time_budget_s - spent))
  return options.time_budget_s - spent


class BudgetSpent(Exception):
  """Raised before a trial would start once the time budget or --max_trials is used up."""


def trial_config(cfg: config.Config, values: dict, run_dir: str) -> config.Config:
  """The base config with a trial's values, test unread, writing into `run_dir`."""
  trial = search_space.apply(cfg, values)
  epochs = values.get("tuner/epochs")  # Hyperband's budget for this trial.
  return dataclasses.replace(
      trial, data=dataclasses.replace(trial.data, read_test=False),
      train=dataclasses.replace(trial.train, model_dir=run_dir,
                                epochs=int(epochs or trial.train.epochs)),
      export=dataclasses.replace(trial.export, export_dir=os.path.join(run_dir, "saved_models"),
                                 version=0))


def make_tuner(cfg: config.Config, space: dict, options: TuneOptions):
  """A keras_tuner.Tuner whose trials are training runs (tfagent.training) of `cfg`."""
  import keras  # pylint: disable=import-outside-toplevel
  import keras_tuner  # pylint: disable=import-outside-toplevel
  from tfagent import training  # pylint: disable=import-outside-toplevel

  class TrialTuner(keras_tuner.Tuner):
    """Runs each trial through training.train_and_evaluate; reports validation metrics."""

    def __init__(self, oracle):
      super().__init__(oracle, directory=options.tune_dir, project_name="oracle")
      self.deadline = (time.monotonic() + time_left(options) if options.time_budget_s
                       else None)

    def on_search_begin(self):
      self.save()  # A search killed in its first trial then resumes it too.

    def pre_create_trial(self):
      if self.deadline and time.monotonic() > self.deadline:
        raise BudgetSpent("--tune_time_budget is spent")
      # An interrupted trial (still RUNNING after a reload) runs again; Hyperband has no cap.
      finished = sum(t.status != "RUNNING" for t in self.oracle.trials.values())
      if finished >= options.max_trials:
        raise BudgetSpent(f"--max_trials={options.max_trials} trials have run")

    def run_trial(self, trial, *args, **kwargs):
      values = dict(trial.hyperparameters.values)
      run_dir = os.path.join(options.tune_dir, "trials", f"trial_{trial.trial_id}")
      trial_cfg = trial_config(cfg, values, run_dir)
      logging.info("Trial %s: %s", trial.trial_id, json.dumps(values))
      start = time.perf_counter()
      try:
        result = training.train_and_evaluate(trial_cfg,
                                             tune_report.size_check(options, trial_cfg))
        record = tune_report.record_of(trial.trial_id, values, trial_cfg, result,
                           time.perf_counter() - start)
      except TfagentError as e:  # Bad data or flags: every trial would fail; stop.
        raise keras_tuner.errors.FatalError(str(e)) from e
      except tune_report.TooLarge as e:  # Its weights alone break the budget: not trained.
        result, record = None, {"trial": trial.trial_id, "values": values, "run_dir": run_dir,
                                "seconds": time.perf_counter() - start, "rejected": str(e)}
      finally:
        keras.backend.clear_session()
      if result and options.max_latency_ms:
        text = (LATENCY_TEXT,) * 2 if cfg.data.text_pair_field else LATENCY_TEXT  # A pair's two.
        record["latency_ms"] = tune_report.latency_ms(result["saved_model"], text)
      if result:
        record["rejected"] = tune_report.budget_problem(record, options)
      tune_report.write_json(os.path.join(run_dir, tune_report.RECORD_FILE), record)
      logging.info("Trial %s: %s%s", trial.trial_id,
                   f"{options.objective} {record[options.objective]:.4f}" if result else "",
                   f"; rejected: {record['rejected']}" if record["rejected"] else "")
      if record["rejected"]:
        raise keras_tuner.errors.FailedTrialError(record["rejected"])
      return {name: record[name] for name in OBJECTIVES}

  return TrialTuner(search_space.make_oracle(
      options.tuner, keras_tuner.Objective(options.objective, OBJECTIVES[options.objective]),
      search_space.hyperparameters(space), cfg.data.seed, options.max_trials,
      cfg.train.epochs, search_space.base_values(space, cfg), options.initial_trials))


def check_task(cfg: config.Config, space: dict) -> None:
  """Fails before any trial when the space may give a value that the task refuses
  (tasks.check_config: multilabel, sentence pairs): each listed value, both ends of a range."""
  from tfagent import tasks  # pylint: disable=import-outside-toplevel
  tasks.check_tune(cfg)
  for name, spec in space.items():
    for value in spec.get("values") or (spec["min"], spec["max"]):
      try:
        tasks.check_config(search_space.apply(cfg, {name: value}))
      except ConfigError as e:
        raise ConfigError(f"--search_space: field {name!r} may take {value!r}: {e}") from None


def search_settings(cfg: config.Config, space: dict, options: TuneOptions) -> dict:
  """What makes a search the same one: the budgets too, since a finished trial was judged
  against the budgets it ran under."""
  return {"config": cfg.to_dict(), "search_space": space, "tuner": options.tuner,
          "objective": options.objective,
          "budgets": {"max_export_mb": options.max_export_mb,
                      "max_latency_ms": options.max_latency_ms}}


def check_same_search(options: TuneOptions, settings: dict) -> None:
  """A tune dir resumes only the search it holds: same base config, space, tuner, objective
  and budgets."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  path = os.path.join(options.tune_dir, SETTINGS_FILE)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      before = json.load(f)
    changed = sorted(k for k in settings if before.get(k) != settings[k])
    if changed:
      raise ConfigError(f"--tune_dir={options.tune_dir} holds another search (its "
                        f"{', '.join(changed)} differ: {path}); resume it with the same "
                        "flags, or give a new --tune_dir.")
  tune_report.write_json(path, settings)


def run_search(cfg: config.Config, space: dict, options: TuneOptions):
  """Runs (or resumes) the search; returns KerasTuner's oracle with every trial."""
  import keras_tuner  # pylint: disable=import-outside-toplevel
  check_same_search(options, search_settings(cfg, space, options))
  tuner = make_tuner(cfg, space, options)
  try:
    tuner.search(verbose=0)
  except BudgetSpent as e:
    logging.info("Tuning stops: %s.", e)
  except keras_tuner.errors.FatalError as e:
    if isinstance(e.__cause__, TfagentError):
      raise e.__cause__ from None
    raise
  return tuner.oracle


def tune(cfg: config.Config, space: dict, options: TuneOptions, present: set) -> dict:
  """Searches, scores the best trial's export on test once, writes best.flags and tuning.*.

  Args:
    cfg: the base Config (the flags given to tune), checked.
    space: a search space checked by search_space.check.
    options: the search's own settings.
    present: names of the config flags given (they go into best.flags).

  Returns:
    tuning.json's content.
  """
  from tfagent import evaluate  # pylint: disable=import-outside-toplevel
  oracle = run_search(cfg, space, options)
  records = tune_report.trial_records(oracle, options.tune_dir)
  best = tune_report.best_record(oracle, records)
  summary = {"tuner": options.tuner, "objective": options.objective,
             "search_space": space, "options": dataclasses.asdict(options),
             "best": best, "trials": records}
  # The trials are kept should test fail.
  tune_report.write_summary(options.tune_dir, summary, None)
  if not best:
    raise ConfigError(f"tfagent tune: none of the {len(records)} trials completed within the "
                      f"budgets (see {os.path.join(options.tune_dir, 'tuning.md')}).")
  summary["test"] = {k: v for k, v in evaluate.run_test_split(
      best["run_dir"], best["saved_model"], os.path.join(options.tune_dir, "test"),
      overwrite=True).items() if k in ("accuracy", "macro_f1", "examples", "roc_auc")}
  tune_report.write_summary(options.tune_dir, summary,
                            tune_report.best_flags(cfg, present, summary))
  logging.info("Best: trial %s, %s %.4f, %s; test accuracy %.4f. Wrote %s.", best["trial"],
               options.objective, best[options.objective], json.dumps(best["values"]),
               summary["test"]["accuracy"], os.path.join(options.tune_dir, "best.flags"))
  return summary


def define_flags(flag_values=FLAGS) -> None:
  """This entry point's flags: its own, then one per config field; only as a program."""
  own = dict(module_name=__name__, flag_values=flag_values)
  flags.DEFINE_string("search_space", None, "JSON file of config fields with their choices "
                      "({\"values\": [...]}) or ranges ({\"min\", \"max\", \"log\", "
                      "\"step\"}), e.g. configs/search/quickstart.json.", **own)
  flags.DEFINE_enum("tuner", "bayesian", list(TUNERS), "KerasTuner's oracle: bayesian "
                    "(Gaussian process, after a few random trials), random, or hyperband "
                    "(short trials first; --epochs is the longest).", **own)
  flags.DEFINE_integer("max_trials", 10, "Trials to run at most, over all resumed runs.", **own)
  flags.DEFINE_integer("initial_trials", 0, "Bayesian: random trials before the Gaussian "
                       "process guides; 0: 3 per searched field (KerasTuner's default).", **own)
  flags.DEFINE_string("tune_time_budget", "", "No trial starts once this much time has passed "
                      "(45m, 1h30m, 90s; a resumed search counts its trials' time already "
                      "spent); empty: no limit. A started trial finishes.", **own)
  flags.DEFINE_enum("objective", "val_accuracy", list(OBJECTIVES), "Validation metric the "
                    "search optimises (the test split is never scored while tuning).", **own)
  flags.DEFINE_string("tune_dir", "runs/tune", "Folder of the search: the oracle's state, "
                      "each trial's run, best.flags, tuning.json and tuning.md.", **own)
  flags.DEFINE_float("max_export_mb", 0.0, "Trials whose export is larger are rejected, "
                     "never chosen (before training when their weights alone are); 0: no "
                     "limit.", **own)
  flags.DEFINE_float("max_latency_ms", 0.0, "Trials whose export takes longer for one text "
                     "(median, in-process) are rejected; 0: no limit.", **own)
  config.define_flags(config.SECTIONS.values(), flag_values)


def options_from_flags() -> TuneOptions:
  """The search's own flags as TuneOptions; a bad one is a ConfigError."""
  if FLAGS.max_trials < 1:
    raise ConfigError(f"--max_trials={FLAGS.max_trials}: expected 1 or more.")
  if FLAGS.initial_trials < 0:
    raise ConfigError(f"--initial_trials={FLAGS.initial_trials}: expected 0 (the default) "
                      "or more.")
  return TuneOptions(tune_dir=FLAGS.tune_dir, tuner=FLAGS.tuner, max_trials=FLAGS.max_trials,
                     time_budget_s=parse_duration(FLAGS.tune_time_budget),
                     objective=FLAGS.objective, max_export_mb=FLAGS.max_export_mb,
                     max_latency_ms=FLAGS.max_latency_ms, initial_trials=FLAGS.initial_trials)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")

  def body():
    if not FLAGS.search_space:
      raise ConfigError("--search_space is required: a JSON file of config fields with "
                        "their choices or ranges, e.g. configs/search/quickstart.json.")
    options = options_from_flags()
    cfg = config.from_flag_values(FLAGS)
    present = {name for name in FLAGS if FLAGS[name].present}
    from tfagent import train  # pylint: disable=import-outside-toplevel
    train.check(cfg, present)
    if cfg.data.folds:
      raise ConfigError(f"--folds={cfg.data.folds}: tfagent tune scores trials on one "
                        "validation split; leave --folds out.")
    space = search_space.load(FLAGS.search_space, cfg)
    check_task(cfg, space)
    logging.info("Config: %s", json.dumps(cfg.to_dict(), sort_keys=True))
    tune(cfg, space, options, present)
  cli.run_main(body)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(
      __doc__, [__name__] + [s.__name__ for s in config.SECTIONS.values()]))
