"""Search spaces of `tfagent tune`: a JSON file of config fields with their choices or ranges.

  {"dropout": {"min": 0.1, "max": 0.6},
   "learning_rate": {"min": 1e-4, "max": 3e-3, "log": true},
   "hidden_dim": {"values": [32, 64, 128]}}

Fields are named by their flag (as in configs/*.flags). Every field and value is
checked against the config's own definition (type, choices, the models it
applies to) and the range below, before anything runs; a bad one is one
ConfigError naming the field. keras-free: KerasTuner's HyperParameters are built
by `hyperparameters`, which imports keras_tuner only when called.
"""

import dataclasses
import json
import math

from absl import logging

from tfagent import config
from tfagent.errors import ConfigError

INF = math.inf
# The fields a search may vary, with their valid range (inclusive). Others (paths, the
# data set, the seed, the split) would make trials incomparable or are not hyperparameters.
RANGES = {
    "dropout": (0.0, 0.95), "learning_rate": (1e-7, 1.0), "backbone_learning_rate": (1e-8, 1.0),
    "weight_decay": (0.0, 1.0), "warmup_fraction": (0.0, 0.9), "epochs": (1, 1000),
    "early_stopping_patience": (0, 100), "batch_size": (1, 65536),
    "vocab_size": (100, 10_000_000), "sequence_length": (4, 8192), "ngrams": (1, 2),
    "embedding_dim": (1, 4096), "hidden_dim": (1, 4096), "num_layers": (1, 48),
    "num_heads": (1, 64), "intermediate_dim": (1, 16384), "ensemble_size": (1, 16),
    "wide_ngrams": (0, 5), "wide_min_count": (1, 1000), "wide_vocab_size": (1000, 100_000_000),
    "wide_c": (0.0, 1000.0), "max_train_examples": (0, 10**9), "bucket_width": (0, 1024),
    "truncation": None, "freeze_backbone": None, "mixed_precision": None,
}
SPEC_KEYS = ({"values"}, {"min", "max", "log", "step"})


def fields() -> dict:
  """Flag name -> `(section name, dataclasses.Field)` of every config field."""
  out = {}
  for name, section in config.SECTIONS.items():
    for field in dataclasses.fields(section):
      out[config.flag_name(section, field)] = (name, field)
  return out


def load(path: str, cfg: config.Config) -> dict:
  """Reads and checks a search space file against the base config `cfg`; returns it."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (gfile: any filesystem)
  if not tf.io.gfile.exists(path):
    raise ConfigError(f"--search_space={path}: no such file; give a JSON file such as "
                      "configs/search/quickstart.json.")
  with tf.io.gfile.GFile(path) as f:
    try:
      space = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"--search_space={path}: not valid JSON ({e}).") from None
  check(space, cfg, path)
  return space


def check(space, cfg: config.Config, where: str = "search space") -> None:
  """Fails on the first bad field of `space`, naming it and what would be valid."""
  if not isinstance(space, dict) or not space:
    raise ConfigError(f"{where}: expected a JSON object of config fields, e.g. "
                      '{"dropout": {"min": 0.1, "max": 0.5}}; got ' + json.dumps(space) + ".")
  known = fields()
  for name, spec in space.items():
    if name not in known:
      raise ConfigError(f"{where}: field {name!r} is not a config field; tunable: "
                        f"{', '.join(sorted(RANGES))}.")
    if name not in RANGES:
      raise ConfigError(f"{where}: field {name!r} cannot be searched (paths, data and split "
                        f"settings stay fixed); tunable: {', '.join(sorted(RANGES))}.")
    section, field = known[name]
    models = field.metadata["models"]
    if models and cfg.model.name not in models:
      raise ConfigError(f"{where}: field {name!r} applies to --model={'/'.join(models)}, not "
                        f"to the base config's --model={cfg.model.name}.")
    check_spec(name, spec, field, where)


def check_spec(name: str, spec, field: dataclasses.Field, where: str) -> None:
  """One field's `{"values": [...]}` or `{"min", "max", "log", "step"}`."""
  kind = type(field.default)
  if not isinstance(spec, dict) or not any(set(spec) <= keys and spec for keys in SPEC_KEYS):
    raise ConfigError(f"{where}: field {name!r}: expected {{\"values\": [...]}} or "
                      f"{{\"min\": A, \"max\": B}} (optional \"log\", \"step\"); got "
                      f"{json.dumps(spec)}.")
  if "values" in spec:
    values = spec["values"]
    if not isinstance(values, list) or not values:
      raise ConfigError(f"{where}: field {name!r}: \"values\" must be a non-empty list; got "
                        f"{json.dumps(values)}.")
    if len(set(values)) != len(values):
      raise ConfigError(f"{where}: field {name!r}: \"values\" {values} repeats a value.")
    for value in values:
      check_value(name, value, field, where)
    return
  if kind not in (int, float):
    raise ConfigError(f"{where}: field {name!r} is a {kind.__name__}: give its choices as "
                      f"{{\"values\": [...]}}, not a range.")
  for key in ("min", "max"):
    if key not in spec:
      raise ConfigError(f"{where}: field {name!r}: a range needs both \"min\" and \"max\".")
    check_value(name, spec[key], field, where)
  if spec["min"] >= spec["max"]:
    raise ConfigError(f"{where}: field {name!r}: min {spec['min']} must be below max "
                      f"{spec['max']} (one value: {{\"values\": [{spec['min']}]}}).")
  if spec.get("log") not in (None, True, False) or (spec.get("log") and spec["min"] <= 0):
    raise ConfigError(f"{where}: field {name!r}: \"log\" is true or false, and a log range "
                      f"needs min > 0; got {json.dumps(spec)}.")
  step = spec.get("step")
  if step is not None and (not is_type(step, kind) or step <= 0):
    raise ConfigError(f"{where}: field {name!r}: \"step\" must be a positive {kind.__name__}; "
                      f"got {json.dumps(step)}.")


def is_type(value, kind) -> bool:
  """Whether a JSON value fits a config field of type `kind` (an int fits a float field)."""
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, kind)


def check_value(name: str, value, field: dataclasses.Field, where: str) -> None:
  """One value: the field's type, then its choices or RANGES' bounds."""
  kind, choices, bounds = type(field.default), field.metadata["choices"], RANGES[name]
  if not is_type(value, kind):
    raise ConfigError(f"{where}: field {name!r}: {json.dumps(value)} is not a "
                      f"{kind.__name__} (the field's type).")
  if choices and value not in choices:
    raise ConfigError(f"{where}: field {name!r}: {value!r} is not one of its choices "
                      f"{', '.join(choices)}.")
  if bounds and not bounds[0] <= value <= bounds[1]:
    raise ConfigError(f"{where}: field {name!r}: {value} is outside its valid range "
                      f"{bounds[0]:g}..{bounds[1]:g}.")


def hyperparameters(space: dict):
  """KerasTuner's HyperParameters for a checked `space` (Choice, Int or Float per field)."""
  import keras_tuner  # pylint: disable=import-outside-toplevel
  hp, known = keras_tuner.HyperParameters(), fields()
  for name, spec in space.items():
    kind = type(known[name][1].default)
    if "values" in spec:
      hp.Choice(name, [kind(v) for v in spec["values"]])
      continue
    sampling = "log" if spec.get("log") else "linear"
    make = hp.Int if kind is int else hp.Float
    make(name, kind(spec["min"]), kind(spec["max"]), step=spec.get("step"), sampling=sampling)
  return hp


def base_values(space: dict, cfg: config.Config) -> dict:
  """The base config's value of each searched field, or {} when one lies outside `space`."""
  known, values = fields(), {}
  for name, spec in space.items():
    section, field = known[name]
    value = getattr(getattr(cfg, section), field.name)
    if "values" in spec:
      inside = value in [type(field.default)(v) for v in spec["values"]]
    else:
      step = spec.get("step")
      inside = spec["min"] <= value <= spec["max"] and (
          not step or math.isclose((value - spec["min"]) / step,
                                   round((value - spec["min"]) / step)))
    if not inside:
      return {}
    values[name] = value
  return values


def make_oracle(tuner: str, objective, hp, seed: int, max_trials: int, max_epochs: int,
                first: dict, initial_trials: int = 0):
  """KerasTuner's oracle for `tuner` ("hyperband", "random" or "bayesian").

  `first` (the base config's values, or {}) is the first trial, as Optuna's enqueue_trial:
  the search starts where the hand-made config stands and cannot end below it on
  validation (Hyperband's brackets choose every trial, so it starts at random).
  `initial_trials`: random trials before the Bayesian oracle's Gaussian process (0:
  KerasTuner's default, 3 per searched field, which eats short budgets).
  """
  import keras_tuner  # pylint: disable=import-outside-toplevel
  # Rejected trials (over a size or latency budget) count as failed: never a reason to stop.
  common = dict(objective=objective, hyperparameters=hp, seed=seed, allow_new_entries=False,
                max_consecutive_failed_trials=max_trials + 1)
  if tuner == "hyperband":  # Its brackets choose every trial's values and epochs.
    return keras_tuner.oracles.HyperbandOracle(max_epochs=max_epochs, factor=3, **common)
  if tuner == "random":
    kind = keras_tuner.oracles.RandomSearchOracle
  else:
    kind = keras_tuner.oracles.BayesianOptimizationOracle
    common["num_initial_points"] = initial_trials or None
  logging.info("First trial: %s.", json.dumps(first) if first else
               "random (a value of the base config lies outside the search space)")

  class StartsAtTheBase(kind):
    """`kind`, whose first trial is `first`."""

    def populate_space(self, trial_id):
      if first and not self.trials:
        return {"status": "RUNNING", "values": dict(first)}
      return super().populate_space(trial_id)

  return StartsAtTheBase(max_trials=max_trials, **common)


def apply(cfg: config.Config, values: dict) -> config.Config:
  """`cfg` with the fields named in `values` (flag names) set; other keys are ignored."""
  known, parts = fields(), {}
  for name, value in values.items():
    if name in known:
      section, field = known[name]
      parts.setdefault(section, {})[field.name] = type(field.default)(value)
  return dataclasses.replace(cfg, **{
      section: dataclasses.replace(getattr(cfg, section), **changes)
      for section, changes in parts.items()})


def describe(spec: dict) -> str:
  """`0.1..0.6 (log)` or `32, 64, 128`: a field's spec in a line."""
  if "values" in spec:
    return ", ".join(str(v) for v in spec["values"])
  return f"{spec['min']}..{spec['max']}" + (" (log)" if spec.get("log") else "")
