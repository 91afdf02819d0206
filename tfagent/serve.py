"""Serves exported SavedModels with TF Serving's REST and gRPC protocol, for
development, tests and small deployments (production: the tensorflow/serving image).

  python -m tfagent.serve --model_name=quickstart --model_base_path=saved_models/quickstart
  python -m tfagent.serve --model_config_file=models.config --enable_batching \
      --batching_parameters_file=saved_models/quickstart/batching_parameters.txt

Every tensorflow_model_server flag is accepted (docs/serving.md says which are
implemented); curl http://localhost:8501/v1/models/quickstart
"""

import dataclasses
import signal
import sys
import threading

from absl import app, flags, logging

from tfagent import cli
from tfagent.errors import TfagentError
from tfagent.serving.server import Server, ServerOptions, version_text

FLAGS = flags.FLAGS
_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_flags(flag_values=FLAGS) -> None:
  """One flag per ServerOptions field, with its default and help; called only when run."""
  for field in dataclasses.fields(ServerOptions):
    kind = field.type if isinstance(field.type, type) else eval(field.type)  # noqa: S307
    help_text = field.metadata["help"]
    if field.metadata["ignored"]:
      help_text += " Accepted for tensorflow_model_server compatibility; ignored here."
    _DEFINE[kind](field.name, field.default, help_text, module_name=__name__,
                  flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  options = ServerOptions(**{f.name: FLAGS[f.name].value
                             for f in dataclasses.fields(ServerOptions)})
  if options.version:
    print(version_text())
    return
  try:
    server = Server(options)
    server.start()
  except (TfagentError, OSError) as e:
    logging.error("Failed to start server. Error: %s", e)
    sys.exit(1)
  stopped = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stopped.set())
  stopped.wait()
  logging.info("Shutting down.")
  server.stop()


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(__doc__, [__name__]))
