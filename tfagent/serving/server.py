"""Both ports over one ModelManager: what `python -m tfagent.serve` runs.

ServerOptions holds every flag tensorflow_model_server has (model_servers/main.cc, server.h:
same names and defaults unless a comment says why not), plus a few tfagent-only bounds; its
fields are config settings, so serve's flags come from config.define_flags. Flags TF Serving has
that change nothing here are one table, IGNORED_FLAGS: accepted, and a value off its default is
logged as ignored.
"""

import dataclasses
import threading
import time

from absl import logging
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2  # noqa: F401  Registers wrappers.proto in the pool.
import grpc
import prometheus_client as prom
import uvicorn

from tfagent import fileio, signatures
from tfagent.config import setting
from tfagent.errors import ConfigError, TfagentError
from tfagent.serving import api, batching, grpc_api, http_limits, manager, rest, servable

_CPUS = batching.cpu_count()

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
  """tensorflow_model_server's options, then tfagent's own."""
  port: int = setting(8500, "gRPC port (PredictionService, ModelService); 0 turns it off.")
  grpc_socket_path: str = setting("", "Also serve gRPC on this UNIX socket.")
  grpc_channel_arguments: str = setting("", "gRPC server arguments: k=v,k2=v2.")
  grpc_max_threads: int = setting(4 * _CPUS, "Threads for gRPC model calls (TF: 4 per core).")
  ssl_config_file: str = setting("", "SSLConfig text proto: serve gRPC over TLS.")
  use_alts_credentials: bool = setting(False, "Serve gRPC with Google ALTS credentials.")
  enable_serialization_as_tensor_content: bool = setting(
      False, "Predict outputs in tensor_content, not float_val/int64_val/string_val.")
  # TF Serving's REST port defaults to 0 (off); 8501 is what the image's entrypoint passes.
  rest_api_port: int = setting(8501, "HTTP/REST port; 0 turns it off.")
  rest_api_num_threads: int = setting(4 * _CPUS, "Threads for REST work off the event loop "
                                      "(TF: 4 per core); past 10 waiting each, 503.")
  rest_api_timeout_in_ms: int = setting(30_000, "REST deadline; past it, 504. 0: none.")
  rest_api_enable_cors_support: bool = setting(False, "Add CORS headers to REST answers.")
  model_name: str = setting("default", "Name of the model (not with --model_config_file).")
  model_base_path: str = setting("", "Folder of its integer versions, e.g. saved_models/NAME.")
  model_config_file: str = setting("", "ModelServerConfig text proto: models, policies, labels.")
  model_config_file_poll_wait_seconds: int = setting(0, "Re-read the config this often; 0: once.")
  allow_version_labels_for_unavailable_models: bool = setting(
      False, "Let a version label name a version that is not loaded (yet).")
  file_system_poll_wait_seconds: int = setting(1, "Seconds between polls for new versions; 0 "
                                               "polls once, < 0 never.")
  max_num_load_retries: int = setting(5, "Retries of a version that fails to load.")
  load_retry_interval_micros: int = setting(60_000_000, "Wait between load retries.")
  saved_model_tags: str = setting(signatures.SERVE_TAG, "Comma-separated MetaGraph tags.")
  enable_model_warmup: bool = setting(True, "Replay a version's warm-up records first.")
  num_request_iterations_for_warmup: int = setting(0, "Replays of each record (0 or 1: once).")
  enable_signature_method_name_check: bool = setting(
      False, "Refuse predict/classify/regress on signatures of another method_name.")
  monitoring_config_file: str = setting("", "MonitoringConfig text proto: the Prometheus page "
                                        f"(else on, at {rest.DEFAULT_METRICS_PATH}).")
  enable_batching: bool = setting(False, "Merge concurrent requests into one model call.")
  batching_parameters_file: str = setting("", "BatchingParameters text proto.")
  tensorflow_session_parallelism: int = setting(0, "Both TF thread pools; 0: TF's choice.")
  tensorflow_intra_op_parallelism: int = setting(0, "Threads an op may use; 0: TF's choice.")
  tensorflow_inter_op_parallelism: int = setting(0, "Ops run at once; 0: TF's choice (1 often "
                                                 "cuts a small model's latency).")
  version: bool = setting(False, "Print the versions and exit.")
  bind_address: str = setting("0.0.0.0", "Address both ports bind (tfagent only; 127.0.0.1 "
                              "keeps the server local).")
  rest_api_max_body_bytes: int = setting(32 << 20, "Largest REST body; larger gets 413 (tfagent "
                                         "only; 0: no limit).")
  rest_api_max_header_bytes: int = setting(64 << 10, "Largest request line plus headers; larger "
                                           "gets 431 and a close (tfagent only).")
  rest_api_read_timeout_seconds: float = setting(30.0, "Time a request may take to arrive whole; "
                                                 "past it 408 and close (tfagent only; 0: none).")
  rest_api_keep_alive_timeout_seconds: float = setting(30.0, "Idle keep-alive connections close "
                                                       "after this long (tfagent only).")
  rest_api_max_connections: int = setting(1000, "Connections served at once; past it, 503 "
                                          "(tfagent only).")
  max_input_string_bytes: int = setting(1 << 20, "Longest string in an input; longer gets 400, "
                                        "one huge text stalls its batch (tfagent only; 0: none).")


ServerOptions = dataclasses.make_dataclass(
    "ServerOptions", [(name, type(default), setting(default, f"{why} Accepted for "
                                                    "tensorflow_model_server compatibility; "
                                                    "ignored here."))
                      for name, default, why in IGNORED_FLAGS],
    bases=(_ImplementedOptions,), frozen=True)
ServerOptions.__doc__ = "Every flag of the server: implemented ones, then IGNORED_FLAGS."


def ignored_flags(options: ServerOptions) -> list:
  """Accepted-and-ignored flags set to a value other than their default."""
  return [name for name, default, _ in IGNORED_FLAGS if getattr(options, name) != default]


# Config protos PyPI tensorflow-serving-api lacks (session_bundle_config.proto,
# monitoring_config.proto, ssl_config.proto): name -> [(field, type)], numbered in order.
_PROTOS = {
    "BatchingParameters": [
        ("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
        ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
        ("thread_pool_name", "StringValue"), ("allowed_batch_sizes", "repeated int64"),
        ("pad_variable_length_inputs", "bool"), ("enable_large_batch_splitting", "BoolValue"),
        ("max_execution_batch_size", "Int64Value")],
    "PrometheusConfig": [("enable", "bool"), ("path", "string")],
    "MonitoringConfig": [("prometheus_config", "PrometheusConfig")],
    "SSLConfig": [("server_key", "string"), ("server_cert", "string"), ("custom_ca", "string"),
                  ("client_verify", "bool")],
}


def _message_classes() -> dict:
  """The classes of _PROTOS, built once per process."""
  F = descriptor_pb2.FieldDescriptorProto  # noqa: N806
  file = descriptor_pb2.FileDescriptorProto(name="tfagent_serving.proto", package="tfagent",
                                            dependency=["google/protobuf/wrappers.proto"])
  for name, fields in _PROTOS.items():
    message = file.message_type.add(name=name)
    for number, (field, kind) in enumerate(fields, 1):
      repeated, kind = kind.startswith("repeated "), kind.removeprefix("repeated ")
      scalar = getattr(F, f"TYPE_{kind.upper()}", None)
      message.field.add(name=field, number=number, type=scalar or F.TYPE_MESSAGE,
                        label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
                        type_name=None if scalar else (
                            f".tfagent.{kind}" if kind in _PROTOS else f".google.protobuf.{kind}"))
  pool = descriptor_pool.Default()
  pool.Add(file)
  return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tfagent.{name}"))
          for name in _PROTOS}


_MESSAGES = _message_classes()


def parse_text(text: str, name: str, source: str):
  """`text` as the text format of message `name`; errors name `source` and the message."""
  message = _MESSAGES[name]()
  try:
    text_format.Parse(text, message)
  except text_format.ParseError as e:
    raise ConfigError(f"{source}: {e}; expected a {name} text proto.") from None
  return message


def _parse_flag_file(options: ServerOptions, flag: str, name: str):
  path = getattr(options, flag)
  return parse_text(fileio.read_text(path, flag), name, f"--{flag}={path}")


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


def batching_options(options: ServerOptions) -> batching.BatchingOptions | None:
  """BatchingOptions when --enable_batching, from --batching_parameters_file if given."""
  if not options.enable_batching and options.batching_parameters_file:
    raise ConfigError("--batching_parameters_file is set without --enable_batching.")
  if not options.enable_batching or not options.batching_parameters_file:
    return batching.BatchingOptions() if options.enable_batching else None
  return batching.options_from_proto(
      _parse_flag_file(options, "batching_parameters_file", "BatchingParameters"),
      f"--batching_parameters_file={options.batching_parameters_file}")


def metrics_path(options: ServerOptions) -> str | None:
  """The Prometheus page's path (None: off), from --monitoring_config_file."""
  if not options.monitoring_config_file:
    return rest.DEFAULT_METRICS_PATH
  config = _parse_flag_file(options, "monitoring_config_file", "MonitoringConfig")
  if not config.prometheus_config.enable:
    return None
  return config.prometheus_config.path or rest.DEFAULT_METRICS_PATH


def grpc_credentials(options: ServerOptions):
  """TLS from --ssl_config_file, ALTS, or None (insecure), as BuildServerCredentials."""
  if options.use_alts_credentials and options.ssl_config_file:
    raise ConfigError("Either --use_alts_credentials must be false or --ssl_config_file must "
                      "be empty.")
  if options.use_alts_credentials:
    return grpc.alts_server_credentials()
  if not options.ssl_config_file:
    return None
  ssl = _parse_flag_file(options, "ssl_config_file", "SSLConfig")
  return grpc.ssl_server_credentials([(ssl.server_key.encode(), ssl.server_cert.encode())],
                                     root_certificates=ssl.custom_ca.encode() or None,
                                     require_client_auth=ssl.client_verify)


def set_tensorflow_threads(intra_op: int, inter_op: int, session: int = 0) -> None:
  """TensorFlow's thread pools for model calls (0 keeps TensorFlow's choice): fewer threads
  than cores cut small models' latency, as the server's own threads then keep a core."""
  import tensorflow as tf
  if intra_op > 0 and inter_op > 0 and session > 0:
    raise ConfigError("Either configure --tensorflow_session_parallelism or "
                      "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
                      "separately. You cannot configure all.")
  if session > 0 and intra_op <= 0 and inter_op <= 0:
    intra_op = inter_op = session
  for kind, value in (("intra", intra_op), ("inter", inter_op)):
    if value < 0:
      raise ConfigError(f"--tensorflow_{kind}_op_parallelism={value}: give a number of "
                        "threads, or 0 for TensorFlow's choice.")
    try:
      if value:
        getattr(tf.config.threading, f"set_{kind}_op_parallelism_threads")(value)
    except RuntimeError as e:  # TensorFlow already ran an op in this process.
      raise ConfigError(f"--tensorflow_{kind}_op_parallelism={value}: {e}") from None


class Metrics:
  """Prometheus counters and histograms, one registry per server (tests run several)."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    self.requests = prom.Counter(
        "tfagent_serving_requests", "Requests by model, protocol, API method and status code.",
        ["model_name", "protocol", "method", "status"], registry=self.registry)
    self.latency = prom.Histogram(
        "tfagent_serving_request_latency_seconds", "Request latency inside the server.",
        ["model_name", "protocol", "method"], registry=self.registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
    self.batch_size = prom.Histogram(
        "tfagent_serving_batch_size", "Examples per model call made by the dynamic batcher.",
        ["model_name"], buckets=[2**i for i in range(11)], registry=self.registry)

  def observe_request(self, model: str, protocol: str, method: str, code: str,
                      seconds: float) -> None:
    self.requests.labels(model, protocol, method, code).inc()
    self.latency.labels(model, protocol, method).observe(seconds)

  def page(self) -> bytes:
    return prom.generate_latest(self.registry)


class Server:
  """Loads the models, then serves gRPC and REST until `stop()`."""

  def __init__(self, options: ServerOptions):
    self.options = opts = options
    for name in ignored_flags(options):
      logging.warning("--%s=%s is accepted and ignored: this server does not implement it "
                      "(docs/serving.md lists such flags).", name, getattr(options, name))
    if options.model_config_file and options.model_base_path:
      logging.info("--model_config_file is given: --model_name and --model_base_path are "
                   "ignored, as tensorflow_model_server ignores them.")
    if opts.rest_api_port and opts.rest_api_port == opts.port:
      raise ConfigError(f"--rest_api_port={opts.rest_api_port} is the gRPC --port too; give "
                        "them different ports.")
    set_tensorflow_threads(opts.tensorflow_intra_op_parallelism,
                           opts.tensorflow_inter_op_parallelism,
                           opts.tensorflow_session_parallelism)
    self.metrics, self._metrics_path = Metrics(), metrics_path(opts)
    self._credentials = grpc_credentials(opts)
    try:
      self._channel_args = grpc_api.parse_channel_arguments(opts.grpc_channel_arguments)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    self.api = api.Api(None, api.ApiOptions(
        method_name_check=opts.enable_signature_method_name_check,
        tensor_content=opts.enable_serialization_as_tensor_content,
        max_string_bytes=max(0, opts.max_input_string_bytes)))
    load = servable.LoadOptions(
        batching=batching_options(opts), tags=signatures.parse_tags(opts.saved_model_tags),
        warmup=opts.enable_model_warmup, warmup_iterations=opts.num_request_iterations_for_warmup,
        max_load_retries=max(0, opts.max_num_load_retries),
        load_retry_interval_seconds=max(0, opts.load_retry_interval_micros) / 1e6,
        freeze_heap=True, on_batch=lambda model, size: self.metrics.batch_size.labels(
            model).observe(size))
    self.api.manager = self.manager = manager.ModelManager(
        model_configs(opts), load, replay=self.api.replay,
        allow_unavailable_labels=opts.allow_version_labels_for_unavailable_models)
    self._grpc = self._rest = None
    self._stopped = threading.Event()

  def start(self) -> None:
    """Loads what is on disk (as TF Serving does before opening its ports), then listens."""
    opts = self.options
    self.manager.start(opts.file_system_poll_wait_seconds)
    if opts.model_config_file and opts.model_config_file_poll_wait_seconds > 0:
      threading.Thread(target=self._poll_config, daemon=True, name="config-poller").start()
    if opts.port or opts.grpc_socket_path:
      self._grpc = grpc_api.GrpcServer(self.api, self.metrics, grpc_api.GrpcOptions(
          address=f"{opts.bind_address}:{opts.port}" if opts.port else "",
          socket_path=opts.grpc_socket_path, max_threads=opts.grpc_max_threads,
          channel_arguments=self._channel_args, credentials=self._credentials))
      logging.info("Running gRPC ModelServer at %s:%d ...", opts.bind_address, opts.port)
    if opts.rest_api_port:
      self._start_rest()
      logging.info("Exporting HTTP/REST API at:%s:%d ...", opts.bind_address, opts.rest_api_port)

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
    self._executor = servable.CallPool(opts.rest_api_num_threads, "rest", "rest_api_num_threads")
    app = rest.RestApi(self.api, self.metrics, self._executor, rest.RestOptions(
        timeout_ms=opts.rest_api_timeout_in_ms, max_body_bytes=opts.rest_api_max_body_bytes,
        cors=opts.rest_api_enable_cors_support, metrics_path=self._metrics_path))
    protocol = http_limits.LimitedHttpToolsProtocol.with_limits(
        opts.rest_api_max_header_bytes, opts.rest_api_read_timeout_seconds,
        lambda code: self.metrics.requests.labels("<unknown>", "rest", "other",
                                                  f"HTTP_{code}").inc())
    self._rest = uvicorn.Server(uvicorn.Config(
        app, host=opts.bind_address, port=opts.rest_api_port, http=protocol, loop="auto",
        lifespan="off", log_level="warning", access_log=False,
        timeout_keep_alive=opts.rest_api_keep_alive_timeout_seconds,
        limit_concurrency=opts.rest_api_max_connections or None))
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


def start(options: ServerOptions) -> Server:
  """A started Server; any failure is TF Serving's "Failed to start server. Error: ..."."""
  try:
    server = Server(options)
    server.start()
  except (TfagentError, OSError) as e:
    raise TfagentError(f"Failed to start server. Error: {e}") from None
  return server


def version_text() -> str:
  """What --version prints (tensorflow_model_server's two lines)."""
  import tensorflow as tf
  from importlib import metadata
  try:
    ours = metadata.version("tfagent")
  except metadata.PackageNotFoundError:
    ours = "unknown"
  return f"TensorFlow ModelServer: tfagent {ours}\nTensorFlow Library: {tf.__version__}"
