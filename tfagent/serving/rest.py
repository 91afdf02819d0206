"""TF Serving's REST API (g3doc/api_rest.md) as a plain ASGI app, and the HTTP limits uvicorn
lacks.

Paths under /v1/ (any case) are matched with TF Serving's own patterns (model_servers/
http_server.cc, http_rest_api_util.cc); the Prometheus page sits at the monitoring config's
path. Bodies become the request protos a gRPC client sends (json_tensor.py), and from there both
protocols share one path (api.py). Every request gets a whole answer (no exception reaches the
HTTP server, so keep-alive connections survive errors) and is counted in the metrics.
"""

import re
import time
import urllib.parse

from absl import logging
from google.protobuf import json_format
import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, model_pb2,
                                     regression_pb2)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tfagent.serving import api as api_lib, json_tensor, json_text, servable as servable_lib
from tfagent.serving.tensors import ServingError, invalid_argument, task_size_error

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
LINGER_SECONDS = 1.0
_V1 = re.compile(r"(?i)/v1/.*")
_PREDICTION = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r":(classify|regress|predict)")
_STATUS = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|"
                     r"(?:/labels/([^/:]+)))?(?:/(metadata))?")
_JSON = [(b"content-type", b"application/json")]
_CORS = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"POST, GET"),
         (b"access-control-allow-headers", b"Content-Type")]
_CLOSE = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
          b"content-length: %d\r\n\r\n%s")


def parse_path(method: str, path: str) -> tuple | None:
  """(verb, ModelSpec) of a /v1/ path (ParseModelInfo, FillModelSpecWithNameVersionAndLabel),
  None if it names none ("Malformed request")."""
  match = (_PREDICTION if method == "POST" else _STATUS).fullmatch(path)
  if method not in ("POST", "GET") or not match:
    return None
  name, version, label, verb = match.groups()
  if method == "POST" and verb not in ("classify", "regress", "predict"):
    return None  # The path matches in any case, the verb only in lower case (TF Serving's).
  spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name or "", errors="surrogateescape"))
  if version is not None and int(version) >= 2**63:
    raise invalid_argument(f"Failed to convert version: {version} to numeric.")
  if version is not None:
    spec.version.value = int(version)
  if label is not None:
    spec.version_label = urllib.parse.unquote(label, errors="surrogateescape")
  return verb if method == "POST" else "metadata" if verb else "status", spec


def _json(message) -> str:
  """protobuf's JSON printer with whitespace, as TF Serving's ToJsonString."""
  return json_format.MessageToJson(message, indent=1, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True, ensure_ascii=False)


def _with_signature(spec: model_pb2.ModelSpec, doc: dict) -> model_pb2.ModelSpec:
  """The path's ModelSpec with the body's signature_name."""
  named = model_pb2.ModelSpec(signature_name=doc.get("signature_name", ""))
  named.MergeFrom(spec)
  return named


class RestApi:
  """The ASGI app: model work runs on a thread pool or the batcher, never on the event loop."""

  def __init__(self, api: api_lib.Api, metrics, executor, options,
               metrics_path: str | None = DEFAULT_METRICS_PATH):
    """`options`: ServerOptions (--rest_api_timeout_in_ms, --rest_api_max_body_bytes,
    --rest_api_enable_cors_support); `metrics_path` None: no Prometheus page."""
    self.api, self.metrics, self.executor = api, metrics, executor
    self.options, self.metrics_path = options, metrics_path
    self.headers = _JSON + _CORS if options.rest_api_enable_cors_support else _JSON

  async def __call__(self, scope, receive, send) -> None:
    if scope["type"] != "http":
      return
    started, method = time.perf_counter(), scope["method"]
    path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    model, verb, code = "<unknown>", "other", "OK"
    try:
      if self.metrics_path and path == self.metrics_path:
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
      verb, spec = call
      model, body = spec.name, await self._body(scope, receive)
      timeout = self.options.rest_api_timeout_in_ms
      deadline = time.monotonic() + timeout / 1000 if timeout > 0 else None
      payload = await (self.api.predict_async(
          lambda: self._predict_inputs(spec, body), _predict_answer, len(body), deadline,
          self.executor) if verb == "predict" else
          self.executor.call(deadline, self.run_in_pool, verb, spec, body, deadline))
      await _reply(send, 200, payload, self.headers)
    except ServingError as e:
      code = e.code.name
      await _reply(send, e.http_status, json_text.error_response(e.message), self.headers)
    except Exception as e:  # noqa: BLE001  A bug: answered and logged, the connection kept.
      logging.exception("REST %s %s failed", method, path)
      code = grpc.StatusCode.INTERNAL.name
      await _reply(send, 500, json_text.error_response(f"Internal error: {e}"), self.headers)
    finally:
      if verb != "metrics":
        known = model if model in self.api.manager.models else "<unknown>"
        self.metrics.observe_request(known, "rest", verb, code, time.perf_counter() - started)

  async def _preflight(self, scope, send) -> str:
    """A CORS preflight: OK when an http(s) Origin is given, else FAILED_PRECONDITION; no body."""
    ok = re.search(rb"https?://", dict(scope["headers"]).get(b"origin", b"")) is not None
    await _reply(send, 200 if ok else 400, b"", self.headers[len(_JSON):])
    return "OK" if ok else grpc.StatusCode.FAILED_PRECONDITION.name

  async def _body(self, scope, receive) -> bytes:
    """The body; past --rest_api_max_body_bytes a 413 (the rest is discarded by the server)."""
    limit, chunks, size, more = self.options.rest_api_max_body_bytes, [], 0, True
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

  def _predict_inputs(self, spec: model_pb2.ModelSpec, body: bytes) -> tuple:
    """A predict's (servable, signature name, input arrays, format): FillPredictRequestFromJson
    after GetInfoMap, then the checks of a gRPC Predict on that request. With batching, a large
    row body of more instances than a batch holds is refused from a count on its bytes."""
    if len(body) > servable_lib.INLINE_BYTES:
      count = json_tensor.count_flat_instances(body)
      limit = count and self._batch_limit(spec)
      if limit and count > limit:
        raise task_size_error(count, limit)
    doc = json_tensor.parse_body(body)
    spec = _with_signature(spec, doc)
    servable = self.api.resolve(spec)
    signature = self.api.predict_signature(servable, spec.signature_name, rest=True)
    fmt = json_tensor.predict_format(doc, self._batch_limit(spec))
    request = json_tensor.predict_request(doc, fmt, signature, spec)
    del doc  # Its strings are in the request now: a large body is held once less.
    return servable, spec.signature_name, self.api.predict_inputs(request, signature), fmt

  def _batch_limit(self, spec: model_pb2.ModelSpec) -> int:
    """The model's largest batch; 0 if unbatched or not found (the full call says why)."""
    try:
      batching = self.api.resolve(spec).options.batching
    except ServingError:
      return 0
    return batching.max_batch_size if batching else 0

  def run_in_pool(self, verb: str, spec: model_pb2.ModelSpec, body: bytes, deadline) -> bytes:
    """Status, metadata, classify and regress: on a pool thread."""
    if verb in ("status", "metadata") and not spec.name:
      raise invalid_argument("Missing model name in request.")
    if verb == "status":
      version = spec.version.value if spec.HasField("version") else None
      text = _json(self.api.manager.model_status(spec.name, version))
      return text.encode("utf-8", "surrogateescape")
    if verb == "metadata":  # ToJsonString: model_spec and the SignatureDefMap, joined.
      response = self.api.metadata(get_model_metadata_pb2.GetModelMetadataRequest(
          model_spec=spec, metadata_field=[api_lib.SIGNATURE_DEF]))
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      response.metadata[api_lib.SIGNATURE_DEF].Unpack(signature_map)
      return (f'{{\n"model_spec":{_json(response.model_spec)},\n"metadata": {{"signature_def": '
              f'{_json(signature_map)}}}\n}}\n').encode("utf-8", "surrogateescape")
    doc = json_tensor.parse_body(body)  # FillClassifyRegressRequestFromJson.
    kind = (classification_pb2.ClassificationRequest if verb == "classify"
            else regression_pb2.RegressionRequest)
    request = kind(model_spec=_with_signature(spec, doc))
    json_tensor.fill_examples_request(doc, request, self._batch_limit(spec))
    answer = json_text.classify_response if verb == "classify" else json_text.regress_response
    return answer(self.api.classify_or_regress(request, deadline).result)


def _predict_answer(servable, name: str, outputs: dict, fmt: str) -> bytes:
  """MakeJsonFromTensors: the predict's answer in the request's format."""
  del servable, name  # The REST answer names neither.
  return json_text.predict_response(outputs, fmt)


async def _reply(send, code: int, body: bytes, headers: list) -> None:
  await send({"type": "http.response.start", "status": code,
              "headers": [*headers, (b"content-length", str(len(body)).encode())]})
  await send({"type": "http.response.body", "body": body})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
  """uvicorn's httptools protocol (checked against uvicorn 0.54, httptools 0.9) with a timer per
  connection: a request must arrive whole within `read_timeout` of its first byte, a new
  connection send one within as long (else 408 and close); with a cap on the request line and
  headers, counted as bytes arrive (else 431 and close); past uvicorn's connection cap (its own
  503), requests are counted too."""

  max_header_bytes = 64 << 10
  read_timeout = 30.0
  on_reject = None  # on_reject(http_status): counts the rejection (metrics).

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._read_timer = None
    self._header_bytes = 0
    self._in_headers = True  # Bytes arriving now belong to a request line or headers.
    self._tail = b""  # The last bytes seen, for a header end split across reads.
    self._rejected = False

  @classmethod
  def with_limits(cls, max_header_bytes: int, read_timeout: float, on_reject):
    """A subclass carrying the limits (uvicorn instantiates the class it is given)."""
    return type("LimitedHttp", (cls,), {"max_header_bytes": max_header_bytes,
                                        "read_timeout": read_timeout,
                                        "on_reject": staticmethod(on_reject)})

  def connection_made(self, transport) -> None:
    super().connection_made(transport)
    self._start_timer()

  def connection_lost(self, exc) -> None:
    self._stop_timer()
    super().connection_lost(exc)

  def data_received(self, data: bytes) -> None:
    """Counts header bytes before the parser buffers them (one check a read, not a header)."""
    if self._rejected:
      return  # Dropped while the rejected connection lingers.
    if self._in_headers:
      probe = self._tail + data
      end = probe.find(b"\r\n\r\n")
      self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
      self._tail = probe[-3:]
      if self._header_bytes > self.max_header_bytes:
        self._reject(431, b"Request Header Fields Too Large",
                     f"Request line and headers are larger than {self.max_header_bytes} bytes "
                     "(--rest_api_max_header_bytes)")
        return
    super().data_received(data)

  def _start_timer(self) -> None:
    if self._read_timer is None and self.read_timeout > 0:
      self._read_timer = self.loop.call_later(self.read_timeout, self._timed_out)

  def _stop_timer(self) -> None:
    if self._read_timer is not None:
      self._read_timer.cancel()
      self._read_timer = None

  def _timed_out(self) -> None:
    self._read_timer = None
    cycle = self.cycle
    if cycle is not None and cycle.response_started and not cycle.response_complete:
      self.transport.close()  # Mid-answer to an earlier request: just close.
    else:
      self._reject(408, b"Request Timeout", f"No whole request within {self.read_timeout:g} s "
                   "(--rest_api_read_timeout_seconds)")

  def _reject(self, code: int, phrase: bytes, message: str) -> None:
    """Answers `code` and closes after LINGER_SECONDS, dropping what the client still sends
    (closing a socket with unread bytes resets it, and the client would lose the answer)."""
    self._rejected = True
    self._stop_timer()
    if not self.transport.is_closing():
      body = json_text.error_response(message)
      self.transport.write(_CLOSE % (code, phrase, len(body), body))
      self.loop.call_later(LINGER_SECONDS, self.transport.close)
    self.on_reject(code)

  def on_message_begin(self) -> None:  # httptools callbacks from here on.
    self._start_timer()
    super().on_message_begin()

  def on_headers_complete(self) -> None:
    self._in_headers = False
    if self._rejected:
      return
    limit = self.limit_concurrency
    if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
      self.on_reject(503)  # uvicorn answers 503 itself; counted here, as it bypasses the app.
    super().on_headers_complete()

  def on_message_complete(self) -> None:
    self._stop_timer()
    self._in_headers, self._header_bytes, self._tail = True, 0, b""  # The next request's.
    if not self._rejected:
      super().on_message_complete()
