"""TF Serving's wire vocabulary, shared by both protocols: status codes and their HTTP mapping,
dtype names, TensorProtos as arrays and back. A proto is checked before any array is built: it
declares its shape apart from its values, and TensorFlow pads values short of the shape with the
last one, so a 52-byte message could ask for gigabytes (`check_size`)."""

import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2 as T

_C = grpc.StatusCode
# model_servers/http_server.cc ToHTTPStatusCode; every other code is 500.
HTTP_STATUS = {_C.OK: 200, _C.CANCELLED: 499, _C.INVALID_ARGUMENT: 400,
               _C.FAILED_PRECONDITION: 400, _C.OUT_OF_RANGE: 400, _C.UNAUTHENTICATED: 401,
               _C.PERMISSION_DENIED: 403, _C.NOT_FOUND: 404, _C.ALREADY_EXISTS: 409,
               _C.ABORTED: 409, _C.RESOURCE_EXHAUSTED: 429, _C.UNIMPLEMENTED: 501,
               _C.UNAVAILABLE: 503, _C.DEADLINE_EXCEEDED: 504}
MAX_DIMS, NUMPY_MAX_DIMS = 254, 64  # TensorShape::MaxDimensions(), and numpy's own limit.
# The typed field of each dtype (Tensor::AsProtoField); narrow integers travel in int_val.
FIELDS = {T.DT_FLOAT: "float_val", T.DT_DOUBLE: "double_val", T.DT_INT64: "int64_val",
          T.DT_UINT32: "uint32_val", T.DT_UINT64: "uint64_val", T.DT_BOOL: "bool_val",
          T.DT_STRING: "string_val", T.DT_HALF: "half_val",
          **dict.fromkeys((T.DT_INT32, T.DT_INT16, T.DT_INT8, T.DT_UINT8, T.DT_UINT16), "int_val")}


class ServingError(Exception):
  """A request's failure: its gRPC status code, and the HTTP status REST answers it with."""

  def __init__(self, code: grpc.StatusCode, message: str, http_status: int = 0):
    super().__init__(message)
    self.code, self.message = code, message
    self.http_status = http_status or HTTP_STATUS.get(code, 500)


def invalid_argument(message: str) -> ServingError:
  """The error of most refused requests (400)."""
  return ServingError(_C.INVALID_ARGUMENT, message)


def deadline_exceeded() -> ServingError:
  """The error of a call past its deadline (504)."""
  return ServingError(_C.DEADLINE_EXCEEDED, "Deadline exceeded")


def task_size_error(size: int, limit: int) -> ServingError:
  """The batcher's refusal of a request larger than a batch (also raised before decoding)."""
  return invalid_argument(f"Task size {size} is larger than maximum input batch size {limit}")


def enum_name(dtype) -> str:
  """DataType_Name: 'DT_FLOAT', 'DT_STRING' (an array of dtype object holds strings)."""
  return T.DataType.Name(tf.as_dtype(tf.string if dtype == object else dtype).as_datatype_enum)


def dtype_name(dtype) -> str:
  """TensorFlow's DataTypeString: 'float', 'double', 'string', 'int64'."""
  try:
    return enum_name(dtype)[3:].lower()
  except (TypeError, ValueError):
    return f"unknown dtype {dtype}"


def check_size(alias: str, proto, max_fill_bytes: int) -> None:
  """Tensor::FromProto's checks, before any array is built; values short of the shape are
  padded (as TensorFlow pads) only up to `max_fill_bytes` of array."""
  shape = [d.size for d in proto.tensor_shape.dim]
  if NUMPY_MAX_DIMS < len(shape) <= MAX_DIMS:
    raise invalid_argument(f"tensor parsing error: {alias} (at most {NUMPY_MAX_DIMS} "
                           "dimensions here)")
  if (len(shape) > MAX_DIMS or proto.tensor_shape.unknown_rank or min(shape, default=0) < 0
      or proto.dtype not in FIELDS):
    raise invalid_argument(f"tensor parsing error: {alias}")
  string, content, elements = proto.dtype == T.DT_STRING, proto.tensor_content, math.prod(shape)
  itemsize = 8 if string else tf.as_dtype(proto.dtype).size  # A string: its pointer.
  # Each string of a string list takes a byte at least; other contents are exact.
  if content and (len(content) < elements if string else len(content) != elements * itemsize):
    raise invalid_argument(f"tensor parsing error: {alias}")
  count = len(getattr(proto, FIELDS[proto.dtype]))
  if not content and count < elements and elements * itemsize > max_fill_bytes:
    raise invalid_argument(
        f"input tensor alias: {alias} declares shape {shape} ({elements} values) but carries "
        f"{count}; padding it to its shape would take more than {max_fill_bytes} bytes")


def to_ndarray(proto, alias: str = "") -> np.ndarray:
  """A TensorProto (through `check_size`) as an array, padded as TensorFlow pads it."""
  try:
    if proto.dtype == T.DT_STRING and proto.tensor_content:  # TensorFlow's string list.
      return tf.io.parse_tensor(proto.SerializeToString(), tf.string).numpy()
    if FIELDS[proto.dtype] == "int_val" and not proto.tensor_content:  # Wrapped, as C++ casts.
      wide = tensor_pb2.TensorProto(dtype=T.DT_INT32, tensor_shape=proto.tensor_shape,
                                    int_val=proto.int_val)
      return tf.make_ndarray(wide).astype(tf.as_dtype(proto.dtype).as_numpy_dtype)
    return tf.make_ndarray(proto)
  except (tf.errors.InvalidArgumentError, TypeError, ValueError, OverflowError):
    raise invalid_argument(f"tensor parsing error: {alias}") from None


def check_strings(inputs: dict, limit: int) -> None:
  """No string input longer than --max_input_string_bytes (one huge text stalls its batch)."""
  for alias, array in inputs.items():
    longest = max(map(len, array.ravel()), default=0) if limit and array.dtype == object else 0
    if longest > limit:
      raise invalid_argument(f"input tensor alias: {alias} holds a string of {longest} bytes; "
                             f"the limit is {limit} bytes (--max_input_string_bytes)")


def to_proto(array: np.ndarray, as_content: bool = False) -> tensor_pb2.TensorProto:
  """An output as TF Serving writes it: typed fields (AsProtoField), or `tensor_content` with
  --enable_serialization_as_tensor_content (AsProtoTensorContent)."""
  dtype = tf.as_dtype(tf.string if array.dtype == object else array.dtype).as_datatype_enum
  if dtype not in FIELDS:
    return tf.make_tensor_proto(array)
  proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape={"dim": [{"size": n}
                                                                   for n in array.shape]})
  flat = array.ravel()
  if as_content and dtype == T.DT_STRING:  # port::EncodeStringList: varint lengths, then bytes.
    lengths = [_varint(len(v)) for v in flat]
    proto.tensor_content = b"".join(lengths) + b"".join(flat)
  elif as_content:
    proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
  else:
    values = flat.view(np.uint16) if dtype == T.DT_HALF else flat
    getattr(proto, FIELDS[dtype]).extend(values.tolist())
  return proto


def _varint(n: int) -> bytes:
  """A protobuf varint."""
  out = bytearray()
  while n >= 0x80:
    out.append(n & 0x7F | 0x80)
    n >>= 7
  return bytes(out + bytes([n]))
