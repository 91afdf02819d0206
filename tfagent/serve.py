"""Serves exported SavedModels with TF Serving's REST and gRPC protocol, for
development, tests and small deployments (production: the tensorflow/serving image).

  python -m tfagent.serve --model_name=quickstart --model_base_path=saved_models/quickstart
  python -m tfagent.serve --model_config_file=models.config --enable_batching \
      --batching_parameters_file=saved_models/quickstart/batching_parameters.txt

Every tensorflow_model_server flag is accepted (docs/serving.md says which are
implemented); curl http://localhost:8501/v1/models/quickstart
"""

import signal
import threading

from absl import app, flags, logging

from tfagent import cli, config
from tfagent.serving import server

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS) -> None:
  """One flag per ServerOptions field, with its default and help; called only when run."""
  config.define_flags([server.ServerOptions], flag_values, module_name=__name__)


def serve(options: server.ServerOptions) -> None:
  """Serves until SIGINT or SIGTERM."""
  running = server.start(options)
  stopped = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stopped.set())
  stopped.wait()
  logging.info("Shutting down.")
  running.stop()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  options = config.section_from_flags(server.ServerOptions, FLAGS)
  if options.version:
    print(server.version_text())
    return
  cli.run_main(lambda: serve(options))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(__doc__, [__name__]))
