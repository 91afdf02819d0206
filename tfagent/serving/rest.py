"""TF Serving's REST API (g3doc/api_rest.md) as a plain ASGI app.

Routing follows model_servers/http_server.cc and http_rest_api_util.cc: paths
under /v1/ (any case) go to the API, matched with TF Serving's own patterns;
the Prometheus page sits at the monitoring config's path. Every request gets a
complete answer (no exception reaches the HTTP server, so keep-alive
connections survive errors) and is counted in the metrics.
"""

import dataclasses
import json
import re
import time
import urllib.parse

from absl import logging
from google.protobuf import json_format
import grpc
import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2, regression_pb2)

from tfagent.serving import api as api_lib, json_tensor, json_text, pool, status

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
_V1 = re.compile(r"(?i)/v1/.*")
_PREDICTION = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r":(classify|regress|predict)")
_STATUS = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|"
                     r"(?:/labels/([^/:]+)))?(?:/(metadata))?")
_JSON = [(b"content-type", b"application/json")]
_CORS = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"POST, GET"),
         (b"access-control-allow-headers", b"Content-Type")]
_INT64_MAX = 2**63 - 1
# A row body whose `instances` come first (after a plain signature_name, if any).
_ROW_PREFIX = re.compile(rb'\s*\{\s*(?:"signature_name"\s*:\s*"[^"\\]*"\s*,\s*)?'
                         rb'"instances"\s*:\s*\[')


@dataclasses.dataclass(frozen=True)
class RestOptions:
  """What the REST flags set."""
  timeout_ms: int = 30_000  # --rest_api_timeout_in_ms; <= 0: none.
  max_body_bytes: int = 32 << 20  # --rest_api_max_body_bytes (tfagent); 0: no limit.
  cors: bool = False  # --rest_api_enable_cors_support
  metrics_path: str | None = DEFAULT_METRICS_PATH  # None: no Prometheus page.


@dataclasses.dataclass(frozen=True)
class Call:
  """One API request, parsed from its path (ParseModelInfo)."""
  model: str
  version: int | None
  label: str | None
  verb: str  # predict | classify | regress | status | metadata
  body: bytes = b""
  deadline: float | None = None

  def spec(self, signature: str = "") -> model_pb2.ModelSpec:
    """FillModelSpecWithNameVersionAndLabel."""
    spec = model_pb2.ModelSpec(name=self.model, signature_name=signature)
    if self.version is not None:
      spec.version.value = self.version
    if self.label is not None:
      spec.version_label = self.label
    return spec


def parse_path(method: str, path: str) -> Call | None:
  """The call a /v1/ path names, None if it names none ("Malformed request")."""
  if method == "POST":
    match = _PREDICTION.fullmatch(path)
    verb = match and match.group(4)
    if verb not in ("classify", "regress", "predict"):
      return None
  elif method == "GET":
    match = _STATUS.fullmatch(path)
    verb = match and ("metadata" if match.group(4) == "metadata" else "status")
  else:
    return None
  if not match:
    return None
  name, version, label = match.group(1), match.group(2), match.group(3)
  if version is not None:
    version = int(version)
    if version > _INT64_MAX:
      raise status.invalid_argument(f"Failed to convert version: {match.group(2)} to numeric.")
  unquote = lambda s: s and urllib.parse.unquote(s, errors="surrogateescape")  # noqa: E731
  return Call(unquote(name) or "", version, unquote(label), verb)


def proto_json(message) -> dict:
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True)


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> str:
  """The status as protobuf's JSON printer writes it with whitespace (ToJsonString)."""
  return json.dumps(proto_json(response), indent=1, ensure_ascii=False)


def metadata_json(response) -> str:
  """ToJsonString(GetModelMetadataResponse): model_spec and the SignatureDefMap, joined."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata[api_lib.SIGNATURE_DEF].Unpack(signature_map)
  spec = json.dumps(proto_json(response.model_spec), indent=1, ensure_ascii=False)
  signatures = json.dumps(proto_json(signature_map), indent=1, ensure_ascii=False)
  return f'{{\n"model_spec":{spec},\n"metadata": {{"signature_def": {signatures}}}\n}}\n'


class RestApi:
  """The ASGI app: model work runs on a thread pool or the batcher, never on the event loop."""

  def __init__(self, api: api_lib.Api, metrics, executor, options: RestOptions = RestOptions()):
    self.api, self.metrics, self.executor, self.options = api, metrics, executor, options
    self.manager = api.manager

  async def __call__(self, scope, receive, send) -> None:
    if scope["type"] != "http":
      return
    started = time.perf_counter()
    method = scope["method"]
    path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    model, verb = "<unknown>", "other"
    try:
      if self.options.metrics_path and path == self.options.metrics_path:
        verb, code = "metrics", 200
        await _reply(send, 200, self.metrics.page(), [(b"content-type", b"text/plain")])
        return
      if not _V1.fullmatch(path):
        raise status.ServingError(grpc.StatusCode.NOT_FOUND,
                                  f"Not found: {method} {path}", http_status=404)
      if method == "OPTIONS":
        verb, code = "options", await self._preflight(scope, send)
        return
      call = parse_path(method, path)
      if call is None:
        raise status.invalid_argument(f"Malformed request: {method} {path}")
      model, verb = call.model, call.verb
      body = await self._body(scope, receive)
      payload = await self._dispatch(dataclasses.replace(call, body=body, deadline=self._deadline()))
      code = "OK"
      await _reply(send, 200, payload.encode("utf-8", "surrogateescape"), self._headers())
    except status.ServingError as e:
      code = e.code.name
      await self._error(send, e)
    except Exception as e:  # noqa: BLE001  A bug: answered and logged, the connection kept.
      logging.exception("REST %s %s failed", method, path)
      code = grpc.StatusCode.INTERNAL.name
      await self._error(send, status.ServingError(grpc.StatusCode.INTERNAL, f"Internal error: {e}"))
    finally:
      if verb != "metrics":
        known = model if model in self.manager.models else "<unknown>"
        self.metrics.observe_request(known, "rest", verb, str(code),
                                     time.perf_counter() - started)

  def _headers(self) -> list:
    return _JSON + _CORS if self.options.cors else _JSON

  async def _error(self, send, error: status.ServingError) -> None:
    body = json_text.error_response(error.message).encode("utf-8", "surrogateescape")
    await _reply(send, error.http_status, body, self._headers())

  async def _preflight(self, scope, send) -> str:
    """A CORS preflight: OK when an http(s) Origin is given, else FAILED_PRECONDITION; no body."""
    origin = dict(scope["headers"]).get(b"origin", b"")
    ok = re.search(rb"https?://", origin) is not None
    await _reply(send, 200 if ok else 400, b"", _CORS if self.options.cors else [])
    return "OK" if ok else grpc.StatusCode.FAILED_PRECONDITION.name

  def _deadline(self) -> float | None:
    return time.monotonic() + self.options.timeout_ms / 1000 if self.options.timeout_ms > 0 \
        else None

  async def _body(self, scope, receive) -> bytes:
    """The body; past --rest_api_max_body_bytes a 413 (the rest is discarded by the server)."""
    limit, chunks, size = self.options.max_body_bytes, [], 0
    length = dict(scope["headers"]).get(b"content-length", b"0")
    if limit and length.isdigit() and int(length) > limit:
      raise _too_large(limit)
    more = True
    while more:
      message = await receive()
      if message["type"] == "http.disconnect":
        raise status.ServingError(grpc.StatusCode.CANCELLED, "Client disconnected")
      chunk, more = message.get("body", b""), message.get("more_body", False)
      size += len(chunk)
      if limit and size > limit:
        raise _too_large(limit)
      chunks.append(chunk)
    return b"".join(chunks)

  async def _dispatch(self, call: Call) -> str:
    if call.verb == "predict":
      return await self.api.predict_async(
          lambda: self._predict_inputs(call), _predict_answer, len(call.body), call.deadline,
          self.executor)
    return await self.executor.call(call.deadline, self.run_in_pool, call)

  def _predict_inputs(self, call: Call) -> tuple:
    """FillPredictRequestFromJson, then the checks Predict makes: (servable, name, inputs, fmt)."""
    if len(call.body) > pool.INLINE_BYTES:
      self._refuse_oversize_batch(call)
    doc = json_tensor.parse_body(call.body)
    name = doc.get("signature_name", "")
    servable = self.api.resolve(call.spec(name))
    signature = self.api.predict_signature(servable, name, rest=True)
    batching = servable.options.batching
    fmt = json_tensor.check_predict_body(doc, batching.max_batch_size if batching else 0)
    inputs = json_tensor.predict_inputs(doc, fmt, signature, name)
    api_lib.check_strings(inputs, self.api.options.max_string_bytes)
    return servable, name, inputs, fmt

  def _refuse_oversize_batch(self, call: Call) -> None:
    """With batching, a large body of more instances than a batch holds fails unparsed."""
    count = count_flat_instances(call.body)
    limit = count and self._batch_limit(call)
    if limit and count > limit:
      raise status.task_size_error(count, limit)

  def _batch_limit(self, call: Call) -> int:
    """The model's largest batch; 0 if unbatched or not found (the full call says why)."""
    try:
      batching = self.api.resolve(call.spec()).options.batching
    except status.ServingError:
      return 0
    return batching.max_batch_size if batching else 0

  def run_in_pool(self, call: Call) -> str:
    """Status, metadata, classify and regress: on a pool thread."""
    if call.verb in ("status", "metadata") and not call.model:
      raise status.invalid_argument("Missing model name in request.")
    if call.verb == "status":
      return status_json(self.manager.model_status(call.model, call.version))
    if call.verb == "metadata":
      request = get_model_metadata_pb2.GetModelMetadataRequest(
          metadata_field=[api_lib.SIGNATURE_DEF])
      request.model_spec.CopyFrom(call.spec())
      return metadata_json(self.api.metadata(request))
    return self._examples(call)

  def _examples(self, call: Call) -> str:
    """:classify and :regress (FillClassifyRegressRequestFromJson, then the service)."""
    doc = json_tensor.parse_body(call.body)
    request = (classification_pb2.ClassificationRequest() if call.verb == "classify"
               else regression_pb2.RegressionRequest())
    request.model_spec.CopyFrom(call.spec(doc.get("signature_name", "")))
    json_tensor.fill_examples_request(doc, request, self._batch_limit(call))
    answer = (json_text.classify_response if call.verb == "classify"
              else json_text.regress_response)
    return answer(self.api.classify_or_regress(request, call.deadline).result)


def _predict_answer(servable, name: str, outputs: dict, fmt: str) -> str:
  """MakeJsonFromTensors: the predict's answer in the request's format."""
  del servable, name  # The REST answer names neither.
  return json_text.predict_response(outputs, fmt)


def _too_large(limit: int) -> status.ServingError:
  return status.ServingError(
      grpc.StatusCode.RESOURCE_EXHAUSTED,
      f"Request body is larger than the limit of {limit} bytes (--rest_api_max_body_bytes)",
      http_status=413)


async def _reply(send, code: int, body: bytes, headers: list) -> None:
  await send({"type": "http.response.start", "status": code,
              "headers": [*headers, (b"content-length", str(len(body)).encode())]})
  await send({"type": "http.response.body", "body": body})


def count_flat_instances(body: bytes) -> int | None:
  """The number of instances of a row body whose list holds only strings and numbers,
  counted without building the document (None for any other body).

  Parsing 30 MB of short strings takes half a gigabyte of Python objects; with
  batching, a list longer than a batch is refused from this count instead. The
  count runs on the bytes as arrays (a few times the body's size, briefly).
  """
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
