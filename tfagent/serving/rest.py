"""TF Serving's REST API (g3doc/api_rest.md) as a Starlette (ASGI) app.

JSON is turned into arrays by the signature's input dtypes as TF Serving's
json_tensor.cc does: row (`instances`) or columnar (`inputs`) format,
`{"b64": ...}` for bytes, and the same error messages and status codes.
"""

import base64
import json
import time

from google.protobuf import json_format
import grpc
import numpy as np
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, model_pb2

from tfagent.serving import api, status

METRICS_PATH = "/monitoring/prometheus/metrics"


# JSON -> arrays ------------------------------------------------------------

def json_type(value) -> str:
  """rapidjson's type names, as TF Serving's messages use them."""
  if value is None:
    return "Null"
  if isinstance(value, bool):
    return "True" if value else "False"
  return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def is_b64(value) -> bool:
  return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def convert_value(value, dtype: tf.DType):
  """One JSON leaf as a value of `dtype`, or TF Serving's type error."""
  ok = False
  if dtype == tf.string:
    if isinstance(value, str):
      return value.encode("utf-8")
    if is_b64(value):
      try:
        return base64.b64decode(value["b64"], validate=True)
      except ValueError:
        raise status.invalid_argument("Unable to base64 decode") from None
  elif dtype == tf.bool:
    ok = isinstance(value, bool)
  elif dtype.is_integer:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif dtype.is_floating:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if not ok:
    raise status.invalid_argument(
        f"JSON Value: {json.dumps(value, ensure_ascii=False)} Type: {json_type(value)} "
        f"is not of expected type: {dtype.name}")
  return value


def to_array(value, dtype: tf.DType) -> np.ndarray:
  """A (nested) JSON list as a dense array of `dtype`; ragged lists are an error."""
  shape, probe = [], value
  while isinstance(probe, list):
    shape.append(len(probe))
    probe = probe[0] if probe else None
  flat = []

  def fill(v, level):
    if not isinstance(v, list):
      if level != len(shape):
        raise status.invalid_argument(
            f"JSON Value: {json.dumps(v, ensure_ascii=False)} found at incorrect level: "
            f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
      flat.append(convert_value(v, dtype))
      return
    if level >= len(shape):
      raise status.invalid_argument(
          f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(v) != shape[level]:
      raise status.invalid_argument(
          f"Encountered list at unexpected size: {len(v)} at level: {level} "
          f"expected size: {shape[level]}")
    for item in v:
      fill(item, level + 1)

  if dtype == tf.string and len(shape) == 1 and all(type(v) is str for v in value):
    flat = [v.encode("utf-8") for v in value]  # The common case, without recursion.
  else:
    fill(value, 0)
  np_dtype = object if dtype == tf.string else dtype.as_numpy_dtype
  return np.array(flat, dtype=np_dtype).reshape(shape)


def inputs_from_instances(instances, signature) -> dict:
  """Row format: one element (or object of named elements) per example."""
  names = sorted(signature.inputs)
  dtypes = {n: tf.as_dtype(signature.inputs[n].dtype) for n in names}
  objects = isinstance(instances[0], dict) and not is_b64(instances[0])
  if not objects and len(names) > 1:
    raise status.invalid_argument(
        "instances is a plain list, but expecting list of objects as multiple input "
        "tensors required as per tensorinfo_map")
  if not objects:
    try:
      if any(isinstance(v, dict) and not is_b64(v) for v in instances):
        raise status.invalid_argument("Expecting value/list but got object in input list")
      return {names[0]: to_array(instances, dtypes[names[0]])}
    except status.ServingError as e:
      raise status.invalid_argument(f"Failed to process element of 'instances' list. "
                                    f"Error: {e.message}") from None
  columns = {n: [] for n in names}
  for i, item in enumerate(instances):
    if not isinstance(item, dict) or set(item) != set(names):
      raise status.invalid_argument(
          f"Failed to process element: {i} of 'instances' list. JSON object: "
          f"{json.dumps(item, ensure_ascii=False)} keys must be equal to: {','.join(names)}")
    for n in names:
      columns[n].append(item[n])
  return {n: to_array(columns[n], dtypes[n]) for n in names}


def inputs_from_columns(inputs, signature) -> dict:
  """Columnar format: one value, or an object of named values."""
  names = sorted(signature.inputs)
  dtypes = {n: tf.as_dtype(signature.inputs[n].dtype) for n in names}
  if not isinstance(inputs, dict) or is_b64(inputs):
    if len(names) > 1:
      raise status.invalid_argument(
          "inputs is a plain value/list, but expecting an object as multiple input "
          "tensors required as per tensorinfo_map")
    return {names[0]: to_array(inputs, dtypes[names[0]])}
  for n in names:
    if n not in inputs:
      raise status.invalid_argument(f"Missing named input: {n} in 'inputs' object.")
  return {n: to_array(inputs[n], dtypes[n]) for n in names}


def parse_predict_body(doc: dict, signature) -> tuple:
  """(inputs, 'row' | 'columnar') from a predict request body."""
  has_instances, has_inputs = "instances" in doc, "inputs" in doc
  if has_instances and has_inputs:
    raise status.invalid_argument("Not formatted correctly expecting only one of 'inputs' "
                                  "or 'instances' keys to exist")
  if has_instances:
    if not isinstance(doc["instances"], list):
      raise status.invalid_argument("Excepting 'instances' to be an list/array")
    if not doc["instances"]:
      raise status.invalid_argument("No values in 'instances' array")
    return inputs_from_instances(doc["instances"], signature), "row"
  if has_inputs:
    return inputs_from_columns(doc["inputs"], signature), "columnar"
  raise status.invalid_argument("Missing 'inputs' or 'instances' key")


def feature_from_json(name: str, content, feature) -> None:
  """Fills a tf.train.Feature from a JSON value or list (TF Serving's rules)."""
  for v in content if isinstance(content, list) else [content]:
    if isinstance(v, bool):
      kind, value = "int64_list", int(v)
    elif isinstance(v, str):
      kind, value = "bytes_list", v.encode("utf-8")
    elif is_b64(v):
      kind, value = "bytes_list", convert_value(v, tf.string)
    elif isinstance(v, int):
      kind, value = "int64_list", v
    elif isinstance(v, float):
      kind, value = "float_list", v
    else:
      raise status.invalid_argument(
          f"Feature: {name} has element with unexpected JSON type: {json_type(v)}")
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
      raise status.invalid_argument(f"Unexpected element type in feature: {name} "
                                    f"expecting type: {current.split('_')[0]}")
    getattr(feature, kind).value.append(value)


def example_from_json(value, example) -> None:
  if not isinstance(value, dict):
    raise status.invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
  for name, content in value.items():
    feature_from_json(name, content, example.features.feature[name])


def classification_request(doc: dict, spec) -> classification_pb2.ClassificationRequest:
  """A ClassificationRequest from a classify body (`examples`, optional `context`)."""
  req = classification_pb2.ClassificationRequest()
  req.model_spec.CopyFrom(spec)
  if "examples" not in doc:
    raise status.invalid_argument("When method is classify, key 'examples' is expected and "
                                  "was not found")
  if not isinstance(doc["examples"], list):
    raise status.invalid_argument("Expecting 'examples' value to be an list/array")
  if not doc["examples"]:
    raise status.invalid_argument("'examples' value is an empty array")
  if "context" in doc:
    target = req.input.example_list_with_context
    example_from_json(doc["context"], target.context)
  else:
    target = req.input.example_list
  for value in doc["examples"]:
    example_from_json(value, target.examples.add())
  return req


# Arrays -> JSON ------------------------------------------------------------

def to_json_value(name: str, array: np.ndarray):
  """An output array as nested JSON lists; `*_bytes` strings as {"b64": ...}."""
  if array.dtype == object or array.dtype.kind == "S":
    if name.endswith("_bytes"):
      conv = lambda b: {"b64": base64.b64encode(b).decode("ascii")}  # noqa: E731
    else:
      conv = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    flat = [conv(b) for b in array.ravel()]
  elif array.dtype == np.float32:  # Shortest text that reads back as the same float32.
    flat = [float(str(v)) for v in array.ravel()]
  else:
    flat = array.ravel().tolist()
  if array.ndim == 0:
    return flat[0]
  out = flat
  for size in reversed(array.shape[1:]):
    out = [out[i:i + size] for i in range(0, len(out), size)]
  return out


def predict_response(outputs: dict, fmt: str) -> dict:
  values = {k: to_json_value(k, v) for k, v in sorted(outputs.items())}
  if fmt == "columnar":
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
  sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
  if len(sizes) != 1 or None in sizes:
    raise status.invalid_argument("Tensor outputs have inconsistent batch sizes; use the "
                                  "columnar ('inputs') format")
  if len(values) == 1:
    return {"predictions": next(iter(values.values()))}
  return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(sizes.pop())]}


def classify_response(result) -> dict:
  return {"results": [[[c.label, float(str(np.float32(c.score)))] for c in row.classes]
                      for row in result.classifications]}


def proto_json(message) -> dict:
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True)


# The app ---------------------------------------------------------------------

class _NameConvertor(Convertor):
  """A model name or label: no slash, no colon (the colon starts the verb)."""
  regex = "[^/:]+"

  def convert(self, value: str) -> str:
    return value

  def to_string(self, value: str) -> str:
    return value


register_url_convertor("name", _NameConvertor())
VERBS = ("predict", "classify", "regress")
INLINE_BODY_BYTES = 64 << 10  # Larger bodies are parsed on the thread pool, off the event loop.


def parse_json(body: bytes) -> dict:
  """The request body as a JSON object, or TF Serving's parse error."""
  if not body:
    raise status.invalid_argument("JSON Parse error: The document is empty")
  try:
    doc = json.loads(body)
  except (ValueError, UnicodeDecodeError) as e:
    pos = getattr(e, "pos", getattr(e, "start", 0))
    msg = getattr(e, "msg", str(e))
    raise status.invalid_argument(f"JSON Parse error: {msg} at offset: {pos}") from None
  if not isinstance(doc, dict):
    raise status.invalid_argument(f"JSON Value: {body[:200].decode('utf-8', 'replace')} "
                                  "Is not object")
  if "signature_name" in doc and not isinstance(doc["signature_name"], str):
    raise status.invalid_argument("'signature_name' key must be a string value.")
  return doc


def json_response(payload, code: int = 200) -> Response:
  return Response(json.dumps(payload, ensure_ascii=False), code, media_type="application/json")


def spec_of(model, version=None, label=None, signature="") -> model_pb2.ModelSpec:
  spec = model_pb2.ModelSpec(name=model, signature_name=signature)
  if version is not None:
    spec.version.value = version
  if label is not None:
    spec.version_label = label
  return spec


class RestApi:
  """Request handlers; model work runs on a thread pool so the event loop never blocks."""

  def __init__(self, manager, metrics, executor, timeout_ms: int, max_body_bytes: int):
    self.manager, self.metrics, self.executor = manager, metrics, executor
    self.timeout_ms, self.max_body_bytes = timeout_ms, max_body_bytes

  async def _handle(self, model: str, method: str, work) -> Response:
    """Awaits `work` (the payload); ServingErrors become TF Serving's error answer."""
    started = time.perf_counter()
    try:
      response, code = json_response(await work), "OK"
    except status.ServingError as e:
      response, code = json_response({"error": e.message}, e.http_status), e.code.name
    self.metrics.observe_request(model if model in self.manager.models else "<unknown>",
                                 "rest", method, code, time.perf_counter() - started)
    return response

  def _in_pool(self, fn, *args):
    return api.in_pool(self.executor, fn, *args)

  async def _body(self, request) -> bytes:
    """The body, or a 413 once it passes --rest_api_max_body_bytes."""
    limit, chunks, size = self.max_body_bytes, [], 0
    if limit and int(request.headers.get("content-length") or 0) > limit:
      raise HTTPException(413)
    async for chunk in request.stream():
      size += len(chunk)
      if limit and size > limit:
        raise HTTPException(413)
      chunks.append(chunk)
    return b"".join(chunks)

  async def post(self, request) -> Response:
    p = request.path_params
    if p["verb"] not in VERBS:
      return malformed(request)
    body = await self._body(request)
    deadline = time.monotonic() + self.timeout_ms / 1000 if self.timeout_ms > 0 else None
    args = (body, p["model"], p.get("version"), p.get("label"), p["verb"], deadline)
    if p["verb"] == "predict" and len(body) <= INLINE_BODY_BYTES:
      work = self.predict_batched(*args)
    else:
      work = self._in_pool(self.run_post, *args)
    return await self._handle(p["model"], p["verb"], work)

  async def predict_batched(self, body, model, version, label, verb, deadline) -> dict:
    """A small predict parsed on the event loop and handed straight to the batcher.

    No thread waits for the batch: the batch thread resolves a future on the
    loop. Unbatched servables go to the thread pool as before.
    """
    doc = parse_json(body)
    spec = spec_of(model, version, label, doc.get("signature_name", ""))
    servable = self.manager.resolve(*api.spec_parts(spec))
    inputs, fmt = parse_predict_body(doc, servable.signature(spec.signature_name))
    outputs = await api.run_async(servable, spec.signature_name, inputs, deadline, self.executor)
    return predict_response(outputs, fmt)

  def run_post(self, body, model, version, label, verb, deadline) -> dict:
    doc = parse_json(body)
    spec = spec_of(model, version, label, doc.get("signature_name", ""))
    if verb == "classify":
      request = classification_request(doc, spec)
      return classify_response(api.classify(self.manager, request, deadline).result)
    servable = self.manager.resolve(*api.spec_parts(spec))
    signature = servable.signature(spec.signature_name)
    if verb == "regress":
      raise status.invalid_argument(
          "Expected regression signature method_name to be tensorflow/serving/regress. "
          f"Was: {signature.method_name}")
    inputs, fmt = parse_predict_body(doc, signature)
    return predict_response(servable.run(spec.signature_name, inputs, deadline), fmt)

  async def get(self, request) -> Response:
    p = request.path_params
    metadata = request.url.path.endswith("/metadata")
    work = self._in_pool(self.run_get, p["model"], p.get("version"), p.get("label"), metadata)
    return await self._handle(p["model"], "metadata" if metadata else "status", work)

  def run_get(self, model, version, label, metadata) -> dict:
    if not metadata:
      return proto_json(self.manager.model_status(model, version, label))
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[api.SIGNATURE_DEF])
    req.model_spec.CopyFrom(spec_of(model, version, label))
    response = api.metadata(self.manager, req)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[api.SIGNATURE_DEF].Unpack(signature_map)
    return {"model_spec": proto_json(response.model_spec),
            "metadata": {api.SIGNATURE_DEF: proto_json(signature_map)}}


def malformed(request) -> Response:
  return json_response({"error": f"Malformed request: {request.method} {request.url.path}"},
                       400)


def create_app(manager, metrics, executor, timeout_ms: int = 30_000,
               max_body_bytes: int = 0) -> Starlette:
  """The REST app over `manager`; `max_body_bytes` > 0 caps request bodies (413)."""
  rest = RestApi(manager, metrics, executor, timeout_ms, max_body_bytes)
  routes = []
  for prefix in ("/v1/models/{model:name}", "/v1/models/{model:name}/versions/{version:int}",
                 "/v1/models/{model:name}/labels/{label:name}"):
    routes.append(Route(prefix + ":{verb}", rest.post, methods=["POST"]))
    routes.append(Route(prefix, rest.get, methods=["GET"]))
    routes.append(Route(prefix + "/metadata", rest.get, methods=["GET"]))

  async def prometheus(request):
    return Response(metrics.page(), media_type="text/plain; version=0.0.4")

  async def catch_all(request):
    return malformed(request)
  routes.append(Route(METRICS_PATH, prometheus, methods=["GET"]))
  any_method = ["GET", "POST", "PUT", "DELETE", "PATCH"]
  routes.append(Route("/v1", catch_all, methods=any_method))
  routes.append(Route("/v1/{rest:path}", catch_all, methods=any_method))

  async def http_error(request, exc):
    if exc.status_code == 413:
      message = (f"Request body is larger than the limit of {max_body_bytes} bytes "
                 "(--rest_api_max_body_bytes)")
    else:
      message = f"{exc.detail}: {request.method} {request.url.path}"
    return json_response({"error": message}, exc.status_code)

  async def internal(request, exc):
    return json_response({"error": f"Internal error: {exc}"},
                         status.HTTP_STATUS[grpc.StatusCode.INTERNAL])
  return Starlette(routes=routes, exception_handlers={HTTPException: http_error,
                                                      Exception: internal})
