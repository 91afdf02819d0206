"""TF Serving's REST API (g3doc/api_rest.md) as a plain ASGI app.

Paths under /v1/ (any case) are matched with TF Serving's own patterns (model_servers/
http_server.cc, http_rest_api_util.cc); the Prometheus page sits at the monitoring config's
path. Bodies become the request protos a gRPC client sends (json_tensor.py), and from there both
protocols share one path (api.py). Every request gets a whole answer (no exception reaches the
HTTP server, so keep-alive connections survive errors) and is counted in the metrics.
"""

import dataclasses
import re
import time
import urllib.parse

from absl import logging
from google.protobuf import json_format
import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, model_pb2,
                                     regression_pb2)

from tfagent.serving import api as api_lib, json_tensor, json_text, servable as servable_lib
from tfagent.serving.tensors import ServingError, invalid_argument, task_size_error

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


@dataclasses.dataclass(frozen=True)
class RestOptions:
  """What the REST flags set."""
  timeout_ms: int = 30_000  # --rest_api_timeout_in_ms; <= 0: none.
  max_body_bytes: int = 32 << 20  # --rest_api_max_body_bytes (tfagent); 0: no limit.
  cors: bool = False  # --rest_api_enable_cors_support
  metrics_path: str | None = DEFAULT_METRICS_PATH  # None: no Prometheus page.


@dataclasses.dataclass(frozen=True)
class Call:
  """One API request: its verb (predict, classify, regress, status, metadata), the ModelSpec
  its path names (ParseModelInfo, FillModelSpecWithNameVersionAndLabel), body and deadline."""
  verb: str
  spec: model_pb2.ModelSpec
  body: bytes = b""
  deadline: float | None = None

  def with_signature(self, name: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(signature_name=name)
    spec.MergeFrom(self.spec)
    return spec


def parse_path(method: str, path: str) -> Call | None:
  """The call a /v1/ path names, None if it names none ("Malformed request")."""
  match = (_PREDICTION if method == "POST" else _STATUS).fullmatch(path)
  if method not in ("POST", "GET") or not match:
    return None
  name, version, label, verb = match.groups()
  spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name or "", errors="surrogateescape"))
  if version is not None and int(version) > _INT64_MAX:
    raise invalid_argument(f"Failed to convert version: {version} to numeric.")
  if version is not None:
    spec.version.value = int(version)
  if label is not None:
    spec.version_label = urllib.parse.unquote(label, errors="surrogateescape")
  return Call(verb if method == "POST" else "metadata" if verb else "status", spec)


def _json(message) -> str:
  """protobuf's JSON printer with whitespace, as TF Serving's ToJsonString."""
  return json_format.MessageToJson(message, indent=1, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True, ensure_ascii=False)


def metadata_json(response) -> str:
  """ToJsonString(GetModelMetadataResponse): model_spec and the SignatureDefMap, joined."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata[api_lib.SIGNATURE_DEF].Unpack(signature_map)
  return (f'{{\n"model_spec":{_json(response.model_spec)},\n"metadata": {{"signature_def": '
          f'{_json(signature_map)}}}\n}}\n')


class RestApi:
  """The ASGI app: model work runs on a thread pool or the batcher, never on the event loop."""

  def __init__(self, api: api_lib.Api, metrics, executor, options: RestOptions = RestOptions()):
    self.api, self.metrics, self.executor, self.options = api, metrics, executor, options

  async def __call__(self, scope, receive, send) -> None:
    if scope["type"] != "http":
      return
    started, method = time.perf_counter(), scope["method"]
    path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    model, verb, code = "<unknown>", "other", "OK"
    try:
      if self.options.metrics_path and path == self.options.metrics_path:
        verb = "metrics"
        await _reply(send, 200, self.metrics.page(), [(b"content-type", b"text/plain")])
        return
      if not _V1.fullmatch(path):
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
      if method == "OPTIONS":
        verb, code = "options", await self._preflight(scope, send)
        return
      call = parse_path(method, path)
      if call is None:
        raise invalid_argument(f"Malformed request: {method} {path}")
      model, verb = call.spec.name, call.verb
      call = dataclasses.replace(call, body=await self._body(scope, receive),
                                 deadline=self._deadline())
      payload = await (self.api.predict_async(
          lambda: self._predict_inputs(call), _predict_answer, len(call.body), call.deadline,
          self.executor) if verb == "predict" else
          self.executor.call(call.deadline, self.run_in_pool, call))
      await _reply(send, 200, payload, self._headers())
    except ServingError as e:
      code = e.code.name
      await _reply(send, e.http_status, json_text.error_response(e.message), self._headers())
    except Exception as e:  # noqa: BLE001  A bug: answered and logged, the connection kept.
      logging.exception("REST %s %s failed", method, path)
      code = grpc.StatusCode.INTERNAL.name
      await _reply(send, 500, json_text.error_response(f"Internal error: {e}"), self._headers())
    finally:
      if verb != "metrics":
        known = model if model in self.api.manager.models else "<unknown>"
        self.metrics.observe_request(known, "rest", verb, code, time.perf_counter() - started)

  def _headers(self) -> list:
    return _JSON + _CORS if self.options.cors else _JSON

  async def _preflight(self, scope, send) -> str:
    """A CORS preflight: OK when an http(s) Origin is given, else FAILED_PRECONDITION; no body."""
    ok = re.search(rb"https?://", dict(scope["headers"]).get(b"origin", b"")) is not None
    await _reply(send, 200 if ok else 400, b"", _CORS if self.options.cors else [])
    return "OK" if ok else grpc.StatusCode.FAILED_PRECONDITION.name

  def _deadline(self) -> float | None:
    timeout = self.options.timeout_ms
    return time.monotonic() + timeout / 1000 if timeout > 0 else None

  async def _body(self, scope, receive) -> bytes:
    """The body; past --rest_api_max_body_bytes a 413 (the rest is discarded by the server)."""
    limit, chunks, size, more = self.options.max_body_bytes, [], 0, True
    too_large = ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Request body is larger than "
                             f"the limit of {limit} bytes (--rest_api_max_body_bytes)", 413)
    length = dict(scope["headers"]).get(b"content-length", b"0")
    if limit and length.isdigit() and int(length) > limit:
      raise too_large
    while more:
      message = await receive()
      if message["type"] == "http.disconnect":
        raise ServingError(grpc.StatusCode.CANCELLED, "Client disconnected")
      chunk, more = message.get("body", b""), message.get("more_body", False)
      size += len(chunk)
      if limit and size > limit:
        raise too_large
      chunks.append(chunk)
    return b"".join(chunks)

  def _predict_inputs(self, call: Call) -> tuple:
    """A predict's (servable, signature name, input arrays, format): FillPredictRequestFromJson
    after GetInfoMap, then the checks of a gRPC Predict on that request. With batching, a large
    row body of more instances than a batch holds is refused from a count on its bytes."""
    if len(call.body) > servable_lib.INLINE_BYTES:
      count = json_tensor.count_flat_instances(call.body)
      limit = count and self._batch_limit(call)
      if limit and count > limit:
        raise task_size_error(count, limit)
    doc = json_tensor.parse_body(call.body)
    spec = call.with_signature(doc.get("signature_name", ""))
    servable = self.api.resolve(spec)
    signature = self.api.predict_signature(servable, spec.signature_name, rest=True)
    batching = servable.options.batching
    fmt = json_tensor.predict_format(doc, batching.max_batch_size if batching else 0)
    request = json_tensor.predict_request(doc, fmt, signature, spec)
    del doc  # Its strings are in the request now: a large body is held once less.
    return servable, spec.signature_name, self.api.predict_inputs(request, signature), fmt

  def _batch_limit(self, call: Call) -> int:
    """The model's largest batch; 0 if unbatched or not found (the full call says why)."""
    try:
      batching = self.api.resolve(call.spec).options.batching
    except ServingError:
      return 0
    return batching.max_batch_size if batching else 0

  def run_in_pool(self, call: Call) -> bytes:
    """Status, metadata, classify and regress: on a pool thread."""
    if call.verb in ("status", "metadata") and not call.spec.name:
      raise invalid_argument("Missing model name in request.")
    if call.verb == "status":
      version = call.spec.version.value if call.spec.HasField("version") else None
      text = _json(self.api.manager.model_status(call.spec.name, version))
      return text.encode("utf-8", "surrogateescape")
    if call.verb == "metadata":
      request = get_model_metadata_pb2.GetModelMetadataRequest(
          model_spec=call.spec, metadata_field=[api_lib.SIGNATURE_DEF])
      return metadata_json(self.api.metadata(request)).encode("utf-8", "surrogateescape")
    doc = json_tensor.parse_body(call.body)  # FillClassifyRegressRequestFromJson.
    kind = (classification_pb2.ClassificationRequest if call.verb == "classify"
            else regression_pb2.RegressionRequest)
    request = kind(model_spec=call.with_signature(doc.get("signature_name", "")))
    json_tensor.fill_examples_request(doc, request, self._batch_limit(call))
    answer = (json_text.classify_response if call.verb == "classify"
              else json_text.regress_response)
    return answer(self.api.classify_or_regress(request, call.deadline).result)


def _predict_answer(servable, name: str, outputs: dict, fmt: str) -> bytes:
  """MakeJsonFromTensors: the predict's answer in the request's format."""
  del servable, name  # The REST answer names neither.
  return json_text.predict_response(outputs, fmt)


async def _reply(send, code: int, body: bytes, headers: list) -> None:
  await send({"type": "http.response.start", "status": code,
              "headers": [*headers, (b"content-length", str(len(body)).encode())]})
  await send({"type": "http.response.body", "body": body})
