"""TF Serving's PredictionService and ModelService on the stubs PyPI `tensorflow-serving-api`
generates: grpc.aio on its own event loop thread, model calls off the loop as over REST."""

import asyncio
import dataclasses
import operator
import threading
import time

from absl import logging
import grpc
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from tfagent.errors import ConfigError
from tfagent.serving import manager
from tfagent.serving.servable import CallPool
from tfagent.serving.tensors import ServingError, invalid_argument

MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving lifts gRPC's 4 MiB default the same way.


@dataclasses.dataclass(frozen=True)
class GrpcOptions:
  """What the gRPC flags set."""
  address: str = "0.0.0.0:8500"  # From --bind_address and --port; "" for none.
  socket_path: str = ""  # --grpc_socket_path
  max_threads: int = 64  # --grpc_max_threads: the pool model calls run on.
  channel_arguments: tuple = ()  # --grpc_channel_arguments, as (key, value) pairs.
  credentials: object = None  # grpc.ServerCredentials (--ssl_config_file); None: insecure.


def parse_channel_arguments(text: str) -> tuple:
  """'k=v,k2=v2' -> ((k, v), ...), integers as ints (as tensorflow_model_server does)."""
  pairs = []
  for item in filter(None, text.split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
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

  def __init__(self, api, metrics, executor):
    self.api, self.metrics, self.executor = api, metrics, executor

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


class GrpcServer:
  """grpc.aio server on its own event loop thread."""

  def __init__(self, api, metrics, options: GrpcOptions):
    self.executor = CallPool(options.max_threads, "grpc", "grpc_max_threads")
    self.loop = asyncio.SelectorEventLoop()
    threading.Thread(target=self.loop.run_forever, daemon=True, name="grpc").start()
    asyncio.run_coroutine_threadsafe(self._start(Servicer(api, metrics, self.executor), options),
                                     self.loop).result(timeout=60)

  async def _start(self, servicer: Servicer, options: GrpcOptions) -> None:
    self.server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), *options.channel_arguments])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, self.server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, self.server)
    for address in filter(None, (options.address,
                                 options.socket_path and f"unix:{options.socket_path}")):
      bound = (self.server.add_secure_port(address, options.credentials) if options.credentials
               else self.server.add_insecure_port(address))
      if bound == 0 and not address.startswith("unix:"):
        raise OSError(f"gRPC: cannot bind {address}")
    await self.server.start()

  def stop(self, grace: float = 2.0) -> None:
    asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(grace + 5)
    self.loop.call_soon_threadsafe(self.loop.stop)
    self.executor.shutdown(wait=False)
