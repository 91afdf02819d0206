"""Every flag of tensorflow_model_server (model_servers/main.cc, server.h: same names and
defaults unless a comment says why not), plus a few tfagent-only bounds, as config settings
(config.define_flags makes serve's flags of them); and the files those flags name. Flags TF
Serving has that change nothing here are one table, IGNORED_FLAGS: accepted, and a value off its
default is logged as ignored."""

import dataclasses

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2
import grpc

from tfagent import fileio, signatures
from tfagent.config import setting
from tfagent.errors import ConfigError
from tfagent.serving import batching, manager, rest

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


# tensorflow_model_server's flags that this server implements (name, default, help), with TF's
# defaults unless the help says why not; then tfagent's own bounds (docs/serving.md#limits).
IMPLEMENTED_FLAGS = (
    ("port", 8500, "gRPC port (PredictionService, ModelService); 0 turns it off."),
    ("grpc_socket_path", "", "Also serve gRPC on this UNIX socket."),
    ("grpc_channel_arguments", "", "gRPC server arguments: k=v,k2=v2."),
    ("grpc_max_threads", 4 * _CPUS, "Threads for gRPC model calls (TF: 4 per core)."),
    ("ssl_config_file", "", "SSLConfig text proto: serve gRPC over TLS."),
    ("use_alts_credentials", False, "Serve gRPC with Google ALTS credentials."),
    ("enable_serialization_as_tensor_content", False,
     "Predict outputs in tensor_content, not float_val/int64_val/string_val."),
    ("rest_api_port", 8501, "HTTP/REST port; 0 turns it off (TF's default is 0; 8501 is what "
     "the image's entrypoint passes)."),
    ("rest_api_num_threads", 4 * _CPUS, "Threads for REST work off the event loop (TF: 4 per "
     "core); past 10 waiting each, 503."),
    ("rest_api_timeout_in_ms", 30_000, "REST deadline; past it, 504. 0: none."),
    ("rest_api_enable_cors_support", False, "Add CORS headers to REST answers."),
    ("model_name", "default", "Name of the model (not with --model_config_file)."),
    ("model_base_path", "", "Folder of its integer versions, e.g. saved_models/NAME."),
    ("model_config_file", "", "ModelServerConfig text proto: models, policies, labels."),
    ("model_config_file_poll_wait_seconds", 0, "Re-read the config this often; 0: once."),
    ("allow_version_labels_for_unavailable_models", False,
     "Let a version label name a version that is not loaded (yet)."),
    ("file_system_poll_wait_seconds", 1, "Seconds between polls for new versions; 0 polls once, "
     "< 0 never."),
    ("max_num_load_retries", 5, "Retries of a version that fails to load."),
    ("load_retry_interval_micros", 60_000_000, "Wait between load retries."),
    ("saved_model_tags", signatures.SERVE_TAG, "Comma-separated MetaGraph tags."),
    ("enable_model_warmup", True, "Replay a version's warm-up records first."),
    ("num_request_iterations_for_warmup", 0, "Replays of each record (0 or 1: once)."),
    ("enable_signature_method_name_check", False,
     "Refuse predict/classify/regress on signatures of another method_name."),
    ("monitoring_config_file", "", "MonitoringConfig text proto: the Prometheus page (else on, "
     f"at {rest.DEFAULT_METRICS_PATH})."),
    ("enable_batching", False, "Merge concurrent requests into one model call."),
    ("batching_parameters_file", "", "BatchingParameters text proto."),
    ("tensorflow_session_parallelism", 0, "Both TF thread pools; 0: TF's choice."),
    ("tensorflow_intra_op_parallelism", 0, "Threads an op may use; 0: TF's choice."),
    ("tensorflow_inter_op_parallelism", 0, "Ops run at once; 0: TF's choice (1 often cuts a "
     "small model's latency)."),
    ("version", False, "Print the versions and exit."),
    ("bind_address", "0.0.0.0", "Address both ports bind (tfagent only; 127.0.0.1 keeps the "
     "server local)."),
    ("rest_api_max_body_bytes", 32 << 20, "Largest REST body; larger gets 413 (tfagent only; 0: "
     "no limit)."),
    ("rest_api_max_header_bytes", 64 << 10, "Largest request line plus headers; larger gets 431 "
     "and a close (tfagent only)."),
    ("rest_api_read_timeout_seconds", 30.0, "Time a request may take to arrive whole; past it "
     "408 and close (tfagent only; 0: none)."),
    ("rest_api_keep_alive_timeout_seconds", 30.0, "Idle keep-alive connections close after this "
     "long (tfagent only)."),
    ("rest_api_max_connections", 1000, "Connections served at once; past it, 503 (tfagent "
     "only)."),
    ("max_input_string_bytes", 1 << 20, "Longest string in an input; longer gets 400, one huge "
     "text stalls its batch (tfagent only; 0: none)."),
)
IGNORED_HELP = " Accepted for tensorflow_model_server compatibility; ignored here."
ServerOptions = dataclasses.make_dataclass(
    "ServerOptions", [(name, type(default), setting(default, why)) for name, default, why in
                      IMPLEMENTED_FLAGS + tuple((n, d, why + IGNORED_HELP)
                                                for n, d, why in IGNORED_FLAGS)], frozen=True)
ServerOptions.__doc__ = "Every flag of the server: IMPLEMENTED_FLAGS, then IGNORED_FLAGS."


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
                                            dependency=[wrappers_pb2.DESCRIPTOR.name])
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
