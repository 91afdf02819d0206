"""The server's flags in-process (fast): each documented, TF Serving's precedence and checks;
and the tensor conversions some of them choose."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfagent.errors import ConfigError
from tfagent.serving import options as serve_options

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "serving.md")


def test_every_flag_is_in_the_serving_docs():
  with open(DOCS, encoding="utf-8") as f:
    docs = f.read()
  missing = [f.name for f in dataclasses.fields(serve_options.ServerOptions)
             if f"--{f.name}" not in docs]
  assert missing == []


def test_only_ignored_flags_off_their_default_are_reported():
  options = serve_options.ServerOptions(enable_profiler=False, num_load_threads=4,
                                 enable_batching=True)
  assert serve_options.ignored_flags(options) == ["enable_profiler", "num_load_threads"]
  assert serve_options.ignored_flags(serve_options.ServerOptions()) == []


def test_model_config_file_wins_over_the_entrypoint_base_path(tmp_path):
  # main.cc: --model_name and --model_base_path are ignored with --model_config_file.
  config = tmp_path / "models.config"
  config.write_text('model_config_list { config { name: "m" base_path: "/x/m" '
                    'model_platform: "tensorflow" } }')
  options = serve_options.ServerOptions(model_name="model", model_base_path="/models/model",
                                 model_config_file=str(config))
  assert [(m.name, m.base_path) for m in serve_options.model_configs(options)] == [("m", "/x/m")]
  with pytest.raises(ConfigError, match="Both --model_base_path and --model_config_file"):
    serve_options.model_configs(serve_options.ServerOptions())


def test_flag_files_are_checked_with_the_flag_named(tmp_path):
  (tmp_path / "b.txt").write_text("max_batch_size { value: 0 }")
  with pytest.raises(ConfigError, match="batching_parameters_file needs|set without"):
    serve_options.batching_options(serve_options.ServerOptions(batching_parameters_file="x"))
  with pytest.raises(ConfigError, match=f"--batching_parameters_file={tmp_path}/b.txt: "
                     "max_batch_size and num_batch_threads must be >= 1"):
    serve_options.batching_options(serve_options.ServerOptions(
        enable_batching=True, batching_parameters_file=str(tmp_path / "b.txt")))
  (tmp_path / "m.txt").write_text("prometheus_config { enable: true path: '/m' }")
  assert serve_options.metrics_path(serve_options.ServerOptions(
      monitoring_config_file=str(tmp_path / "m.txt"))) == "/m"
  (tmp_path / "off.txt").write_text("prometheus_config { enable: false }")
  assert serve_options.metrics_path(serve_options.ServerOptions(
      monitoring_config_file=str(tmp_path / "off.txt"))) is None
  with pytest.raises(ConfigError, match="--ssl_config_file=/nope: No such file"):
    serve_options.grpc_credentials(serve_options.ServerOptions(ssl_config_file="/nope"))
  with pytest.raises(ConfigError, match="Either --use_alts_credentials must be false"):
    serve_options.grpc_credentials(serve_options.ServerOptions(ssl_config_file="x",
                                                               use_alts_credentials=True))


def test_grpc_channel_arguments_parse_as_tensorflow_model_server():
  from tfagent.serving import server
  assert server.parse_channel_arguments("grpc.max_connection_age_ms=2000,a=b") == (
      ("grpc.max_connection_age_ms", 2000), ("a", "b"))
  with pytest.raises(ConfigError, match="--grpc_channel_arguments: 'oops' is not key=value"):
    server.parse_channel_arguments("oops")


def test_tensor_content_outputs_decode_with_tensorflows_own_reader():
  # --enable_serialization_as_tensor_content: AsProtoTensorContent, strings as
  # port::EncodeStringList (a 200-byte string takes a two-byte length).
  from tfagent.serving import tensors
  for array in (np.array([[b"a", b""], [b"x" * 200, b"\xff"]], dtype=object),
                np.float32([[0.5, -1.0]]), np.int64([3, 2**40])):
    proto = tensors.to_proto(array, as_content=True)
    assert proto.tensor_content and not proto.string_val and not proto.float_val
    dtype = tf.string if array.dtype == object else tf.as_dtype(array.dtype)
    decoded = tf.io.parse_tensor(proto.SerializeToString(), dtype).numpy()
    assert decoded.shape == array.shape and decoded.tolist() == array.tolist()
    assert tensors.to_ndarray(proto).tolist() == array.tolist()  # And read back here.


def test_request_tensors_are_padded_and_wrapped_as_tensorflow_does():
  # Tensor::FromProto: values short of the shape repeat the last one; int_val is cast down.
  from tfagent.serving import tensors
  short = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT8, int_val=[300, -1],
                                 tensor_shape={"dim": [{"size": 3}]})
  tensors.check_size("x", short, max_fill_bytes=3)
  assert tensors.to_ndarray(short).tolist() == [44, -1, -1]
  with pytest.raises(tensors.ServingError, match="declares shape \\[3\\] .* but carries 2"):
    tensors.check_size("x", short, max_fill_bytes=2)
