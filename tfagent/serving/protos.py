"""TF Serving config protos that PyPI `tensorflow-serving-api` does not ship, built
from their field lists (session_bundle_config.proto, monitoring_config.proto,
ssl_config.proto) so their text files parse as tensorflow_model_server parses them."""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2  # noqa: F401  Registers wrappers.proto in the pool.

from tfagent import fileio
from tfagent.errors import ConfigError

_PACKAGE = "tensorflow.serving.tfagent"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"int64": _F.TYPE_INT64, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING}

# name -> [(field, number, type, repeated)]; a type starting with "." is a message.
_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", 1, ".google.protobuf.Int64Value", False),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", False),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", False),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value", False),
        ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
        ("allowed_batch_sizes", 6, "int64", True),
        ("pad_variable_length_inputs", 7, "bool", False),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue", False),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value", False)],
    "PrometheusConfig": [("enable", 1, "bool", False), ("path", 2, "string", False)],
    "MonitoringConfig": [("prometheus_config", 1, f".{_PACKAGE}.PrometheusConfig", False)],
    "SSLConfig": [("server_key", 1, "string", False), ("server_cert", 2, "string", False),
                  ("custom_ca", 3, "string", False), ("client_verify", 4, "bool", False)],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
  file = descriptor_pb2.FileDescriptorProto(
      name="tfagent_serving_configs.proto", package=_PACKAGE, syntax="proto3",
      dependency=["google/protobuf/wrappers.proto"])
  for name, fields in _MESSAGES.items():
    message = file.message_type.add(name=name)
    for field, number, kind, repeated in fields:
      label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
      if kind.startswith("."):
        message.field.add(name=field, number=number, label=label, type=_F.TYPE_MESSAGE,
                          type_name=kind)
      else:
        message.field.add(name=field, number=number, label=label, type=_SCALARS[kind])
  return file


def message_class(name: str):
  """The generated class of one of `_MESSAGES` (built once per process)."""
  pool = descriptor_pool.Default()
  try:
    pool.FindFileByName("tfagent_serving_configs.proto")
  except KeyError:
    pool.Add(_file_descriptor())
  return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


def parse_text_file(path: str, name: str, flag: str):
  """Parses a text proto file; errors name the flag, the file and the expected message."""
  return parse_text(fileio.read_text(path, flag), name, f"--{flag}={path}")


def parse_text(text: str, name: str, source: str):
  """Parses `text` as the text format of message `name`."""
  message = message_class(name)()
  try:
    text_format.Parse(text, message)
  except text_format.ParseError as e:
    raise ConfigError(f"{source}: {e}; expected a {name} text proto.") from None
  return message
