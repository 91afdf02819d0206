"""TF Serving's gRPC services, on the stubs that PyPI `tensorflow-serving-api` generates."""

import asyncio
from concurrent import futures
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from tfagent.serving import api, status

MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving lifts gRPC's 4 MiB default the same way.


def _deadline(context):
  remaining = context.time_remaining()
  return None if remaining is None else time.monotonic() + remaining


def to_ndarray(proto) -> np.ndarray:
  """A TensorProto as an array; strings directly, as tf.make_ndarray is slow on them."""
  if proto.dtype == types_pb2.DT_STRING and not proto.tensor_content:
    shape = [d.size for d in proto.tensor_shape.dim]
    values = np.array(list(proto.string_val), dtype=object)
    if values.size != int(np.prod(shape)):
      raise ValueError(f"{values.size} values do not fill shape {shape}")
    return values.reshape(shape)
  return tf.make_ndarray(proto)


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
  """An output array as a TensorProto: raw bytes for numbers, string_val for strings."""
  proto = tensor_pb2.TensorProto()
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  if array.dtype == object:
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(array.ravel().tolist())
  elif array.dtype in (np.float32, np.float64, np.int32, np.int64, np.bool_):
    proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
  else:
    proto.CopyFrom(tf.make_tensor_proto(array))
  return proto


def inputs_from_protos(protos, signature) -> dict:
  """TensorProtos as arrays, each checked against the signature's dtype."""
  inputs = {}
  for name, proto in protos.items():
    expected = signature.inputs[name].dtype if name in signature.inputs else proto.dtype
    if proto.dtype != expected:
      raise status.invalid_argument(
          f"Expects arg[{name}] to be {tf.as_dtype(expected).name} but "
          f"{tf.as_dtype(proto.dtype).name} is provided")
    try:
      inputs[name] = to_ndarray(proto)
    except (TypeError, ValueError) as e:
      raise status.invalid_argument(f"input {name}: {e}") from None
  return inputs


class _Servicer:
  """Shared: runs work off the event loop, maps ServingErrors to gRPC statuses, metrics."""

  def __init__(self, manager, metrics, executor):
    self.manager, self.metrics, self.executor = manager, metrics, executor

  def _in_pool(self, fn, *args):
    return api.in_pool(self.executor, fn, *args)

  async def _call(self, method: str, request, context, work):
    started = time.perf_counter()
    code = "OK"
    try:
      return await work
    except status.ServingError as e:
      code = e.code.name
      await context.abort(e.code, e.message)
    finally:
      name = request.model_spec.name
      self.metrics.observe_request(name if name in self.manager.models else "<unknown>",
                                   "grpc", method, code, time.perf_counter() - started)


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict, Classify and GetModelMetadata."""

  async def Predict(self, request, context):
    return await self._call("predict", request, context, self._predict(request, context))

  async def _predict(self, request, context):
    servable = self.manager.resolve(*api.spec_parts(request.model_spec))
    name = request.model_spec.signature_name or "serving_default"
    inputs = inputs_from_protos(request.inputs, servable.signature(name))
    outputs = await api.run_async(servable, name, inputs, _deadline(context), self.executor)
    if request.output_filter:
      missing = set(request.output_filter) - set(outputs)
      if missing:
        raise status.invalid_argument(
            f"output tensor alias not found in signature: {', '.join(sorted(missing))}")
      outputs = {k: outputs[k] for k in request.output_filter}
    response = predict_pb2.PredictResponse()
    api.fill_spec(response.model_spec, servable, name)
    for key, value in outputs.items():
      response.outputs[key].CopyFrom(to_tensor_proto(value))
    return response

  async def Classify(self, request, context):
    return await self._call("classify", request, context, self._in_pool(
        api.classify, self.manager, request, _deadline(context)))

  async def GetModelMetadata(self, request, context):
    return await self._call("metadata", request, context,
                            self._in_pool(api.metadata, self.manager, request))


class ModelServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus (HandleReloadConfigRequest stays UNIMPLEMENTED)."""

  async def GetModelStatus(self, request, context):
    return await self._call("status", request, context,
                            self._in_pool(api.model_status, self.manager, request))


class GrpcServer:
  """grpc.aio server on its own event loop thread; model calls as in REST."""

  def __init__(self, manager, metrics, address: str, max_threads: int):
    self.executor = futures.ThreadPoolExecutor(max_threads, "grpc")
    self.loop = asyncio.SelectorEventLoop()
    threading.Thread(target=self.loop.run_forever, daemon=True, name="grpc").start()
    asyncio.run_coroutine_threadsafe(self._start(manager, metrics, address),
                                     self.loop).result(timeout=60)

  async def _start(self, manager, metrics, address: str) -> None:
    self.server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, metrics, self.executor), self.server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(manager, metrics, self.executor), self.server)
    if self.server.add_insecure_port(address) == 0:
      raise OSError(f"gRPC: cannot bind {address}")
    await self.server.start()

  def stop(self, grace: float = 2.0) -> None:
    asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(grace + 5)
    self.loop.call_soon_threadsafe(self.loop.stop)
    self.executor.shutdown(wait=False)
