"""absl flags derived from a frozen config of settings, and the config back from flags.

A config is a frozen dataclass whose fields are sections, each a frozen dataclass
of fields made with `setting(...)`: the default, the help text of its flag (the
reason for the default), its valid choices, the models it applies to and, where
it differs from the field's, the flag's name. As ml_collections.config_flags
derives every flag from one config, entry points define one flag per field
(`define_flags`) and turn the parsed values back into the config once
(`from_flag_values`). Nothing here names tfagent's sections: tfagent/config.py
defines them (and its functions of the same names bind them to its Config).
"""

import dataclasses

from tfagent.errors import ConfigError


def setting(default, help: str, choices: tuple = None,  # pylint: disable=redefined-builtin
            models: tuple = None, flag: str = None):
  """A config field with the help text of its flag, its choices, models and flag name."""
  return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                      "models": models, "flag": flag})


def sections(config_cls) -> dict:
  """Section name -> section class of a config dataclass, in field order."""
  return {f.name: type(f.default) for f in dataclasses.fields(config_cls)}


def flag_name(section, field: dataclasses.Field) -> str:
  """The flag of a config field: its own name, or the one its `setting` gives it."""
  del section  # The field carries its flag's name; kept for the callers' (section, field) pairs.
  return field.metadata.get("flag") or field.name


def define_flags(section_classes, flag_values, module_name: str = "") -> None:
  """Defines one absl flag per field of each config section, with its default and help.

  Each flag is defined as belonging to its section (`--help` groups them so), or to
  `module_name` when given (an entry point's own settings, e.g. serve's ServerOptions).
  """
  from absl import flags  # Only entry points call this.
  definers = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
              float: flags.DEFINE_float, str: flags.DEFINE_string}
  for section in section_classes:
    for field in dataclasses.fields(section):
      name, meta = flag_name(section, field), field.metadata
      help_text = meta["help"]
      if meta["models"]:
        help_text += f" [{', '.join(meta['models'])}]"
      if meta["choices"]:
        flags.DEFINE_enum(name, field.default, list(meta["choices"]), help_text,
                          flag_values=flag_values, module_name=module_name or section.__name__)
      else:
        definers[type(field.default)](name, field.default, help_text, flag_values=flag_values,
                                      module_name=module_name or section.__name__)


def section_from_flags(section, flag_values):
  """One config section from parsed flags; a field without a flag is an error."""
  values = {}
  for field in dataclasses.fields(section):
    name = flag_name(section, field)
    if name not in flag_values:
      raise ConfigError(f"{section.__name__}.{field.name} has no flag --{name}; "
                        "define the section's flags with config.define_flags.")
    values[field.name] = flag_values[name].value
  return section(**values)


def from_flag_values(config_cls, flag_values):
  """The `config_cls` of parsed flags (every section's flags defined)."""
  return config_cls(**{name: section_from_flags(section, flag_values)
                       for name, section in sections(config_cls).items()})


def from_args(config_cls, flagfile_or_config=None, overrides: dict = None) -> tuple:
  """`(config, flags set)` from a flagfile path (or a config, or None) and flag overrides.

  Overrides are flag names with values, e.g. `epochs=1, dataset="csv:my.csv"`; an
  unknown name or a bad value is a ConfigError, as on the command line. The flags
  set are those of the flagfile and the overrides (a config's fields count as given).
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  overrides = overrides or {}
  values = flags.FlagValues()
  define_flags(sections(config_cls).values(), values)
  argv = ["tfagent"]
  if isinstance(flagfile_or_config, config_cls):
    argv += to_flag_args(flagfile_or_config)
  elif flagfile_or_config:
    argv.append(f"--flagfile={flagfile_or_config}")
  argv += [f"--{name}={flag_text(name, value)}" for name, value in overrides.items()]
  try:
    values(argv)
  except flags.Error as e:
    raise ConfigError(str(e)) from None
  present = set(overrides) if isinstance(flagfile_or_config, config_cls) else \
      {name for name in values if values[name].present}
  return from_flag_values(config_cls, values), present


def flag_text(name: str, value) -> str:
  """An override's value as its flag's text: a list or tuple joined by commas (the flags'
  list separator); None, or a list item holding a comma, a ConfigError naming the flag (str()
  would give "None" or "['a', 'b']", taken as a value)."""
  if value is None:
    raise ConfigError(f"{name}=None: give a value ('' for an empty string), or leave it out "
                      "for its default.")
  if isinstance(value, (list, tuple)):
    if any("," in str(item) for item in value):
      raise ConfigError(f"{name}={value!r}: an item holds a comma, which separates them on "
                        "the command line; give a Config for such values.")
    return ",".join(map(str, value))
  return str(value)


def check_applicable(cfg, present=None) -> None:
  """Fails when a setting that does not apply to the chosen model is set.

  Args:
    cfg: the run's config (its `model.name` is the chosen model).
    present: names of the flags given on the command line or in a flagfile;
      None counts every field whose value differs from its default as set.
  """
  model = cfg.model.name
  wrong, own = [], []
  for name, section in sections(type(cfg)).items():
    for field in dataclasses.fields(section):
      models = field.metadata["models"]
      flag = flag_name(section, field)
      if models and model in models:
        own.append(f"--{flag}")
      is_set = flag in present if present is not None else \
          getattr(getattr(cfg, name), field.name) != field.default
      if models and model not in models and is_set:
        wrong.append(f"--{flag} (for {', '.join(models)})")
  if wrong:
    raise ConfigError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to "
                      f"--model={model}; its own flags are {', '.join(own)}, and every model "
                      "takes the data, training, export, --sequence_length, --dropout and "
                      "--wide_* flags.")


def to_flag_args(cfg) -> list:
  """`--flag=value` arguments that set every field of `cfg` (inverse of from_flag_values)."""
  args = []
  for name, section in sections(type(cfg)).items():
    for field in dataclasses.fields(section):
      value = getattr(getattr(cfg, name), field.name)
      flag = flag_name(section, field)
      args.append(f"--{flag}" if value is True else f"--no{flag}" if value is False
                  else f"--{flag}={value}")
  return args
