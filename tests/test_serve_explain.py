"""`tfagent serve` answers the export's `explain` signature like any other: REST with
`signature_name`, gRPC Predict with the official tensorflow-serving-api stubs, and the
benchmark's clients measure it (bench/serve_bench.py --signature_name=explain). The export is
a trained one (conftest's tiny LSTM); its answers are the signature's own, run in-process.
"""

import os
import sys
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving_util import run_server
from tfagent import client, signatures

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import serve_bench  # noqa: E402

pytestmark = pytest.mark.slow
TEXTS = ["great movie loved it", "awful boring film, a mess", "难看 垃圾 失望"]
OUTPUTS = set(signatures.EXPLAIN_OUTPUTS)
TOWARD = "negative"  # The class explain_class is asked for.


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
  _, result = trained_run
  explain = signatures.load_signature(result["saved_model"], signatures.EXPLAIN_SIGNATURE)
  expected = {k: v.numpy() for k, v in explain(text=tf.constant(TEXTS)).items()}
  explain_class = signatures.load_signature(result["saved_model"],
                                            signatures.EXPLAIN_CLASS_SIGNATURE)
  toward = {k: v.numpy() for k, v in explain_class(
      text=tf.constant(TEXTS), class_name=tf.constant([TOWARD] * len(TEXTS))).items()}
  args = ["--model_name=why", f"--model_base_path={os.path.dirname(result['saved_model'])}"]
  log = str(tmp_path_factory.mktemp("serve_explain") / "server.log")
  with run_server(args, "why", log) as (url, address, _):
    yield {"url": url, "grpc": address, "expected": expected, "toward": toward}


def check_rows(rows: list, expected: dict) -> None:
  """Row-format answers are the in-process signature's outputs, text by text."""
  assert [set(r) for r in rows] == [OUTPUTS] * len(TEXTS)
  assert any(t for t in expected["tokens"][0])  # Real tokens, not only padding.
  for i, row in enumerate(rows):
    assert row["tokens"] == [t.decode() for t in expected["tokens"][i]]
    assert row["classes"] == expected["classes"][i].decode()
    for key in ("attributions", "probabilities", "completeness_error"):
      np.testing.assert_allclose(row[key], expected[key][i], atol=1e-5)


def test_rest_predict_with_signature_name_explain(served):
  response = requests.post(f"{served['url']}/v1/models/why:predict", timeout=30,
                           json={"signature_name": "explain", "instances": TEXTS})
  assert response.status_code == 200, response.text
  check_rows(response.json()["predictions"], served["expected"])
  rest = client.make_client(served["url"].removeprefix("http://"), "why", "rest")
  check_rows(rest.predict(TEXTS, signature_name="explain"), served["expected"])


def test_grpc_predict_with_the_official_stubs(served):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(served["grpc"]))
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = "why", "explain"
  request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS))
  response = stub.Predict(request, timeout=30)
  assert response.model_spec.signature_name == "explain"
  assert set(response.outputs) == OUTPUTS
  tokens = tf.make_ndarray(response.outputs["tokens"])
  assert tokens.tolist() == served["expected"]["tokens"].tolist()
  np.testing.assert_allclose(tf.make_ndarray(response.outputs["attributions"]),
                             served["expected"]["attributions"], atol=1e-5)
  check_rows(client.make_client(served["grpc"], "why", "grpc").predict(
      TEXTS, signature_name="explain"), served["expected"])


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_bench_clients_call_the_named_signature(served, protocol):
  """serve_bench's load generator, as --signature_name=explain runs it: no errors."""
  server = served["url"].removeprefix("http://") if protocol == "rest" else served["grpc"]
  # A window far longer than 3 requests (the client's warm-up eats into it under load):
  # the count, not the clock, ends the loop.
  latencies, errors, _ = serve_bench.client_worker((server, protocol, "why", "explain", 1), 1,
                                                   time.time(), 120, 3)
  assert errors == 0 and len(latencies) == 3
  with pytest.raises(client.ServerError, match="nope"):  # The name reaches the server.
    serve_bench.client_worker((server, protocol, "why", "nope", 1), 1, time.time(), 0.5, 2)


def explain_class_request(class_names: list) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "why"
  request.model_spec.signature_name = signatures.EXPLAIN_CLASS_SIGNATURE
  request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS))
  request.inputs["class_name"].CopyFrom(tf.make_tensor_proto(class_names))
  return request


def test_explain_class_over_rest_rows_and_columns(served):
  toward = served["toward"]
  assert [c.decode() for c in toward["classes"]] == [TOWARD] * len(TEXTS)
  url = f"{served['url']}/v1/models/why:predict"
  response = requests.post(url, timeout=30, json={
      "signature_name": "explain_class",
      "instances": [{"text": t, "class_name": TOWARD} for t in TEXTS]})
  assert response.status_code == 200, response.text
  check_rows(response.json()["predictions"], toward)
  response = requests.post(url, timeout=30, json={
      "signature_name": "explain_class",
      "inputs": {"text": TEXTS, "class_name": [TOWARD] * len(TEXTS)}})
  assert response.status_code == 200, response.text
  outputs = response.json()["outputs"]
  np.testing.assert_allclose(outputs["attributions"], toward["attributions"], atol=1e-5)


def test_explain_class_over_grpc_with_the_official_stubs(served):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(served["grpc"]))
  response = stub.Predict(explain_class_request([TOWARD] * len(TEXTS)), timeout=30)
  assert set(response.outputs) == OUTPUTS
  assert tf.make_ndarray(response.outputs["classes"]).tolist() == [TOWARD.encode()] * len(TEXTS)
  np.testing.assert_allclose(tf.make_ndarray(response.outputs["attributions"]),
                             served["toward"]["attributions"], atol=1e-5)
  # Toward the other class than explain's for some text: different attributions.
  assert np.abs(served["toward"]["attributions"] - served["expected"]["attributions"]).max() > 1e-3


def test_an_unknown_class_name_is_invalid_argument_naming_the_classes(served):
  response = requests.post(f"{served['url']}/v1/models/why:predict", timeout=30, json={
      "signature_name": "explain_class",
      "instances": [{"text": t, "class_name": "neutral"} for t in TEXTS]})
  assert response.status_code == 400
  assert "expected one of negative, positive" in response.json()["error"]
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(served["grpc"]))
  with pytest.raises(grpc.RpcError) as e:
    stub.Predict(explain_class_request(["negative", "neutral", "positive"]), timeout=30)
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "expected one of negative, positive" in e.value.details()
  assert "neutral" in e.value.details()
  # Text alone is what TF Serving refuses too: every input of the signature is required.
  response = requests.post(f"{served['url']}/v1/models/why:predict", timeout=30, json={
      "signature_name": "explain_class", "instances": TEXTS})
  assert response.status_code == 400 and "list of objects" in response.json()["error"]
