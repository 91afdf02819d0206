"""config.py: one definition per setting; flags are derived from the dataclass fields."""

import dataclasses

from absl import flags
import pytest

from tfagent import config, config_flags
from tfagent.errors import ConfigError


def defined_flags() -> flags.FlagValues:
  values = flags.FlagValues()
  config.define_flags(config.SECTIONS.values(), values)
  values(["tfagent"])
  return values


def test_every_config_field_has_exactly_one_flag_with_the_same_default():
  values = defined_flags()
  fields = [(section, field) for section in config.SECTIONS.values()
            for field in dataclasses.fields(section)]
  names = [config.flag_name(section, field) for section, field in fields]
  assert len(set(names)) == len(names), "two fields share a flag"
  assert sorted(values.flags_by_module_dict().keys()) == sorted(
      s.__name__ for s in config.SECTIONS.values())
  assert sorted(f.name for m in values.flags_by_module_dict().values() for f in m) == sorted(names)
  for (section, field), name in zip(fields, names):
    assert values[name].default == field.default, (section.__name__, field.name)
    assert field.metadata["help"] in values[name].help, name
  assert config.from_flag_values(values) == config.Config()


def test_a_field_without_a_flag_is_an_error():
  values = flags.FlagValues()
  config.define_flags([config.DataConfig], values)
  values(["tfagent"])
  with pytest.raises(ConfigError, match=r"ModelConfig\.\w+ has no flag"):
    config.section_from_flags(config.ModelConfig, values)


def test_flag_args_of_a_config_parse_back_to_it_under_renamed_flags():
  cfg = config.Config(model=config.ModelConfig(name="transformer", num_heads=2),
                      train=config.TrainConfig(jit_compile=True, learning_rate=1e-3))
  args = config.to_flag_args(cfg)
  assert "--model=transformer" in args and "--jit_compile" in args  # ModelConfig.name is --model.
  assert config.from_args(cfg, epochs=3) == (
      dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3)), {"epochs"})
  assert config_flags.sections(config.Config) == config.SECTIONS


def test_python_overrides_of_lists_and_none_are_read_as_meant():
  """tfagent.train(class_names=["a", "b"]) gave the classes "['a'" and " 'b']", and
  test_path=None the file "None"."""
  cfg, _ = config.from_args(None, class_names=["alpha", "mid", "zeta"], epochs=2)
  assert cfg.data.class_names == "alpha,mid,zeta" and cfg.train.epochs == 2
  assert config.from_args(None, class_names=("a", "b"))[0].data.class_names == "a,b"
  with pytest.raises(ConfigError, match=r"test_path=None: give a value"):
    config.from_args(None, test_path=None)
  with pytest.raises(ConfigError, match=r"class_names=\['Arts, Culture', 'Sport'\]: an item "
                     "holds a comma"):
    config.from_args(None, class_names=["Arts, Culture", "Sport"])
