"""The server's flags in-process (fast): each documented, TF Serving's precedence and checks."""

import dataclasses
import os

import pytest

from tfagent.errors import ConfigError
from tfagent.serving import server

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "serving.md")


def test_every_flag_is_in_the_serving_docs():
  with open(DOCS, encoding="utf-8") as f:
    docs = f.read()
  missing = [f.name for f in dataclasses.fields(server.ServerOptions)
             if f"--{f.name}" not in docs]
  assert missing == []


def test_only_ignored_flags_off_their_default_are_reported():
  options = server.ServerOptions(enable_profiler=False, num_load_threads=4,
                                 enable_batching=True)
  assert server.ignored_flags(options) == ["enable_profiler", "num_load_threads"]
  assert server.ignored_flags(server.ServerOptions()) == []


def test_model_config_file_wins_over_the_entrypoint_base_path(tmp_path):
  # main.cc: --model_name and --model_base_path are ignored with --model_config_file.
  config = tmp_path / "models.config"
  config.write_text('model_config_list { config { name: "m" base_path: "/x/m" '
                    'model_platform: "tensorflow" } }')
  options = server.ServerOptions(model_name="model", model_base_path="/models/model",
                                 model_config_file=str(config))
  assert [(m.name, m.base_path) for m in server.model_configs(options)] == [("m", "/x/m")]
  with pytest.raises(ConfigError, match="Both --model_base_path and --model_config_file"):
    server.model_configs(server.ServerOptions())


def test_flag_files_are_checked_with_the_flag_named(tmp_path):
  (tmp_path / "b.txt").write_text("max_batch_size { value: 0 }")
  with pytest.raises(ConfigError, match="batching_parameters_file needs|set without"):
    server.batching_options(server.ServerOptions(batching_parameters_file="x"))
  with pytest.raises(ConfigError, match=f"--batching_parameters_file={tmp_path}/b.txt: "
                     "max_batch_size and num_batch_threads must be >= 1"):
    server.batching_options(server.ServerOptions(
        enable_batching=True, batching_parameters_file=str(tmp_path / "b.txt")))
  (tmp_path / "m.txt").write_text("prometheus_config { enable: true path: '/m' }")
  assert server.metrics_path(server.ServerOptions(monitoring_config_file=str(tmp_path / "m.txt"))
                             ) == "/m"
  (tmp_path / "off.txt").write_text("prometheus_config { enable: false }")
  assert server.metrics_path(server.ServerOptions(
      monitoring_config_file=str(tmp_path / "off.txt"))) is None
  with pytest.raises(ConfigError, match="--ssl_config_file=/nope: No such file"):
    server.grpc_credentials(server.ServerOptions(ssl_config_file="/nope"))
  with pytest.raises(ConfigError, match="Either --use_alts_credentials must be false"):
    server.grpc_credentials(server.ServerOptions(ssl_config_file="x", use_alts_credentials=True))


def test_grpc_channel_arguments_parse_as_tensorflow_model_server():
  from tfagent.serving import grpc_api
  assert grpc_api.parse_channel_arguments("grpc.max_connection_age_ms=2000,a=b") == (
      ("grpc.max_connection_age_ms", 2000), ("a", "b"))
  with pytest.raises(ValueError, match="'oops' is not key=value"):
    grpc_api.parse_channel_arguments("oops")
