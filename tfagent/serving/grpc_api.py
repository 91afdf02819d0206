"""TF Serving's gRPC services, on the stubs that PyPI `tensorflow-serving-api` generates."""

import asyncio
import dataclasses
import threading
import time

from absl import logging
import grpc
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from tfagent.serving import manager as manager_lib, pool, status

MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving lifts gRPC's 4 MiB default the same way.


@dataclasses.dataclass(frozen=True)
class GrpcOptions:
  """What the gRPC flags set."""
  address: str = "0.0.0.0:8500"  # From --bind_address and --port; "" for none.
  socket_path: str = ""  # --grpc_socket_path
  max_threads: int = 64  # --grpc_max_threads: the pool model calls run on.
  channel_arguments: tuple = ()  # --grpc_channel_arguments, as (key, value) pairs.
  credentials: object = None  # grpc.ServerCredentials (--ssl_config_file); None: insecure.


def _deadline(context):
  remaining = context.time_remaining()
  return None if remaining is None else time.monotonic() + remaining


def parse_channel_arguments(text: str) -> tuple:
  """'k=v,k2=v2' -> ((k, v), ...), integers as ints (as tensorflow_model_server does)."""
  pairs = []
  for item in filter(None, text.split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
    pairs.append((key, int(value) if value.lstrip("-").isdigit() else value))
  return tuple(pairs)


class _Servicer:
  """Shared: work off the event loop, errors as gRPC statuses, every call in the metrics."""

  def __init__(self, api, metrics, executor):
    self.api, self.metrics, self.executor = api, metrics, executor

  def _in_pool(self, fn, *args):
    return self.executor.call(None, fn, *args)

  def _model_call(self, fn, request, context):
    """`fn(request, deadline)` on the pool, which keeps the call's deadline too."""
    deadline = _deadline(context)
    return self.executor.call(deadline, fn, request, deadline)

  async def _call(self, method: str, model: str, context, work):
    started = time.perf_counter()
    code = "OK"
    try:
      return await work
    except status.ServingError as e:
      code = e.code.name
      await context.abort(e.code, e.message)
    except Exception as e:  # noqa: BLE001  A bug: answered INTERNAL and logged.
      logging.exception("gRPC %s failed", method)
      code = grpc.StatusCode.INTERNAL.name
      await context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {e}")
    finally:
      known = model if model in self.api.manager.models else "<unknown>"
      self.metrics.observe_request(known, "grpc", method, code, time.perf_counter() - started)


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict, Classify, Regress, MultiInference and GetModelMetadata."""

  async def Predict(self, request, context):
    return await self._call("predict", request.model_spec.name, context,
                            self.api.predict(request, _deadline(context), self.executor))

  async def Classify(self, request, context):
    return await self._call("classify", request.model_spec.name, context, self._model_call(
        self.api.classify_or_regress, request, context))

  async def Regress(self, request, context):
    return await self._call("regress", request.model_spec.name, context, self._model_call(
        self.api.classify_or_regress, request, context))

  async def MultiInference(self, request, context):
    model = request.tasks[0].model_spec.name if request.tasks else ""
    return await self._call("multi_inference", model, context, self._model_call(
        self.api.multi_inference, request, context))

  async def GetModelMetadata(self, request, context):
    return await self._call("metadata", request.model_spec.name, context,
                            self._in_pool(self.api.metadata, request))


class ModelServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus and HandleReloadConfigRequest."""

  async def GetModelStatus(self, request, context):
    return await self._call("status", request.model_spec.name, context,
                            self._in_pool(self.api.model_status, request))

  async def HandleReloadConfigRequest(self, request, context):
    return await self._call("reload_config", "", context,
                            self._in_pool(self._reload, request))

  def _reload(self, request) -> model_management_pb2.ReloadConfigResponse:
    """ModelServiceImpl::HandleReloadConfigRequest: serve exactly the given model list."""
    if request.config.WhichOneof("config") != "model_config_list":
      raise status.invalid_argument(
          "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
          "ModelConfigList is currently supported")
    try:
      models = manager_lib.models_from_proto(request.config, "ReloadConfigRequest")
    except manager_lib.ConfigError as e:
      raise status.invalid_argument(str(e)) from None
    self.api.manager.reload_config(models)
    response = model_management_pb2.ReloadConfigResponse()
    response.status.error_code = 0
    return response


class GrpcServer:
  """grpc.aio server on its own event loop thread; model calls as in REST."""

  def __init__(self, api, metrics, options: GrpcOptions):
    self.executor = pool.CallPool(options.max_threads, "grpc", "grpc_max_threads")
    self.loop = asyncio.SelectorEventLoop()
    threading.Thread(target=self.loop.run_forever, daemon=True, name="grpc").start()
    asyncio.run_coroutine_threadsafe(self._start(api, metrics, options),
                                     self.loop).result(timeout=60)

  async def _start(self, api, metrics, options: GrpcOptions) -> None:
    self.server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), *options.channel_arguments])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(api, metrics, self.executor), self.server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(api, metrics, self.executor), self.server)
    for address in filter(None, (options.address, options.socket_path and
                                 f"unix:{options.socket_path}")):
      bound = (self.server.add_secure_port(address, options.credentials) if options.credentials
               else self.server.add_insecure_port(address))
      if bound == 0 and not address.startswith("unix:"):
        raise OSError(f"gRPC: cannot bind {address}")
    await self.server.start()

  def stop(self, grace: float = 2.0) -> None:
    asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(grace + 5)
    self.loop.call_soon_threadsafe(self.loop.stop)
    self.executor.shutdown(wait=False)
