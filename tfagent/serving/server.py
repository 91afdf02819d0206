"""Both ports over one ModelManager, as the flags say: what `python -m tfagent.serve` runs."""

import threading
import time

from absl import logging
import prometheus_client as prom
import uvicorn

from tfagent import fileio, signatures
from tfagent.errors import ConfigError, TfagentError
from tfagent.serving import api, grpc_api, http_limits, manager, rest, servable
from tfagent.serving.options import (ServerOptions, batching_options, grpc_credentials,
                                     ignored_flags, metrics_path, model_configs,
                                     set_tensorflow_threads)


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
