"""Both ports over one ModelManager, as the flags say: what `python -m tfagent.serve` runs. gRPC
is TF Serving's PredictionService and ModelService on the stubs PyPI `tensorflow-serving-api`
generates, grpc.aio on its own event loop thread; REST is rest.py's app under uvicorn."""

import asyncio
import operator
import threading
import time

from absl import logging
import grpc
import prometheus_client as prom
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)
import uvicorn

from tfagent import fileio, signatures
from tfagent.errors import ConfigError, TfagentError
from tfagent.serving import api, manager, rest, servable
from tfagent.serving.options import (ServerOptions, batching_options, grpc_credentials,
                                     ignored_flags, metrics_path, model_configs,
                                     set_tensorflow_threads)
from tfagent.serving.tensors import ServingError, invalid_argument

MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving lifts gRPC's 4 MiB default the same way.


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


def parse_channel_arguments(text: str) -> tuple:
  """'k=v,k2=v2' -> ((k, v), ...), integers as ints (as tensorflow_model_server does)."""
  pairs = []
  for item in filter(None, text.split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ConfigError(f"--grpc_channel_arguments: {item!r} is not key=value")
    pairs.append((key, int(value) if value.lstrip("-").isdigit() else value))
  return tuple(pairs)


def _method(verb: str, call):
  """A servicer method: `call(servicer, request, deadline)` answers; a ServingError becomes its
  status, any other error INTERNAL (and a log line); every call is counted in the metrics."""
  async def method(self, request, context):
    remaining, started, code = context.time_remaining(), time.perf_counter(), "OK"
    tasks = getattr(request, "tasks", None)
    spec = tasks[0].model_spec if tasks else getattr(request, "model_spec", None)
    try:
      return await call(self, request, None if remaining is None else time.monotonic() + remaining)
    except ServingError as e:
      code = e.code.name
      await context.abort(e.code, e.message)
    except Exception as e:  # noqa: BLE001  A bug: answered INTERNAL and logged.
      logging.exception("gRPC %s failed", verb)
      code = grpc.StatusCode.INTERNAL.name
      await context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {e}")
    finally:
      model = spec.name if spec is not None and spec.name in self.api.manager.models else None
      self.metrics.observe_request(model or "<unknown>", "grpc", verb, code,
                                   time.perf_counter() - started)
  return method


def _in_pool(path: str, with_deadline: bool = True):
  """A call of the servicer's `path` (e.g. "api.metadata") on the pool, given the call's
  deadline if it takes one."""
  def call(self, request, deadline):
    fn = operator.attrgetter(path)(self)
    return self.executor.call(deadline, fn, request, *([deadline] if with_deadline else []))
  return call


class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer,
               model_service_pb2_grpc.ModelServiceServicer):
  """Both services over one Api; small predicts convert on the loop and wait on the batcher."""

  def __init__(self, api_, metrics, executor):
    self.api, self.metrics, self.executor = api_, metrics, executor

  Predict = _method("predict", lambda self, request, deadline: self.api.predict(
      request, deadline, self.executor))
  Classify = _method("classify", _in_pool("api.classify_or_regress"))
  Regress = _method("regress", _in_pool("api.classify_or_regress"))
  MultiInference = _method("multi_inference", _in_pool("api.multi_inference"))
  GetModelMetadata = _method("metadata", _in_pool("api.metadata", with_deadline=False))
  GetModelStatus = _method("status", _in_pool("api.model_status", with_deadline=False))
  HandleReloadConfigRequest = _method("reload_config",
                                      _in_pool("reload_config", with_deadline=False))

  def reload_config(self, request) -> model_management_pb2.ReloadConfigResponse:
    """HandleReloadConfigRequest (model_service_impl.cc): serve exactly the given model list."""
    if request.config.WhichOneof("config") != "model_config_list":
      raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                             "Only ModelConfigList is currently supported")
    try:
      models = manager.models_from_proto(request.config, "ReloadConfigRequest")
    except ConfigError as e:
      raise invalid_argument(str(e)) from None
    self.api.manager.reload_config(models)
    return model_management_pb2.ReloadConfigResponse(status={"error_code": 0})


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
    self._channel_args = parse_channel_arguments(opts.grpc_channel_arguments)
    self.api = api.Api(None, opts)
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
      self._start_grpc()
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

  def _start_grpc(self) -> None:
    """grpc.aio on its own event loop thread; model calls on a --grpc_max_threads pool."""
    opts = self.options
    self._grpc_pool = servable.CallPool(opts.grpc_max_threads, "grpc", "grpc_max_threads")
    self._grpc_loop = asyncio.SelectorEventLoop()
    threading.Thread(target=self._grpc_loop.run_forever, daemon=True, name="grpc").start()
    servicer = Servicer(self.api, self.metrics, self._grpc_pool)
    asyncio.run_coroutine_threadsafe(self._serve_grpc(servicer), self._grpc_loop).result(60)

  async def _serve_grpc(self, servicer: Servicer) -> None:
    opts = self.options
    self._grpc = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), *self._channel_args])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, self._grpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, self._grpc)
    address = f"{opts.bind_address}:{opts.port}" if opts.port else ""
    for where in filter(None, (address, opts.grpc_socket_path and
                               f"unix:{opts.grpc_socket_path}")):
      bound = (self._grpc.add_secure_port(where, self._credentials) if self._credentials
               else self._grpc.add_insecure_port(where))
      if bound == 0 and where == address:
        raise OSError(f"gRPC: cannot bind {address}")
    await self._grpc.start()

  def _start_rest(self) -> None:
    """uvicorn (httptools parser, uvloop) in a thread; model calls on a thread pool."""
    opts = self.options
    self._executor = servable.CallPool(opts.rest_api_num_threads, "rest", "rest_api_num_threads")
    app = rest.RestApi(self.api, self.metrics, self._executor, opts, self._metrics_path)
    protocol = rest.LimitedHttpToolsProtocol.with_limits(
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
      asyncio.run_coroutine_threadsafe(self._grpc.stop(2), self._grpc_loop).result(7)
      self._grpc_loop.call_soon_threadsafe(self._grpc_loop.stop)
      self._grpc_pool.shutdown(wait=False)
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
