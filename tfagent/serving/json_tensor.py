"""REST bodies <-> arrays and protos as TF Serving's util/json_tensor.cc converts them.

Row (`instances`) and columnar (`inputs`) predict bodies become arrays of the
signature's dtypes, classify/regress bodies become tf.Examples, and answers are
written with rapidjson's layout and TF Serving's float text. Messages are TF
Serving's, word for word, including the `JSON Value: <doc>` prefix.
"""

import base64
import re

import grpc
import numpy as np
import tensorflow as tf

from tfagent.serving import json_text, status, tensors

ROW, COLUMNAR = "row", "columnar"
_B64_CHARS = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_INT_RANGES = {tf.int32: (-2**31, 2**31), tf.int16: (-2**31, 2**31), tf.int8: (-2**31, 2**31),
               tf.uint8: (-2**31, 2**31), tf.int64: (-2**63, 2**63), tf.uint32: (0, 2**32),
               tf.uint64: (0, 2**64)}


def json_type(value) -> str:
  """rapidjson's type names (JsonTypeString)."""
  if value is None:
    return "Null"
  if value is True:
    return "True"
  if value is False:
    return "False"
  return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def format_error(value, message: str) -> status.ServingError:
  """FormatError: 'JSON Value: <value as debug JSON> <message>'."""
  return status.invalid_argument(f"JSON Value: {json_text.debug_string(value)} {message}")


def type_error(value, dtype: tf.DType) -> status.ServingError:
  return status.invalid_argument(
      f"JSON Value: {json_text.debug_string(value)} Type: {json_type(value)} is not of "
      f"expected type: {tensors.dtype_name(dtype)}")


def is_b64(value) -> bool:
  """{"b64": "<string>"} and nothing else (IsValBase64Object)."""
  return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def b64decode(text: str) -> bytes:
  """absl::Base64Unescape: padding optional, ASCII whitespace ignored."""
  text = "".join(text.split())
  if not _B64_CHARS.fullmatch(text) or len(text) % 4 == 1 or ("=" in text and len(text) % 4):
    raise status.invalid_argument("Unable to base64 decode")
  return base64.b64decode(text + "=" * (-len(text) % 4))


def _to_bytes(text: str) -> bytes:
  return text.encode("utf-8", "surrogateescape")


def convert_leaf(value, dtype: tf.DType):
  """One JSON leaf as a value of `dtype` (AddValueToTensor, JsonDecodeBase64Object)."""
  kind = type(value)
  if dtype == tf.string:
    if kind is str:
      return _to_bytes(value)
    if kind is dict:
      if not is_b64(value):
        raise format_error(value, "not formatted correctly for base64 data")
      return b64decode(value["b64"])
    raise type_error(value, dtype)
  if dtype == tf.bool:
    if kind is bool:
      return value
  elif dtype in (tf.float32, tf.float64):
    if kind in (int, float):
      return value
  elif dtype in _INT_RANGES:
    low, high = _INT_RANGES[dtype]
    if kind is int and low <= value < high:
      return value
  else:
    raise status.ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_text.debug_string(value)} to type: "
        f"{tensors.dtype_name(dtype)}")
  raise type_error(value, dtype)


def dense_shape(value) -> list:
  """GetDenseTensorShape: the sizes down the first elements of nested lists."""
  shape = []
  while type(value) is list:
    shape.append(len(value))
    value = value[0] if value else None
  return shape


def fill(value, shape: list, dtype: tf.DType) -> list:
  """FillTensorProto without recursion: the leaves of a dense nested list, checked."""
  flat, pending = [], [(value, 0)]
  rank = len(shape)
  while pending:
    v, level = pending.pop()
    if type(v) is not list:
      if level != rank:
        raise status.invalid_argument(
            f"JSON Value: {json_text.debug_string(v)} found at incorrect level: {level + 1} "
            f"in the JSON DOM. Expected at level: {rank}")
      flat.append(convert_leaf(v, dtype))
      continue
    if level >= rank:
      raise status.invalid_argument(
          f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(v) != shape[level]:
      raise status.invalid_argument(f"Encountered list at unexpected size: {len(v)} at level: "
                                    f"{level} expected size: {shape[level]}")
    pending.extend((item, level + 1) for item in reversed(v))
  return flat


def to_array(flat: list, shape: list, dtype: tf.DType, alias: str) -> np.ndarray:
  """The leaves as an array; ranks TensorFlow (254) or numpy (64) cannot hold fail as at predict."""
  tensors.check_rank(alias, len(shape))
  if dtype == tf.string:
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
  elif dtype in _INT_RANGES and dtype not in (tf.int64, tf.uint64, tf.uint32):
    array = np.array(flat, dtype=np.int64).astype(dtype.as_numpy_dtype)  # Wraps, as int_val.
  else:
    array = np.array(flat, dtype=dtype.as_numpy_dtype)
  return array.reshape(shape)


def _strings_fast(value) -> list | None:
  """A plain list of strings (the common body) as bytes, without the general walk."""
  if type(value) is list and value and all(type(v) is str for v in value):
    return [_to_bytes(v) for v in value]
  return None


def tensor_from_json(value, dtype: tf.DType, alias: str) -> np.ndarray:
  """A columnar value (any nesting) as an array of `dtype`."""
  strings = _strings_fast(value) if dtype == tf.string else None
  if strings is not None:
    return to_array(strings, [len(strings)], dtype, alias)
  shape = dense_shape(value)
  return to_array(fill(value, shape, dtype), shape, dtype, alias)


class _Rows:
  """Per-input leaves of the row format, with each instance's size and shape checked."""

  def __init__(self, infos):
    self.infos, self.flat, self.shapes, self.sizes = infos, {}, {}, {}

  def add(self, name: str, item) -> None:
    """AddInstanceItem."""
    if name not in self.infos:
      raise status.invalid_argument(f"JSON object: does not have named input: {name}")
    shape = dense_shape(item)
    leaves = fill(item, shape, tf.as_dtype(self.infos[name].dtype))
    if name not in self.sizes:
      self.sizes[name], self.shapes[name], self.flat[name] = len(leaves), shape, []
    elif self.sizes[name] != len(leaves):
      raise status.invalid_argument(f"Expecting tensor size: {self.sizes[name]} but got: "
                                    f"{len(leaves)}")
    elif self.shapes[name] != shape:
      raise status.invalid_argument(f"Expecting shape {_shape(self.shapes[name])} but got: "
                                    f"{_shape(shape)}")
    self.flat[name].extend(leaves)

  def arrays(self, count: int) -> dict:
    return {name: to_array(flat, [count, *self.shapes[name]],
                           tf.as_dtype(self.infos[name].dtype), name)
            for name, flat in self.flat.items()}


def _shape(shape: list) -> str:
  return "[" + ",".join(str(d) for d in shape) + "]"


def _wrapped(error: status.ServingError, where: str) -> status.ServingError:
  return status.invalid_argument(f"Failed to process element: {where} of 'instances' list. "
                                 f"Error: {error.code.name}: {error.message}")


def inputs_from_instances(instances: list, infos) -> dict:
  """FillTensorMapFromInstancesList: one element, or object of named elements, per example."""
  names = sorted(infos)
  first_is_object = type(instances[0]) is dict
  if not first_is_object and len(names) > 1:
    raise status.invalid_argument(
        "instances is a plain list, but expecting list of objects as multiple input "
        "tensors required as per tensorinfo_map")
  objects = first_is_object and not is_b64(instances[0])
  if not objects and infos[names[0]].dtype == tf.string.as_datatype_enum:
    strings = _strings_fast(instances)
    if strings is not None:
      return {names[0]: to_array(strings, [len(strings)], tf.string, names[0])}
  rows = _Rows(infos)
  for i, item in enumerate(instances):
    item_is_object = type(item) is dict and not is_b64(item)
    if objects and not item_is_object:
      raise status.invalid_argument(f"Expecting object but got list at item {i} of input list")
    if not objects and item_is_object:
      raise status.invalid_argument(
          f"Expecting value/list but got object at item {i} of input list")
    if not objects:
      try:
        rows.add(names[0], item)
      except status.ServingError as e:
        raise _wrapped(e, str(i)) from None
      continue
    for key, value in item.items():
      try:
        rows.add(key, value)
      except status.ServingError as e:
        raise _wrapped(e, f"{i} key: {key}") from None
    if set(item) != set(names):
      raise status.invalid_argument(
          f"Failed to process element: {i} of 'instances' list. JSON object: "
          f"{json_text.debug_string(item)} keys must be equal to: {','.join(names)}")
  return rows.arrays(len(instances))


def inputs_from_columns(inputs, infos) -> dict:
  """FillTensorMapFromInputsMap: one value, or an object of named values."""
  names = sorted(infos)
  if type(inputs) is not dict or is_b64(inputs):
    if len(names) > 1:
      raise status.invalid_argument(
          "inputs is a plain value/list, but expecting an object as multiple input tensors "
          "required as per tensorinfo_map")
    return {names[0]: tensor_from_json(inputs, tf.as_dtype(infos[names[0]].dtype), names[0])}
  arrays = {}
  for name in names:
    if name not in inputs:
      raise status.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    arrays[name] = tensor_from_json(inputs[name], tf.as_dtype(infos[name].dtype), name)
  return arrays


def parse_body(body: bytes) -> dict:
  """ParseJson and FillSignature: a JSON object whose signature_name, if any, is a string."""
  doc = json_text.loads(body)
  if type(doc) is not dict:
    raise format_error(doc, "Is not object")
  if "signature_name" in doc and type(doc["signature_name"]) is not str:
    raise format_error(doc, "not formatted correctly. 'signature_name' key must be a "
                       "string value.")
  return doc


def check_predict_body(doc: dict, max_batch_size: int = 0) -> str:
  """The predict body's format (row or columnar), or TF Serving's error; with batching,
  more instances than a batch holds are refused before any is converted."""
  has_instances, has_inputs = "instances" in doc, "inputs" in doc
  if has_instances and has_inputs:
    raise format_error(doc, "Not formatted correctly expecting only one of 'inputs' or "
                       "'instances' keys to exist ")
  if has_instances:
    _nonempty_list(doc, "instances", "Expecting 'instances' to be an list/array",
                   "No values in 'instances' array", max_batch_size)
    return ROW
  if has_inputs:
    return COLUMNAR
  raise status.invalid_argument("Missing 'inputs' or 'instances' key")


def _nonempty_list(doc: dict, key: str, not_list: str, empty: str, limit: int) -> list:
  """doc[key] as a non-empty list of at most `limit` items (0: any), else TF Serving's error."""
  items = doc[key]
  if type(items) is not list:
    raise format_error(doc, not_list)
  if not items:
    raise format_error(doc, empty)
  if limit and len(items) > limit:
    raise status.task_size_error(len(items), limit)
  return items


def predict_inputs(doc: dict, fmt: str, signature, name: str) -> dict:
  """FillPredictRequestFromJson after the signature is known: arrays by input alias."""
  if not signature.inputs:
    raise status.invalid_argument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
  if fmt == ROW:
    return inputs_from_instances(doc["instances"], signature.inputs)
  return inputs_from_columns(doc["inputs"], signature.inputs)


def _feature_value(name: str, value, feature) -> None:
  """AddValueToFeature: one JSON value into a tf.train.Feature of a consistent kind."""
  kind = type(value)
  if kind is bool:
    wanted, item = "int64_list", int(value)
  elif kind is str:
    wanted, item = "bytes_list", _to_bytes(value)
  elif kind is dict and is_b64(value):
    wanted, item = "bytes_list", b64decode(value["b64"])
  elif kind is float:
    wanted, item = "float_list", value
  elif kind is int:
    if value >= 2**63:
      raise status.invalid_argument(
          f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    wanted, item = "int64_list", value
  else:
    raise status.invalid_argument(
        f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
  current = feature.WhichOneof("kind")
  if current not in (None, wanted):
    raise status.invalid_argument(f"Unexpected element type in feature: {name} expecting "
                                  f"type: {current.split('_')[0]}")
  getattr(feature, wanted).value.append(item)


def example_from_json(value, example) -> None:
  """MakeExampleFromJsonObject."""
  if type(value) is not dict:
    raise status.invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
  for name, content in value.items():
    feature = example.features.feature[name]
    feature.Clear()
    for item in content if type(content) is list else [content]:
      _feature_value(name, item, feature)


def fill_examples_request(doc: dict, request, max_examples: int = 0) -> None:
  """FillClassifyRegressRequestFromJson: `context` and `examples` into request.input."""
  has_context = "context" in doc
  if has_context:
    example_from_json(doc["context"], request.input.example_list_with_context.context)
  if "examples" not in doc:
    raise format_error(doc, "When method is classify, key 'examples' is expected and was "
                       "not found")
  examples = _nonempty_list(doc, "examples", "Expecting 'examples' value to be an list/array",
                            "'examples' value is an empty array", max_examples)
  target = (request.input.example_list_with_context if has_context
            else request.input.example_list)
  for value in examples:
    example_from_json(value, target.examples.add())
