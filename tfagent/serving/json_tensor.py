"""REST bodies as the requests gRPC clients send, filled as TF Serving's util/json_tensor.cc fills
them: predict bodies (row `instances`, columnar `inputs`) become a PredictRequest of the
signature's dtypes, classify and regress bodies tf.Examples; from there both protocols take one
path (api.py). Messages are TF Serving's, word for word, with its `JSON Value: <doc>` prefix."""

import base64
import math
import re

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tfagent.serving import json_text, tensors
from tfagent.serving.tensors import ServingError, invalid_argument

ROW, COLUMNAR = "row", "columnar"
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_INT32 = (-2**31, 2**31)  # Narrow integers travel in int_val, as TF Serving sends them.
_INT_RANGES = {tf.int32: _INT32, tf.int16: _INT32, tf.int8: _INT32, tf.uint8: _INT32,
               tf.int64: (-2**63, 2**63), tf.uint32: (0, 2**32), tf.uint64: (0, 2**64)}
# A row body whose `instances` come first (after a plain signature_name, if any).
_ROW_PREFIX = re.compile(rb'\s*\{\s*(?:"signature_name"\s*:\s*"[^"\\]*"\s*,\s*)?'
                         rb'"instances"\s*:\s*\[')


def json_type(value) -> str:
  """RapidJSON's type names (JsonTypeString)."""
  if type(value) is bool:
    return "True" if value else "False"
  return {dict: "Object", list: "Array", str: "String", type(None): "Null"}.get(type(value),
                                                                             "Number")


def format_error(value, message: str) -> ServingError:
  """FormatError: 'JSON Value: <value as debug JSON> <message>'."""
  return invalid_argument(f"JSON Value: {json_text.debug_string(value)} {message}")


def is_b64(value) -> bool:
  """{"b64": "<string>"} and nothing else (IsValBase64Object)."""
  return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def b64decode(text: str) -> bytes:
  """absl::Base64Unescape: padding optional, ASCII whitespace ignored."""
  text = "".join(text.split())
  if not _B64.fullmatch(text) or len(text) % 4 == 1 or ("=" in text and len(text) % 4):
    raise invalid_argument("Unable to base64 decode")
  return base64.b64decode(text + "=" * (-len(text) % 4))


def convert_leaf(value, dtype: tf.DType):
  """One JSON leaf as a value of `dtype` (AddValueToTensor, JsonDecodeBase64Object)."""
  kind = type(value)
  if dtype == tf.string and kind is dict:
    if not is_b64(value):
      raise format_error(value, "not formatted correctly for base64 data")
    return b64decode(value["b64"])
  if dtype == tf.string:
    ok = kind is str
  elif dtype == tf.bool:
    ok = kind is bool
  elif dtype in (tf.float32, tf.float64):
    ok = kind in (int, float)
  elif dtype in _INT_RANGES:
    ok = kind is int and _INT_RANGES[dtype][0] <= value < _INT_RANGES[dtype][1]
  else:
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "Conversion of JSON Value: "
                       f"{json_text.debug_string(value)} to type: {tensors.dtype_name(dtype)}")
  if not ok:
    raise format_error(value, f"Type: {json_type(value)} is not of expected type: "
                       f"{tensors.dtype_name(dtype)}")
  return value.encode() if kind is str else value


def dense_shape(value) -> list:
  """GetDenseTensorShape: the sizes down the first elements of nested lists."""
  shape = []
  while type(value) is list:
    shape.append(len(value))
    value = value[0] if value else None
  return shape


def fill(value, shape: list, dtype: tf.DType) -> list:
  """FillTensorProto without recursion: the leaves of a dense nested list, checked."""
  if dtype == tf.string and len(shape) == 1 and all(type(v) is str for v in value):
    return [v.encode() for v in value]  # The common body: a plain list of strings.
  flat, pending, rank = [], [(value, 0)], len(shape)
  while pending:
    v, level = pending.pop()
    if type(v) is not list:
      if level != rank:
        raise invalid_argument(f"JSON Value: {json_text.debug_string(v)} found at incorrect "
                               f"level: {level + 1} in the JSON DOM. Expected at level: {rank}")
      flat.append(convert_leaf(v, dtype))
    elif level >= rank:
      raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    elif len(v) != shape[level]:
      raise invalid_argument(f"Encountered list at unexpected size: {len(v)} at level: "
                             f"{level} expected size: {shape[level]}")
    else:
      pending.extend((item, level + 1) for item in reversed(v))
  return flat


def _shape(shape: list) -> str:
  return "[" + ",".join(map(str, shape)) + "]"


def _instances(instances: list, infos) -> dict:
  """FillTensorMapFromInstancesList: {name: (leaves, shape)}, an element or object a row."""
  names = sorted(infos)
  objects = type(instances[0]) is dict and not is_b64(instances[0])
  if not objects and len(names) > 1:
    raise invalid_argument("instances is a plain list, but expecting list of objects as "
                           "multiple input tensors required as per tensorinfo_map")
  if not objects and infos[names[0]].dtype == tf.string.as_datatype_enum and all(
      type(v) is str for v in instances):  # The common body: a plain list of strings.
    return {names[0]: ([v.encode() for v in instances], [len(instances)])}
  flat, shapes = {}, {}
  for i, item in enumerate(instances):
    if objects != (type(item) is dict and not is_b64(item)):
      wanted = "object but got list" if objects else "value/list but got object"
      raise invalid_argument(f"Expecting {wanted} at item {i} of input list")
    for key, value in (item.items() if objects else [(names[0], item)]):
      where = f"{i} key: {key}" if objects else str(i)
      try:
        if key not in infos:
          raise invalid_argument(f"JSON object: does not have named input: {key}")
        shape = dense_shape(value)
        leaves = fill(value, shape, tf.as_dtype(infos[key].dtype))
        if key in shapes and math.prod(shapes[key]) != len(leaves):
          raise invalid_argument(f"Expecting tensor size: {math.prod(shapes[key])} but got: "
                                 f"{len(leaves)}")
        if key in shapes and shapes[key] != shape:
          raise invalid_argument(f"Expecting shape {_shape(shapes[key])} but got: "
                                 f"{_shape(shape)}")
      except ServingError as e:
        raise invalid_argument(f"Failed to process element: {where} of 'instances' list. "
                               f"Error: {e.code.name}: {e.message}") from None
      shapes[key] = shape
      flat.setdefault(key, []).extend(leaves)
    if objects and set(item) != set(names):
      raise invalid_argument(
          f"Failed to process element: {i} of 'instances' list. JSON object: "
          f"{json_text.debug_string(item)} keys must be equal to: {','.join(names)}")
  return {key: (flat[key], [len(instances), *shapes[key]]) for key in flat}


def _inputs(inputs, infos) -> dict:
  """FillTensorMapFromInputsMap: {name: (leaves, shape)}, one value or an object of them."""
  names = sorted(infos)
  if type(inputs) is not dict or is_b64(inputs):
    if len(names) > 1:
      raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                             "multiple input tensors required as per tensorinfo_map")
    inputs = {names[0]: inputs}
  out = {}
  for name in names:
    if name not in inputs:
      raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    shape = dense_shape(inputs[name])
    out[name] = fill(inputs[name], shape, tf.as_dtype(infos[name].dtype)), shape
  return out


def parse_body(body: bytes) -> dict:
  """ParseJson and FillSignature: a JSON object whose signature_name, if any, is a string."""
  doc = json_text.loads(body)
  if type(doc) is not dict:
    raise format_error(doc, "Is not object")
  if type(doc.get("signature_name", "")) is not str:
    raise format_error(doc, "not formatted correctly. 'signature_name' key must be a string "
                       "value.")
  return doc


def _nonempty_list(doc: dict, key: str, not_list: str, empty: str, limit: int) -> list:
  """doc[key] as a non-empty list of at most `limit` items (0: any), else TF Serving's error."""
  items = doc[key]
  if type(items) is not list:
    raise format_error(doc, not_list)
  if not items:
    raise format_error(doc, empty)
  if limit and len(items) > limit:
    raise tensors.task_size_error(len(items), limit)
  return items


def predict_format(doc: dict, max_batch_size: int = 0) -> str:
  """The predict body's format (row or columnar); with batching, more instances than a batch
  holds are refused before any is converted."""
  if "instances" in doc and "inputs" in doc:
    raise format_error(doc, "Not formatted correctly expecting only one of 'inputs' or "
                       "'instances' keys to exist ")
  if "instances" in doc:
    _nonempty_list(doc, "instances", "Expecting 'instances' to be an list/array",
                   "No values in 'instances' array", max_batch_size)
    return ROW
  if "inputs" in doc:
    return COLUMNAR
  raise invalid_argument("Missing 'inputs' or 'instances' key")


def predict_request(doc: dict, fmt: str, signature, spec) -> predict_pb2.PredictRequest:
  """FillPredictRequestFromJson, once the signature's inputs are known."""
  if not signature.inputs:
    raise invalid_argument("Failed to get input map for signature: "
                           f"{spec.signature_name or 'DEFAULT'}")
  converted = (_instances(doc["instances"], signature.inputs) if fmt == ROW
               else _inputs(doc["inputs"], signature.inputs))
  request = predict_pb2.PredictRequest(model_spec=spec)
  for name, (flat, shape) in converted.items():  # In the typed field TF Serving fills.
    proto = request.inputs[name]
    proto.dtype = signature.inputs[name].dtype
    for size in shape:
      proto.tensor_shape.dim.add(size=size)
    getattr(proto, tensors.FIELDS[proto.dtype]).extend(flat)
  return request


def _feature_value(name: str, value, feature) -> None:
  """AddValueToFeature: one JSON value into a tf.train.Feature of a consistent kind."""
  kind = type(value)
  if kind is int and value >= 2**63:
    raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
  if kind in (bool, int):
    wanted, item = "int64_list", int(value)
  elif kind is str or is_b64(value):
    wanted, item = "bytes_list", value.encode() if kind is str else b64decode(value["b64"])
  elif kind is float:
    wanted, item = "float_list", value
  else:
    raise invalid_argument(
        f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
  current = feature.WhichOneof("kind")
  if current not in (None, wanted):
    raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: "
                           f"{current.split('_')[0]}")
  getattr(feature, wanted).value.append(item)


def _example(value, example) -> None:
  """MakeExampleFromJsonObject."""
  if type(value) is not dict:
    raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
  for name, content in value.items():
    feature = example.features.feature[name]
    feature.Clear()
    for item in content if type(content) is list else [content]:
      _feature_value(name, item, feature)


def fill_examples_request(doc: dict, request, max_examples: int = 0) -> None:
  """FillClassifyRegressRequestFromJson: `context` and `examples` into request.input."""
  if "context" in doc:
    _example(doc["context"], request.input.example_list_with_context.context)
  if "examples" not in doc:
    raise format_error(doc, "When method is classify, key 'examples' is expected and was not "
                       "found")
  examples = _nonempty_list(doc, "examples", "Expecting 'examples' value to be an list/array",
                            "'examples' value is an empty array", max_examples)
  target = (request.input.example_list_with_context if "context" in doc
            else request.input.example_list)
  for value in examples:
    _example(value, target.examples.add())


def count_flat_instances(body: bytes) -> int | None:
  """The instances of a row body whose list holds only strings and numbers, counted on its bytes
  (None for any other body): with batching, a list longer than a batch is refused from this
  count, where parsing 30 MB of short strings would take half a gigabyte of Python objects."""
  prefix = _ROW_PREFIX.match(body)
  if not prefix:
    return None
  rest = np.frombuffer(body, np.uint8)[prefix.end():]
  if (rest == ord("\\")).any():
    return None  # Escaped quotes: leave it to the parser.
  outside = np.bitwise_xor.accumulate(rest == ord('"')) == 0  # Not within a string.
  closing = np.flatnonzero((rest == ord("]")) & outside)
  if not closing.size:
    return None
  items, outside = rest[:closing[0]], outside[:closing[0]]
  structure = (items == ord("[")) | (items == ord("{")) | (items == ord(":"))
  if (structure & outside).any() or not (items > ord(" ")).any():
    return None
  return int(((items == ord(",")) & outside).sum()) + 1
