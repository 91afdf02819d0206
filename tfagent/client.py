"""Client for TF Serving's REST or gRPC API: the official server or `tfagent.serve`.

  python -m tfagent.client --server=localhost:8501 "some text" "另一句"
  python -m tfagent.client --server=localhost:8500 --protocol=grpc --method=classify "some text"
"""

import http.client
import json
import sys
import threading

from absl import app, flags, logging

from tfagent import cli
from tfagent.errors import TfagentError

FLAGS = flags.FLAGS
CLASSIFY_SIGNATURE = "classify"


class ServerError(TfagentError):
  """The server answered with an error: `code` is the HTTP status or gRPC code name."""

  def __init__(self, code, message: str):
    super().__init__(f"{code}: {message}")
    self.code, self.message = code, message

  def __reduce__(self):  # Picklable as it is made: it crosses process pools (bench/).
    return type(self), (self.code, self.message)


class RestClient:
  """REST over keep-alive HTTP/1.1 connections, one per calling thread."""

  def __init__(self, server: str, model_name: str, version: int | None = None,
               timeout: float = 30.0):
    self.host, _, port = server.rpartition(":")
    self.port, self.timeout = int(port), timeout
    self.path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    self._local = threading.local()

  def _request(self, method: str, path: str, body=None) -> dict:
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    for attempt in (0, 1):  # A kept-alive connection the server closed: reconnect once.
      conn = getattr(self._local, "conn", None)
      if conn is None:
        conn = self._local.conn = http.client.HTTPConnection(self.host, self.port,
                                                             timeout=self.timeout)
      try:
        conn.request(method, path, data, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        break
      except (http.client.HTTPException, ConnectionError):
        conn.close()
        self._local.conn = None
        if attempt:
          raise
    doc = json.loads(payload) if payload else {}
    if response.status != 200:
      raise ServerError(response.status, doc.get("error", payload.decode("utf-8", "replace")))
    return doc

  def predict(self, texts: list, signature_name: str = "") -> list:
    """One dict of outputs (probabilities, class_ids, classes) per text; of the named
    signature's outputs (e.g. `explain`) with `signature_name`."""
    body = {"instances": list(texts), **({"signature_name": signature_name}
                                          if signature_name else {})}
    return self._request("POST", self.path + ":predict", body)["predictions"]

  def classify(self, texts: list) -> list:
    """[(label, score), ...] per text, from the `classify` signature."""
    doc = self._request("POST", self.path + ":classify", {
        "signature_name": CLASSIFY_SIGNATURE, "examples": [{"text": t} for t in texts]})
    return [[(label, score) for label, score in row] for row in doc["results"]]

  def status(self) -> dict:
    return self._request("GET", self.path)

  def metadata(self) -> dict:
    return self._request("GET", self.path + "/metadata")


class GrpcClient:
  """PredictionService/ModelService through the stubs of `tensorflow-serving-api`."""

  def __init__(self, server: str, model_name: str, version: int | None = None,
               timeout: float = 30.0):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
    self._grpc = grpc
    self.channel = grpc.insecure_channel(server)
    self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
    self.model_name, self.version, self.timeout = model_name, version, timeout

  def _spec(self, spec, signature_name: str = "") -> None:
    spec.name, spec.signature_name = self.model_name, signature_name
    if self.version:
      spec.version.value = self.version

  def _call(self, method, request):
    try:
      return method(request, timeout=self.timeout)
    except self._grpc.RpcError as e:
      raise ServerError(e.code().name, e.details()) from None

  def predict(self, texts: list, signature_name: str = "") -> list:
    """As RestClient.predict, through PredictionService/Predict."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    self._spec(request.model_spec, signature_name)
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(texts), tf.string))
    outputs = {k: tf.make_ndarray(v) for k, v in
               self._call(self.prediction.Predict, request).outputs.items()}
    return [{k: _plain(v[i]) for k, v in sorted(outputs.items())} for i in range(len(texts))]

  def classify(self, texts: list) -> list:
    from tensorflow_serving.apis import classification_pb2
    request = classification_pb2.ClassificationRequest()
    self._spec(request.model_spec, CLASSIFY_SIGNATURE)
    for text in texts:
      example = request.input.example_list.examples.add()
      example.features.feature["text"].bytes_list.value.append(text.encode("utf-8"))
    result = self._call(self.prediction.Classify, request).result
    return [[(c.label, c.score) for c in row.classes] for row in result.classifications]

  def status(self):
    from tensorflow_serving.apis import get_model_status_pb2
    request = get_model_status_pb2.GetModelStatusRequest()
    self._spec(request.model_spec)
    return self._call(self.models.GetModelStatus, request)

  def metadata(self):
    from tensorflow_serving.apis import get_model_metadata_pb2
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._spec(request.model_spec)
    return self._call(self.prediction.GetModelMetadata, request)


def _plain(value):
  """A numpy value as JSON's: bytes decoded, arrays as lists."""
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  if hasattr(value, "tolist"):
    out = value.tolist()
    if isinstance(out, list):  # A row of strings (explain's tokens) decoded like one.
      return [_plain(v) for v in out]
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else out
  return value


def make_client(server: str, model_name: str, protocol: str = "rest", **kwargs):
  """A RestClient or GrpcClient for `host:port`."""
  if protocol not in ("rest", "grpc"):
    raise ValueError(f"protocol={protocol!r}; expected 'rest' or 'grpc'.")
  return (RestClient if protocol == "rest" else GrpcClient)(server, model_name, **kwargs)


def define_flags(flag_values=FLAGS) -> None:
  """Defines this entry point's flags; called only when run as a program."""
  own = {"module_name": __name__, "flag_values": flag_values}
  flags.DEFINE_string("server", "localhost:8501",
                      "host:port of the REST (8501) or gRPC (8500) API.", **own)
  flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "API the server port speaks.", **own)
  flags.DEFINE_string("model_name", "quickstart", "Served model name.", **own)
  flags.DEFINE_integer("model_version", 0, "A specific version; 0 is the latest.", **own)
  flags.DEFINE_enum("method", "predict", ["predict", "classify"], "API method to call.", **own)
  flags.DEFINE_float("timeout", 30.0, "Seconds to wait for an answer.", **own)


def main(argv):
  texts = argv[1:] or [line.rstrip("\n") for line in sys.stdin if line.strip()]
  client = make_client(FLAGS.server, FLAGS.model_name, FLAGS.protocol,
                       version=FLAGS.model_version or None, timeout=FLAGS.timeout)
  try:
    rows = getattr(client, FLAGS.method)(texts)
  except (TfagentError, OSError) as e:
    logging.error("%s: %s", FLAGS.server, e)
    sys.exit(1)
  for text, row in zip(texts, rows):
    sys.stdout.write(json.dumps({"text": text, FLAGS.method: row}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(__doc__, [__name__]))
