"""Both ports over one ModelManager: what `python -m tfagent.serve` runs.

ServerOptions holds every flag tensorflow_model_server has (model_servers/
main.cc, server.h: same names and defaults unless a comment says why not),
plus a few tfagent-only bounds. Flags TF Serving has that change nothing here
are one table, IGNORED_FLAGS: accepted, and a non-default value logged as ignored.
"""

import dataclasses
import threading
import time

from absl import logging
import grpc
import uvicorn

from tfagent import fileio, signatures
from tfagent.errors import ConfigError
from tfagent.serving import (api, batching, grpc_api, http_limits, manager, metrics, pool,
                             protos, rest, servable)

_CPUS = batching._cpu_count()  # pylint: disable=protected-access


def _flag(default, help_text: str, ignored: bool = False):
  """A ServerOptions field: its flag's default and help; `ignored`: accepted, not implemented."""
  return dataclasses.field(default=default, metadata={"help": help_text, "ignored": ignored})


# tensorflow_model_server flags that change nothing in this server: (name, TF's default, why).
IGNORED_FLAGS = (
    ("enable_grpc_healthcheck_service", False, "No gRPC health service here."),
    ("enable_profiler", True, "No TensorFlow profiler service here."),
    ("enable_per_model_batching_parameters", False, "--batching_parameters_file only."),
    ("tensorflow_session_config_file", "", "No session: TF2 functions."),
    ("platform_config_file", "", "TensorFlow SavedModels only."),
    ("per_process_gpu_memory_fraction", 0.0, "TensorFlow's GPU allocator decides."),
    ("num_load_threads", 0, "Versions load one at a time."),
    ("num_unload_threads", 0, "Versions unload one at a time."),
    ("flush_filesystem_caches", True, "No file system caches kept."),
    ("remove_unused_fields_from_bundle_metagraph", True, "The MetaGraph is not kept."),
    ("prefer_tflite_model", False, "No TF Lite here."),
    ("num_tflite_pools", _CPUS, "No TF Lite here."),
    ("num_tflite_interpreters_per_pool", 1, "No TF Lite here."),
    ("xla_cpu_compilation_enabled", False, "No XLA JIT here."),
    ("xla_gpu_compilation_enabled", False, "No XLA JIT here."),
    ("thread_pool_factory_config_file", "", "No custom thread pools here."),
    ("mixed_precision", "", "Precision is the export's."),
    ("skip_initialize_tpu", False, "No TPU here."),
)


@dataclasses.dataclass(frozen=True)
class _ImplementedOptions:
  """tensorflow_model_server's options, then tfagent's own (each flag's help says which)."""
  # gRPC.
  port: int = _flag(8500, "gRPC port (PredictionService, ModelService); 0 turns it off "
                    "(tensorflow_model_server requires it or --grpc_socket_path).")
  grpc_socket_path: str = _flag("", "Also serve gRPC on this UNIX socket.")
  grpc_channel_arguments: str = _flag("", "gRPC server arguments, e.g. "
                                      "grpc.max_connection_age_ms=2000,k=v.")
  grpc_max_threads: int = _flag(4 * _CPUS, "Threads that run gRPC model calls (TF's default: "
                                "4 per core).")
  ssl_config_file: str = _flag("", "SSLConfig text proto: serve gRPC over TLS.")
  use_alts_credentials: bool = _flag(False, "Serve gRPC with Google ALTS credentials.")
  enable_serialization_as_tensor_content: bool = _flag(
      False, "Predict outputs in tensor_content instead of float_val/int64_val/string_val.")
  # REST. TF Serving's REST port defaults to 0 (off); here 8501, the port every
  # README command and the official image's entrypoint use.
  rest_api_port: int = _flag(8501, "HTTP/REST port; 0 turns it off.")
  rest_api_num_threads: int = _flag(4 * _CPUS, "Threads for REST work off the event loop "
                                    "(unbatched calls, large bodies; TF's default: 4 per "
                                    "core); past 10 calls waiting a thread, 503.")
  rest_api_timeout_in_ms: int = _flag(30_000, "REST request deadline; past it the answer is "
                                      "504. 0: none.")
  rest_api_enable_cors_support: bool = _flag(False, "Add CORS headers to REST answers.")
  # Models.
  model_name: str = _flag("default", "Name the model is served under (ignored with "
                          "--model_config_file).")
  model_base_path: str = _flag("", "Directory of integer versions, e.g. saved_models/NAME "
                               "(ignored with --model_config_file).")
  model_config_file: str = _flag("", "ModelServerConfig text proto: models, version policies "
                                 "and labels.")
  model_config_file_poll_wait_seconds: int = _flag(0, "Re-read --model_config_file this often; "
                                                   "0: read once.")
  allow_version_labels_for_unavailable_models: bool = _flag(
      False, "Let a version label name a version that is not loaded (yet).")
  file_system_poll_wait_seconds: int = _flag(1, "Seconds between polls of the base paths for "
                                             "new versions; 0 polls once, < 0 never.")
  max_num_load_retries: int = _flag(5, "Retries of a version that fails to load.")
  load_retry_interval_micros: int = _flag(60_000_000, "Wait between load retries.")
  saved_model_tags: str = _flag(signatures.SERVE_TAG, "Comma-separated tags of the MetaGraph "
                                "to load.")
  enable_model_warmup: bool = _flag(True, "Replay assets.extra/tf_serving_warmup_requests "
                                    "before serving a version.")
  num_request_iterations_for_warmup: int = _flag(0, "Times each warm-up record is replayed "
                                                 "(0 or 1: once).")
  enable_signature_method_name_check: bool = _flag(
      False, "Refuse predict/classify/regress on signatures whose method_name is not theirs.")
  monitoring_config_file: str = _flag("", "MonitoringConfig text proto: the Prometheus page "
                                      "and its path (without it: on, at "
                                      f"{rest.DEFAULT_METRICS_PATH}).")
  # Batching.
  enable_batching: bool = _flag(False, "Merge concurrent requests into one model call.")
  batching_parameters_file: str = _flag("", "BatchingParameters text proto; default TF "
                                        "Serving's defaults.")
  # TensorFlow.
  tensorflow_session_parallelism: int = _flag(0, "Both thread pools' size; 0 lets TensorFlow "
                                              "pick.")
  tensorflow_intra_op_parallelism: int = _flag(0, "Threads one TensorFlow op may use; 0 lets "
                                               "TensorFlow pick.")
  tensorflow_inter_op_parallelism: int = _flag(0, "TensorFlow ops run at once; 0 lets "
                                               "TensorFlow pick (1 often cuts a small "
                                               "model's latency).")
  version: bool = _flag(False, "Print the versions and exit.")
  # tfagent only.
  bind_address: str = _flag("0.0.0.0", "Address both ports bind (tfagent only; 127.0.0.1 "
                            "keeps the server local).")
  rest_api_max_body_bytes: int = _flag(32 << 20, "Largest REST body; larger gets 413 "
                                       "(tfagent only; 0: no limit).")
  rest_api_max_header_bytes: int = _flag(64 << 10, "Largest request line plus headers; larger "
                                         "gets 431 and the connection closes (tfagent only).")
  rest_api_read_timeout_seconds: float = _flag(30.0, "A request must arrive whole within this "
                                               "long of its first byte (and a new connection's "
                                               "first request as well); else 408 and close "
                                               "(tfagent only; 0: no limit).")
  rest_api_keep_alive_timeout_seconds: float = _flag(30.0, "An idle keep-alive connection is "
                                                     "closed after this long (tfagent only).")
  rest_api_max_connections: int = _flag(1000, "Connections served at once; past it requests "
                                        "get 503 (tfagent only).")
  max_input_string_bytes: int = _flag(1 << 20, "Longest string in any input (a text or a "
                                      "serialized example); longer gets 400, as one huge "
                                      "text stalls every request batched with it (tfagent "
                                      "only; 0: no limit).")


ServerOptions = dataclasses.make_dataclass(
    "ServerOptions", [(name, type(default), _flag(default, why, ignored=True))
                      for name, default, why in IGNORED_FLAGS],
    bases=(_ImplementedOptions,), frozen=True)
ServerOptions.__doc__ = "Every flag of the server: implemented ones, then IGNORED_FLAGS."


def ignored_flags(options: ServerOptions) -> list:
  """Accepted-and-ignored flags set to a value other than their default."""
  return [f.name for f in dataclasses.fields(options)
          if f.metadata["ignored"] and getattr(options, f.name) != f.default]


def model_configs(options: ServerOptions) -> list:
  """Models from --model_config_file (which overrides --model_name/--model_base_path)."""
  fileio.check_filesystems({"model_config_file": options.model_config_file,
                            "model_base_path": options.model_base_path})
  if options.model_config_file:
    text = fileio.read_text(options.model_config_file, "model_config_file")
    return manager.parse_model_config(text, f"--model_config_file={options.model_config_file}")
  if not options.model_base_path:
    raise ConfigError("Both --model_base_path and --model_config_file are empty; give "
                      "--model_base_path (with --model_name) or --model_config_file.")
  return manager.single_model(options.model_name, options.model_base_path)


def batching_options(options: ServerOptions):
  """BatchingOptions when --enable_batching, from --batching_parameters_file if given."""
  if not options.enable_batching:
    if options.batching_parameters_file:
      raise ConfigError("--batching_parameters_file is set without --enable_batching.")
    return None
  if not options.batching_parameters_file:
    return batching.BatchingOptions()
  flag = f"--batching_parameters_file={options.batching_parameters_file}"
  params = protos.parse_text_file(options.batching_parameters_file, "BatchingParameters",
                                  "batching_parameters_file")
  return batching.options_from_proto(params, flag)


def metrics_path(options: ServerOptions) -> str | None:
  """The Prometheus page's path (None: off), from --monitoring_config_file."""
  if not options.monitoring_config_file:
    return rest.DEFAULT_METRICS_PATH
  config = protos.parse_text_file(options.monitoring_config_file, "MonitoringConfig",
                                  "monitoring_config_file")
  if not config.prometheus_config.enable:
    return None
  return config.prometheus_config.path or rest.DEFAULT_METRICS_PATH


def grpc_credentials(options: ServerOptions):
  """TLS from --ssl_config_file, ALTS, or None (insecure), as BuildServerCredentials."""
  if options.use_alts_credentials and options.ssl_config_file:
    raise ConfigError("Either --use_alts_credentials must be false or --ssl_config_file "
                      "must be empty.")
  if options.use_alts_credentials:
    return grpc.alts_server_credentials()
  if not options.ssl_config_file:
    return None
  ssl = protos.parse_text_file(options.ssl_config_file, "SSLConfig", "ssl_config_file")
  return grpc.ssl_server_credentials(
      [(ssl.server_key.encode(), ssl.server_cert.encode())],
      root_certificates=ssl.custom_ca.encode() or None,
      require_client_auth=ssl.client_verify)


def set_tensorflow_threads(intra_op: int, inter_op: int, session: int = 0) -> None:
  """TensorFlow's thread pools for model calls; 0 keeps TensorFlow's choice.

  Fewer threads than cores can cut the latency of small models, whose ops are
  too short to share: the server's own threads then keep a core.
  --tensorflow_session_parallelism sets both pools unless the others are given.
  """
  import tensorflow as tf
  if intra_op > 0 and inter_op > 0 and session > 0:
    raise ConfigError("Either configure --tensorflow_session_parallelism or "
                      "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
                      "separately. You cannot configure all.")
  if session > 0 and intra_op <= 0 and inter_op <= 0:
    intra_op = inter_op = session
  threading_config = tf.config.threading
  for kind, value, setter in (
      ("intra", intra_op, threading_config.set_intra_op_parallelism_threads),
      ("inter", inter_op, threading_config.set_inter_op_parallelism_threads)):
    if value < 0:
      raise ConfigError(f"--tensorflow_{kind}_op_parallelism={value}: give a number of "
                        "threads, or 0 for TensorFlow's choice.")
    if value:
      try:
        setter(value)
      except RuntimeError as e:  # TensorFlow already ran an op in this process.
        raise ConfigError(f"--tensorflow_{kind}_op_parallelism={value}: {e}") from None


def load_options(options: ServerOptions, on_batch) -> servable.LoadOptions:
  return servable.LoadOptions(
      batching=batching_options(options), tags=signatures.parse_tags(options.saved_model_tags),
      warmup=options.enable_model_warmup,
      warmup_iterations=options.num_request_iterations_for_warmup,
      max_load_retries=max(0, options.max_num_load_retries),
      load_retry_interval_seconds=max(0, options.load_retry_interval_micros) / 1e6,
      freeze_heap=True, on_batch=on_batch)


class Server:
  """Loads the models, then serves gRPC and REST until `stop()`."""

  def __init__(self, options: ServerOptions):
    self.options = options
    for name in ignored_flags(options):
      logging.warning("--%s=%s is accepted and ignored: this server does not implement it "
                      "(docs/serving.md lists such flags).", name, getattr(options, name))
    if options.model_config_file and options.model_base_path:
      logging.info("--model_config_file is given: --model_name and --model_base_path are "
                   "ignored, as tensorflow_model_server ignores them.")
    if options.rest_api_port and options.rest_api_port == options.port:
      raise ConfigError(f"--rest_api_port={options.rest_api_port} is the gRPC --port too; "
                        "give them different ports.")
    set_tensorflow_threads(options.tensorflow_intra_op_parallelism,
                           options.tensorflow_inter_op_parallelism,
                           options.tensorflow_session_parallelism)
    self.metrics = metrics.Metrics()
    self._metrics_path = metrics_path(options)
    self._credentials = grpc_credentials(options)
    try:
      self._channel_args = grpc_api.parse_channel_arguments(options.grpc_channel_arguments)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    self.api = api.Api(None, api.ApiOptions(
        method_name_check=options.enable_signature_method_name_check,
        tensor_content=options.enable_serialization_as_tensor_content,
        max_string_bytes=max(0, options.max_input_string_bytes)))
    self.manager = manager.ModelManager(
        model_configs(options), load_options(options, self.metrics.observe_batch),
        replay=self.api.replay,
        allow_unavailable_labels=options.allow_version_labels_for_unavailable_models)
    self.api.manager = self.manager
    self._grpc = self._rest = self._config_poller = None
    self._stopped = threading.Event()

  def start(self) -> None:
    """Loads what is on disk (as TF Serving does before opening its ports), then listens."""
    opts = self.options
    self.manager.start(opts.file_system_poll_wait_seconds)
    if opts.model_config_file and opts.model_config_file_poll_wait_seconds > 0:
      self._config_poller = threading.Thread(target=self._poll_config, daemon=True,
                                             name="config-poller")
      self._config_poller.start()
    if opts.port or opts.grpc_socket_path:
      self._grpc = grpc_api.GrpcServer(self.api, self.metrics, grpc_api.GrpcOptions(
          address=f"{opts.bind_address}:{opts.port}" if opts.port else "",
          socket_path=opts.grpc_socket_path, max_threads=opts.grpc_max_threads,
          channel_arguments=self._channel_args, credentials=self._credentials))
      logging.info("Running gRPC ModelServer at %s:%d ...", opts.bind_address, opts.port)
    if opts.rest_api_port:
      self._start_rest()
      logging.info("Exporting HTTP/REST API at:%s:%d ...", opts.bind_address,
                   opts.rest_api_port)

  def _poll_config(self) -> None:
    """Re-reads --model_config_file every --model_config_file_poll_wait_seconds."""
    path = self.options.model_config_file
    while not self._stopped.wait(self.options.model_config_file_poll_wait_seconds):
      try:
        self.manager.reload_config(manager.parse_model_config(
            fileio.read_text(path, "model_config_file"), path))
      except Exception as e:  # noqa: BLE001  The old config stays; the next poll may succeed.
        logging.error("Failed to reload --model_config_file=%s: %s", path, e)

  def _start_rest(self) -> None:
    """uvicorn (httptools parser, uvloop) in a thread; model calls on a thread pool."""
    opts = self.options
    self._executor = pool.CallPool(opts.rest_api_num_threads, "rest", "rest_api_num_threads")
    app = rest.RestApi(self.api, self.metrics, self._executor, rest.RestOptions(
        timeout_ms=opts.rest_api_timeout_in_ms, max_body_bytes=opts.rest_api_max_body_bytes,
        cors=opts.rest_api_enable_cors_support, metrics_path=self._metrics_path))
    protocol = http_limits.LimitedHttpToolsProtocol.with_limits(
        opts.rest_api_max_header_bytes, opts.rest_api_read_timeout_seconds,
        self.metrics.observe_rejected_connection)
    config = uvicorn.Config(app, host=opts.bind_address, port=opts.rest_api_port,
                            http=protocol, loop="auto", lifespan="off", log_level="warning",
                            access_log=False,
                            timeout_keep_alive=opts.rest_api_keep_alive_timeout_seconds,
                            limit_concurrency=opts.rest_api_max_connections or None)
    self._rest = uvicorn.Server(config)
    thread = threading.Thread(target=self._rest.run, daemon=True, name="rest")
    thread.start()
    deadline = time.monotonic() + 30
    while not self._rest.started:
      if not thread.is_alive() or time.monotonic() > deadline:
        raise OSError(f"REST: cannot serve on {opts.bind_address}:{opts.rest_api_port}")
      time.sleep(0.01)

  def stop(self) -> None:
    self._stopped.set()
    if self._grpc:
      self._grpc.stop(grace=2)
    if self._rest:
      self._rest.should_exit = True
      self._executor.shutdown(wait=False)
    self.manager.close()


def version_text() -> str:
  """What --version prints (tensorflow_model_server's two lines)."""
  import tensorflow as tf
  from importlib import metadata
  try:
    ours = metadata.version("tfagent")
  except metadata.PackageNotFoundError:
    ours = "unknown"
  return f"TensorFlow ModelServer: tfagent {ours}\nTensorFlow Library: {tf.__version__}"
