"""What every entry point shares: flags from the config sections, grouped `--help`, exit codes.

Each entry point defines its flags once, as the config fields say
(`config.define_flags`), plus its own few; `--help` then lists every flag the
command takes, grouped by section, each with its default.
"""

import sys
import textwrap

from absl import app, flags, logging

from tfagent.errors import TfagentError

FLAGS = flags.FLAGS
HELP_ARGS = ("--help", "-help", "-h", "--helpshort", "-?")
SECTION_TITLES = {"DataConfig": "data", "ModelConfig": "model", "TrainConfig": "training",
                  "ExportConfig": "export"}


def flag_help(flag) -> str:
  """`--name: help` wrapped, then its choices and default, as absl writes them."""
  name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
  choices = f"<{'|'.join(flag.parser.enum_values)}>: " if hasattr(flag.parser, "enum_values") \
      else ""
  lines = textwrap.wrap(f"{name}: {choices}{flag.help}", 78, initial_indent="  ",
                        subsequent_indent="    ")
  return "\n".join(lines + [f"    (default: {flag.default_as_str})"])


def help_text(doc: str, groups: list, flag_values=FLAGS) -> str:
  """The command's docstring, then the flags of each group (absl module names) in order."""
  by_module = flag_values.flags_by_module_dict()
  parts = [doc.strip()]
  for group in groups:
    group_flags = sorted(by_module.get(group, []), key=lambda f: f.name)
    if group_flags:
      parts.append(f"\n{SECTION_TITLES.get(group, 'command')} flags:")
      parts.extend(flag_help(f) for f in group_flags)
  parts.append("\nTry --helpfull for TensorFlow's and absl's own flags too.")
  return "\n".join(parts)


def parse_flags(doc: str, groups: list):
  """An absl `flags_parser` whose `--help` lists every flag of `groups`, grouped."""
  def parse(argv):
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(a in HELP_ARGS for a in args):
      print(help_text(doc, groups))
      sys.exit(0)
    return app.parse_flags_with_usage(argv)
  return parse


def run_main(body) -> None:
  """Runs `body()`; a TfagentError becomes one logged line and exit code 1."""
  try:
    body()
  except TfagentError as e:
    logging.error("%s", e)
    sys.exit(1)
