"""Client for TF Serving's REST or gRPC API: the official server or `tfagent.serve`.

  python -m tfagent.client --server=localhost:8501 "some text" "另一句"
  python -m tfagent.client --server=localhost:8500 --protocol=grpc --method=classify "some text"
  python -m tfagent.client --model_name=pairs --input=pairs.csv --text_field=premise \
      --text_pair_field=hypothesis

Texts come from the arguments, else --input (csv/tsv/jsonl, the text in --text_field), else
one a line of standard input. A sentence-pair export (trained with --text_pair_field) takes
`text` and `text_pair`: give --input with --text_pair_field, as `tfagent predict` reads them.
Texts go in requests of at most --batch_size, and each request's answers are written as it
returns. Each answer is one JSON line: the text (and text_pair) and the method's output; a
multilabel export's `labels` are printed without the "" that pad them to C.
"""

import http.client
import json
import sys
import threading

from absl import app, flags, logging

from tfagent import cli, signatures
from tfagent.errors import DataError, TfagentError

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
    signature's outputs (e.g. `explain`) with `signature_name`. A sentence pair's texts
    are `(text, text_pair)` tuples."""
    body = {"instances": [named(t) if isinstance(t, tuple) else t for t in texts],
            **({"signature_name": signature_name} if signature_name else {})}
    return self._request("POST", self.path + ":predict", body)["predictions"]

  def classify(self, texts: list) -> list:
    """[(label, score), ...] per text, from the `classify` signature."""
    doc = self._request("POST", self.path + ":classify", {
        "signature_name": CLASSIFY_SIGNATURE, "examples": [named(t) for t in texts]})
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
    for name, column in signatures.text_columns(list(texts)).items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(column, tf.string))
    outputs = {k: tf.make_ndarray(v) for k, v in
               self._call(self.prediction.Predict, request).outputs.items()}
    return [{k: _plain(v[i]) for k, v in sorted(outputs.items())} for i in range(len(texts))]

  def classify(self, texts: list) -> list:
    from tensorflow_serving.apis import classification_pb2
    request = classification_pb2.ClassificationRequest()
    self._spec(request.model_spec, CLASSIFY_SIGNATURE)
    for text in texts:
      example = request.input.example_list.examples.add()
      for name, value in named(text).items():
        example.features.feature[name].bytes_list.value.append(value.encode("utf-8"))
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


def named(text) -> dict:
  """A text, or a sentence pair's `(text, text_pair)`, as its inputs by name."""
  return dict(zip((signatures.TEXT, signatures.TEXT_PAIR),
                  text if isinstance(text, tuple) else (text,)))


def shown(row):
  """An answer row as printed: a multilabel row's `labels` without their "" padding."""
  if isinstance(row, dict) and "label_mask" in row and "labels" in row:
    return {**row, "labels": [label for label in row["labels"] if label]}
  return row


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
  flags.DEFINE_string("input", "", "csv, tsv or jsonl file (.gz too) of texts, as tfagent "
                      "predict reads it; empty: the arguments or standard input.", **own)
  flags.DEFINE_string("text_field", "text", "Column (csv/tsv) or key (jsonl) of the text in "
                      "--input.", **own)
  flags.DEFINE_string("text_pair_field", "", "Sentence-pair exports: column or key of each "
                      "row's second text in --input, sent as text_pair; empty: one text a "
                      "row.", **own)
  flags.DEFINE_integer("batch_size", 32, "Texts a request: more are sent in requests of this "
                       "many, one after the other (32 is the max_batch_size of an export's "
                       "batching_parameters.txt; a server with batching refuses a larger "
                       "request).", lower_bound=1, **own)


def read_texts(argv: list) -> list:
  """The texts to send: strings, or with --text_pair_field `(text, text_pair)` tuples."""
  if not (FLAGS.input or FLAGS.text_pair_field):  # Keeps the plain client free of TensorFlow.
    texts = argv[1:] or [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
  else:
    from tfagent import predict  # pylint: disable=import-outside-toplevel
    texts = list(predict.input_texts(argv[1:], FLAGS.input, FLAGS.text_field, sys.stdin,
                                     FLAGS.text_pair_field))
  return utf8_checked(texts)


def utf8_checked(texts: list) -> list:
  """`texts`, each of which must be UTF-8 text (an argument or line of other bytes reaches
  Python as surrogates): else one error naming the text."""
  for n, text in enumerate(texts, 1):
    for part in (text if isinstance(text, tuple) else (text,)):
      try:
        part.encode("utf-8")
      except UnicodeEncodeError as e:
        raise DataError(f"text {n} ({part[:40]!r}) holds bytes that are not UTF-8 (at "
                        f"character {e.start}); tfagent client sends UTF-8 text: re-encode "
                        "it (e.g. iconv -f latin1 -t utf-8).") from None
  return texts


def main(argv):
  client = make_client(FLAGS.server, FLAGS.model_name, FLAGS.protocol,
                       version=FLAGS.model_version or None, timeout=FLAGS.timeout)
  try:
    texts = read_texts(argv)
    if not texts:
      raise DataError("no texts to send: give them as arguments, in --input, or one a line on "
                      "standard input.")
  except TfagentError as e:  # Names the file, line or flag itself.
    logging.error("%s", e)
    sys.exit(1)
  for start in range(0, len(texts), FLAGS.batch_size):
    batch = texts[start:start + FLAGS.batch_size]
    try:
      rows = getattr(client, FLAGS.method)(batch)
    except (TfagentError, OSError) as e:
      done = f" (the answers to texts 1-{start} are written above)" if start else ""
      logging.error("%s: texts %d-%d: %s%s", FLAGS.server, start + 1, start + len(batch), e,
                    done)
      sys.exit(1)
    for text, row in zip(batch, rows):
      sys.stdout.write(json.dumps({**named(text), FLAGS.method: shown(row)},
                                  ensure_ascii=False) + "\n")
    sys.stdout.flush()  # Each request's answers as they come.


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags(__doc__, [__name__]))
