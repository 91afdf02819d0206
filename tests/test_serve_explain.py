"""`tfagent serve` answers the export's `explain` signature like any other: REST with
`signature_name`, gRPC Predict with the official tensorflow-serving-api stubs, and the
benchmark's clients measure it (bench/serve_bench.py --signature_name=explain).

A synthetic export of the contract (serving_util.write_explain_model) until the real
signature lands.
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

from serving_util import expected_attributions, expected_probabilities, run_server
from serving_util import write_explain_model
from tfagent import client

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import serve_bench  # noqa: E402

pytestmark = pytest.mark.slow
TEXTS = ["good", "bad acting, badly told", "差 评"]
OUTPUTS = {"tokens", "attributions", "probabilities", "classes", "completeness_error"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve_explain")
  write_explain_model(str(root / "why" / "1"))
  args = [f"--model_name=why", f"--model_base_path={root / 'why'}"]
  with run_server(args, "why", str(root / "server.log")) as (url, address, _):
    yield {"url": url, "grpc": address}


def check_rows(rows: list) -> None:
  """Rows of the explain signature's outputs (tokens padded to the longest text) are right."""
  assert [set(r) for r in rows] == [OUTPUTS] * len(TEXTS)
  width = max(len(t.split()) for t in TEXTS)
  for row, text, probs in zip(rows, TEXTS, expected_probabilities(TEXTS)):
    tokens = text.split()
    assert row["tokens"] == tokens + [""] * (width - len(tokens))
    np.testing.assert_allclose(row["attributions"][:len(tokens)],
                               [expected_attributions(t) for t in tokens], atol=1e-6)
    np.testing.assert_allclose(row["probabilities"], probs, atol=1e-6)
    assert row["classes"] == ["negative", "positive"][int(probs.argmax())]
    assert row["completeness_error"] == pytest.approx(0.01)


def test_rest_predict_with_signature_name_explain(served):
  response = requests.post(f"{served['url']}/v1/models/why:predict", timeout=30,
                           json={"signature_name": "explain", "instances": TEXTS})
  assert response.status_code == 200, response.text
  check_rows(response.json()["predictions"])
  rest = client.make_client(served["url"].removeprefix("http://"), "why", "rest")
  check_rows(rest.predict(TEXTS, signature_name="explain"))


def test_grpc_predict_with_the_official_stubs(served):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(served["grpc"]))
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = "why", "explain"
  request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS))
  response = stub.Predict(request, timeout=30)
  assert response.model_spec.signature_name == "explain"
  assert set(response.outputs) == OUTPUTS
  tokens = tf.make_ndarray(response.outputs["tokens"])
  assert tokens.shape == (3, 4) and tokens[0].tolist() == [b"good", b"", b"", b""]
  check_rows(client.make_client(served["grpc"], "why", "grpc").predict(
      TEXTS, signature_name="explain"))


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_bench_clients_call_the_named_signature(served, protocol):
  """serve_bench's load generator, as --signature_name=explain runs it: no errors."""
  server = served["url"].removeprefix("http://") if protocol == "rest" else served["grpc"]
  latencies, errors, _ = serve_bench.client_worker((server, protocol, "why", "explain"), 1,
                                                   time.time(), 0.5, 5)
  assert errors == 0 and 1 <= len(latencies) <= 5
  with pytest.raises(client.ServerError, match="nope"):  # The name reaches the server.
    serve_bench.client_worker((server, protocol, "why", "nope"), 1, time.time(), 0.5, 2)
