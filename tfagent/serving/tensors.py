"""TensorProto <-> numpy as TF Serving converts them, with TensorFlow's dtype names.

Inputs are checked before anything is allocated: a proto declares its shape
apart from its values, and TensorFlow pads values short of the shape with the
last one, so a small message can ask for a large array (see `check_size`).
"""

import functools
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfagent.serving import status

MAX_DIMS = 254  # TensorShape::MaxDimensions(); numpy holds at most 64.
_NUMPY_MAX_DIMS = 64
# DataTypeString() where it differs from tf.DType.name (tensorflow/core/framework/types.cc).
_TF_NAMES = {"float32": "float", "float64": "double", "float16": "half"}
# Typed value field of each dtype (Tensor::AsProtoField).
_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val", types_pb2.DT_HALF: "half_val",
}


@functools.lru_cache(maxsize=None)
def _itemsize(dtype_enum: int) -> int:
  """Bytes a value of the dtype takes in an array (8 for a string's pointer)."""
  if dtype_enum == types_pb2.DT_STRING:
    return 8
  return tf.as_dtype(dtype_enum).size


@functools.lru_cache(maxsize=None)
def _numpy_dtype(dtype_enum: int):
  return tf.as_dtype(dtype_enum).as_numpy_dtype


@functools.lru_cache(maxsize=None)
def _enum_of(np_dtype: np.dtype) -> int:
  return tf.as_dtype(np_dtype).as_datatype_enum


def dtype_name(dtype) -> str:
  """TensorFlow's DataTypeString: 'float', 'double', 'string', 'int64', ..."""
  try:
    name = tf.as_dtype(dtype).name
  except TypeError:
    return f"unknown dtype {dtype}"
  return _TF_NAMES.get(name, name)


def dtype_enum_name(dtype) -> str:
  """DataType_Name: 'DT_FLOAT', 'DT_STRING', ..."""
  return types_pb2.DataType.Name(tf.as_dtype(dtype).as_datatype_enum)


def shape_of(proto) -> list:
  return [d.size for d in proto.tensor_shape.dim]


def num_values(proto, elements: int) -> int:
  """Values the proto carries (its typed field, or tensor_content); -1 if unreadable."""
  if proto.dtype not in _FIELDS:
    return -1
  if proto.tensor_content:
    if proto.dtype == types_pb2.DT_STRING:
      decoded = _decode_string_list(proto.tensor_content, elements)
      return -1 if decoded is None else len(decoded)
    itemsize = _itemsize(proto.dtype)
    return len(proto.tensor_content) // itemsize if len(proto.tensor_content) % itemsize == 0 \
        else -1
  return len(getattr(proto, _FIELDS[proto.dtype]))


def check_rank(alias: str, rank: int) -> None:
  """At most 254 dimensions (TensorShape::MaxDimensions), and numpy's 64, for either protocol."""
  if rank > MAX_DIMS:
    raise status.invalid_argument(f"tensor parsing error: {alias}")
  if rank > _NUMPY_MAX_DIMS:
    raise status.invalid_argument(f"tensor parsing error: {alias} (at most "
                                  f"{_NUMPY_MAX_DIMS} dimensions here)")


def check_size(alias: str, proto, max_fill_bytes: int) -> None:
  """The checks Tensor::FromProto makes, before any array is built.

  A valid shape (dims >= 0, at most 254 of them), a supported dtype, content
  that decodes; values short of the shape (TensorFlow pads with the last one)
  only up to `max_fill_bytes` of padded array.
  """
  shape = shape_of(proto)
  check_rank(alias, len(shape))
  if proto.tensor_shape.unknown_rank or any(d < 0 for d in shape):
    raise status.invalid_argument(f"tensor parsing error: {alias}")
  elements = math.prod(shape)
  count = num_values(proto, elements)
  if count < 0:
    raise status.invalid_argument(f"tensor parsing error: {alias}")
  if proto.tensor_content and count != elements:
    raise status.invalid_argument(f"tensor parsing error: {alias}")
  if count < elements and elements * _itemsize(proto.dtype) > max_fill_bytes:
    raise status.invalid_argument(
        f"input tensor alias: {alias} declares shape {shape} ({elements} values) but "
        f"carries {count}; padding it to its shape would take more than {max_fill_bytes} "
        "bytes")


def _decode_string_list(content: bytes, n: int):
  """TensorFlow's string list encoding (n varint32 lengths, then the bytes); None if malformed."""
  lengths, pos, end = [], 0, len(content)
  for _ in range(n):
    value, shift = 0, 0
    while True:
      if pos >= end or shift > 28:
        return None
      byte = content[pos]
      pos += 1
      value |= (byte & 0x7F) << shift
      shift += 7
      if not byte & 0x80:
        break
    lengths.append(value)
  if pos + sum(lengths) != end:
    return None
  out = []
  for length in lengths:
    out.append(content[pos:pos + length])
    pos += length
  return out


def _encode_string_list(values) -> bytes:
  lengths = bytearray()
  for v in values:
    n = len(v)
    while n >= 0x80:
      lengths.append((n & 0x7F) | 0x80)
      n >>= 7
    lengths.append(n)
  return bytes(lengths) + b"".join(values)


def to_ndarray(proto) -> np.ndarray:
  """A TensorProto (already through `check_size`) as an array, padded as TensorFlow pads."""
  shape = shape_of(proto)
  elements = math.prod(shape)
  if proto.dtype == types_pb2.DT_STRING:
    values = (_decode_string_list(proto.tensor_content, elements) if proto.tensor_content
              else list(proto.string_val))
    flat = np.empty(elements, dtype=object)
    flat[:] = b""
    return _padded(values, flat).reshape(shape)
  if proto.dtype in (types_pb2.DT_HALF, types_pb2.DT_UINT16, types_pb2.DT_INT16,
                     types_pb2.DT_INT8, types_pb2.DT_UINT8) and not proto.tensor_content:
    return tf.make_ndarray(proto)  # Packed fields these numpy casts do not read directly.
  np_dtype = _numpy_dtype(proto.dtype)
  if proto.tensor_content:
    return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
  values = np.asarray(getattr(proto, _FIELDS[proto.dtype]), dtype=np_dtype)
  if values.size == elements:
    return values.reshape(shape)
  return _padded(values, np.zeros(elements, dtype=np_dtype)).reshape(shape)


def _padded(values, flat: np.ndarray) -> np.ndarray:
  """`flat` holding `values`, then the last value repeated to its end (as TensorFlow pads)."""
  if len(values):
    flat[:min(len(values), flat.size)] = values[:flat.size]
    flat[len(values):] = values[-1]
  return flat


def to_proto(array: np.ndarray, as_content: bool = False) -> tensor_pb2.TensorProto:
  """An output array as TF Serving writes it: typed fields (AsProtoField), or
  `tensor_content` with --enable_serialization_as_tensor_content (AsProtoTensorContent)."""
  proto = tensor_pb2.TensorProto()
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  is_string = array.dtype == object or array.dtype.kind in "SU"
  proto.dtype = types_pb2.DT_STRING if is_string else _enum_of(array.dtype)
  flat = array.ravel()
  if is_string:
    values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat]
    if as_content:
      proto.tensor_content = _encode_string_list(values)
    else:
      proto.string_val.extend(values)
  elif as_content:
    proto.tensor_content = np.ascontiguousarray(flat).astype(flat.dtype.newbyteorder("<")).tobytes()
  elif proto.dtype == types_pb2.DT_HALF:
    proto.half_val.extend(flat.view(np.uint16).tolist())
  elif proto.dtype in _FIELDS:
    getattr(proto, _FIELDS[proto.dtype]).extend(flat.tolist())
  else:
    proto.CopyFrom(tf.make_tensor_proto(array))
  return proto
