"""Training entry point: flags become a Config, then tfagent.training runs it.

  python -m tfagent.train --flagfile=configs/quickstart.flags
"""

import json
import sys
import types

from absl import app, flags, logging

from tfagent import cli, config

FLAGS = flags.FLAGS
# TensorFlow is imported only once the flags are parsed (in `check`): `--help`
# and flag errors answer in a second, not after the ~10 s TensorFlow takes to import.


def config_from_flags() -> config.Config:
  """The one place flags become a frozen Config; FLAGS is read nowhere else."""
  return config.from_flag_values(FLAGS)


def define_flags(flag_values=FLAGS) -> None:
  """Defines this entry point's flags, one per config field; called only as a program."""
  config.define_flags(config.SECTIONS.values(), flag_values)


FLAG_GROUPS = [section.__name__ for section in config.SECTIONS.values()]


def run(flagfile_or_config=None, **overrides) -> dict:
  """The Python API `tfagent.train(...)`: trains, exports and evaluates as the command does.

  Args:
    flagfile_or_config: a flagfile path (configs/NAME.flags), a Config, or None.
    **overrides: flags and their values, e.g. `epochs=1, dataset="csv:my.csv"`.

  Returns:
    eval/metrics.json's content: test metrics, validation figures, the export's
    path under "saved_model".
  """
  cfg, present = config.from_args(flagfile_or_config, **overrides)
  check(cfg, present)
  return train_and_evaluate(cfg)


def check(cfg: config.Config, present) -> None:
  """Checks before any work that the flags given (`present`) apply to the model and that
  the model's settings are valid; an error names the flag."""
  config.check_applicable(cfg, present)
  logging.info("Loading TensorFlow and Keras...")  # About 10 s, before any other line.
  from tfagent import distill, fileio, models, semi  # pylint: disable=import-outside-toplevel
  models.check_model_config(cfg.model)
  distill.check_config(cfg)
  semi.check_config(cfg)
  fileio.check_filesystems({"model_dir": cfg.train.model_dir,
                            "export_dir": cfg.export.export_dir})


def train_and_evaluate(cfg: config.Config) -> dict:
  """tfagent.training.train_and_evaluate: trains, exports and evaluates `cfg`."""
  from tfagent import training  # pylint: disable=import-outside-toplevel
  return training.train_and_evaluate(cfg)


class _CallableModule(types.ModuleType):
  """Makes `tfagent.train(...)` the Python API while `tfagent.train.X` stays this module."""

  def __call__(self, flagfile_or_config=None, **overrides) -> dict:
    return run(flagfile_or_config, **overrides)


sys.modules[__name__].__class__ = _CallableModule


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.run_main(train_from_flags)


def train_from_flags() -> None:
  """Reads the flags, checks them, and trains, evaluates and exports."""
  cfg = config_from_flags()
  check(cfg, {name for name in FLAGS if FLAGS[name].present})
  logging.info("Config: %s", json.dumps(cfg.to_dict(), sort_keys=True))
  result = train_and_evaluate(cfg)
  if "accuracy" not in result:  # The chief logs the run's summary (tfagent.progress).
    logging.info("Done: worker finished; the chief writes the SavedModel.")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(__doc__, FLAG_GROUPS))
