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
  """`--name: help` wrapped (absl puts an enum's choices in its help), then its default."""
  name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
  lines = textwrap.wrap(f"{name}: {flag.help}", 78, initial_indent="  ",
                        subsequent_indent="    ")
  return "\n".join(lines + [f"    (default: {flag.default_as_str})"])


def help_text(doc: str, groups: list, flag_values=FLAGS) -> str:
  """The command's docstring, then the flags of each group (absl module names) in order."""
  by_module = flag_values.flags_by_module_dict()
  parts = [doc.strip()]
  for group in groups:
    found = by_module.get(group, [])
    if group == "__main__":  # absl files a program's own flags under its sys.argv[0].
      found = found + by_module.get(sys.argv[0], [])
    group_flags = sorted(found, key=lambda f: f.name)
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


COMMANDS = {  # tfagent SUBCOMMAND -> the module `python -m` runs.
    "train": "tfagent.train",
    "evaluate": "tfagent.evaluate",
    "predict": "tfagent.predict",
    "serve": "tfagent.serve",
    "client": "tfagent.client",
    "convert": "tfagent.data.convert",
    "cross_validate": "tfagent.cross_validate",
}
USAGE = """usage: tfagent COMMAND [--flagfile=FILE] [--flag=value ...]

Labelled text in, a TF Serving text classifier out.

commands:
  train           train, evaluate and export a model (--flagfile=configs/NAME.flags)
  evaluate        score an export or checkpoint on a run's test split or any labelled file
  predict         classify texts (arguments, stdin, csv/tsv/jsonl) with an export
  serve           serve exports with TF Serving's REST and gRPC protocol
  client          call a TF Serving (or tfagent serve) endpoint
  convert         validate and split a source once, into TFRecord shards
  cross_validate  K-fold cross-validation through the training path

`tfagent COMMAND --help` lists the command's flags with their defaults;
`python -m tfagent.COMMAND` is the same command."""


def main(argv=None) -> int:
  """The `tfagent` console script: runs `python -m MODULE` of the subcommand in-process."""
  import runpy
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in HELP_ARGS:
    print(USAGE)
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"tfagent: unknown command {command!r}; choose from {', '.join(COMMANDS)}.\n\n"
          f"{USAGE}", file=sys.stderr)
    return 2
  sys.argv = [f"tfagent {command}", *rest]
  runpy.run_module(COMMANDS[command], run_name="__main__", alter_sys=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
