"""tfagent.serve end to end: a real server subprocess on loopback ports, called with
plain HTTP (requests) and with the official gRPC stubs of tensorflow-serving-api;
and the in-process Servable's unbatched call path."""

import base64
import concurrent.futures
import json
import os
import re
import shutil
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving_util import run_server
from tfagent import client
from tfagent.errors import ConfigError
from tfagent.serving import options as serve_options, servable, tensors

pytestmark = pytest.mark.slow
TEXTS = ["great movie loved it", "难看 垃圾 失望", "", "an unseen sentence 未见过"]
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
  """Versions 1 and 2 of the tiny export, both served, labels stable=1 and canary=2."""
  _, result = trained_run
  root = tmp_path_factory.mktemp("serve")
  base = root / "tiny"
  for version in ("1", "2"):
    shutil.copytree(result["saved_model"], base / version)
  (root / "models.config").write_text(f"""model_config_list {{
  config {{
    name: "tiny" base_path: "{base}" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}""")
  (root / "batching.txt").write_text("max_batch_size { value: 8 }\n"
                                     "batch_timeout_micros { value: 20000 }\n")
  args = [f"--model_config_file={root / 'models.config'}", "--enable_batching",
          "--allow_version_labels_for_unavailable_models",  # Labels of versions loading now.
          f"--batching_parameters_file={root / 'batching.txt'}",
          f"--rest_api_max_body_bytes={MAX_BODY}", "--tensorflow_inter_op_parallelism=3"]
  with run_server(args, "tiny", str(root / "server.log")) as (url, address, pid):
    yield {"url": url, "grpc": address, "path": result["saved_model"], "pid": pid}


@pytest.fixture(scope="module")
def expected(served):
  """What the SavedModel gives in-process for TEXTS."""
  out = tf.saved_model.load(served["path"]).signatures["serving_default"](
      text=tf.constant(TEXTS))
  return {"probabilities": out["probabilities"].numpy(),
          "classes": [c.decode() for c in out["classes"].numpy()]}


def post(served, path, body):
  data = body if isinstance(body, (bytes, str)) else json.dumps(body)
  return requests.post(served["url"] + path, data=data, timeout=30)


def test_rest_predict_row_and_columnar(served, expected):
  rows = post(served, "/v1/models/tiny:predict", {"instances": TEXTS})
  assert rows.status_code == 200 and rows.headers["Content-Type"] == "application/json"
  predictions = rows.json()["predictions"]
  assert [set(p) for p in predictions] == [{"probabilities", "class_ids", "classes"}] * 4
  np.testing.assert_allclose([p["probabilities"] for p in predictions],
                             expected["probabilities"], atol=1e-6)
  assert [p["classes"] for p in predictions] == expected["classes"]
  cols = post(served, "/v1/models/tiny:predict", {"inputs": {"text": TEXTS}}).json()["outputs"]
  np.testing.assert_allclose(cols["probabilities"], expected["probabilities"], atol=1e-6)
  assert cols["classes"] == expected["classes"]
  assert cols["class_ids"] == [["negative", "positive"].index(c) for c in expected["classes"]]
  b64 = {"instances": [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS],
         "signature_name": "serving_default"}
  assert post(served, "/v1/models/tiny:predict", b64).json()["predictions"] == predictions


def test_rest_classify_with_examples_and_context(served, expected):
  body = {"signature_name": "classify", "examples": [{"text": t} for t in TEXTS]}
  results = post(served, "/v1/models/tiny:classify", body).json()["results"]
  assert [[label for label, _ in r] for r in results] == [["negative", "positive"]] * 4
  np.testing.assert_allclose([[s for _, s in r] for r in results], expected["probabilities"],
                             atol=1e-6)
  # Context features are shared by every example; here the text itself.
  ctx = {"signature_name": "classify", "context": {"text": TEXTS[0]}, "examples": [{}, {}]}
  results = post(served, "/v1/models/tiny:classify", ctx).json()["results"]
  np.testing.assert_allclose([[s for _, s in r] for r in results],
                             [expected["probabilities"][0]] * 2, atol=1e-6)


def test_rest_status_versions_labels_and_metadata(served):
  get = lambda p: requests.get(served["url"] + p, timeout=10)  # noqa: E731
  assert get("/v1/models/tiny").json() == {"model_version_status": [
      {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
      for v in ("2", "1")]}
  assert get("/v1/models/tiny/versions/1").json()["model_version_status"][0]["version"] == "1"
  assert get("/v1/models/tiny/labels/canary").json()["model_version_status"][0]["version"] == "2"
  meta = get("/v1/models/tiny/labels/stable/metadata").json()
  assert meta["model_spec"] == {"name": "tiny", "version": "1", "signature_name": ""}
  sigs = meta["metadata"]["signature_def"]["signature_def"]
  assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
  assert sigs["classify"]["method_name"] == "tensorflow/serving/classify"
  assert sigs["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
  for path in ("/v1/models/tiny/versions/1:predict", "/v1/models/tiny/labels/canary:predict"):
    assert post(served, path, {"instances": ["great"]}).status_code == 200


# (Parse errors, an unknown signature, a wrong dtype and an example without its feature are
# test_serve_conformance's and test_serve_hostile's cases, message for message.)
BAD_REQUESTS = [
    ("empty body", "/v1/models/tiny:predict", b"", 400, "The document is empty"),
    ("unknown model", "/v1/models/nope:predict", {"instances": ["a"]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "/v1/models/tiny/versions/9:predict", {"instances": ["a"]}, 404,
     "Servable not found for request: Specific(tiny, 9)"),
    ("unknown label", "/v1/models/tiny/labels/beta:predict", {"instances": ["a"]}, 400,
     "Unrecognized servable version label: beta"),
    ("missing input", "/v1/models/tiny:predict", {"inputs": {"txt": ["a"]}}, 400,
     "Missing named input: text in 'inputs' object."),
    ("no instances or inputs", "/v1/models/tiny:predict", {"signature_name": ""}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("empty batch", "/v1/models/tiny:predict", {"instances": []}, 400,
     "No values in 'instances' array"),
    ("wrong rank", "/v1/models/tiny:predict", {"instances": [["a", "b"]]}, 400, "shape [1, 2]"),
    ("classify on a predict signature", "/v1/models/tiny:classify", {"examples": [{"text": "a"}]},
     400, "Expected one or two output Tensors, found 3"),  # classifier.cc PreProcessClassification
    ("classify without examples", "/v1/models/tiny:classify", {"signature_name": "classify"}, 400,
     "key 'examples' is expected"),
    ("over the size limit", "/v1/models/tiny:predict", {"instances": ["x" * MAX_BODY]}, 413,
     f"larger than the limit of {MAX_BODY} bytes"),
    ("malformed path", "/v1/modelz/tiny:predict", {"instances": ["a"]}, 400,
     "Malformed request: POST /v1/modelz/tiny:predict"),
    # The path matches in any case, the verb only in lower case (it ran as regress).
    ("verb in upper case", "/V1/Models/tiny:PREDICT", {"instances": ["a"]}, 400,
     "Malformed request: POST /V1/Models/tiny:PREDICT"),
    ("verb capitalised", "/v1/models/tiny:Classify", {"examples": [{"text": "a"}]}, 400,
     "Malformed request: POST /v1/models/tiny:Classify"),
]


@pytest.mark.parametrize("name,path,body,code,message", BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_tf_serving_error_and_server_goes_on(served, name, path, body, code,
                                                               message):
  response = post(served, path, body)
  assert response.status_code == code, response.text
  assert response.headers["Content-Type"] == "application/json"
  assert list(response.json()) == ["error"] and message in response.json()["error"]
  assert post(served, "/v1/models/tiny:predict", {"instances": ["fine"]}).status_code == 200


def test_grpc_with_the_official_stubs(served, expected):
  channel = grpc.insecure_channel(served["grpc"])
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "tiny"
  request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS))
  response = stub.Predict(request, timeout=30)
  assert (response.model_spec.name, response.model_spec.version.value,
          response.model_spec.signature_name) == ("tiny", 2, "serving_default")
  np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                             expected["probabilities"], atol=1e-6)
  classify = classification_pb2.ClassificationRequest()
  classify.model_spec.name, classify.model_spec.signature_name = "tiny", "classify"
  classify.model_spec.version_label = "stable"
  for text in TEXTS:
    classify.input.example_list.examples.add().features.feature["text"].bytes_list.value.append(
        text.encode())
  result = stub.Classify(classify, timeout=30)
  assert result.model_spec.version.value == 1
  np.testing.assert_allclose([[c.score for c in r.classes] for r in result.result.classifications],
                             expected["probabilities"], atol=1e-6)
  meta = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
      model_spec={"name": "tiny"}, metadata_field=["signature_def"]), timeout=30)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  meta.metadata["signature_def"].Unpack(signature_map)
  assert signature_map.signature_def["classify"].method_name == "tensorflow/serving/classify"
  models = model_service_pb2_grpc.ModelServiceStub(channel)
  state = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
      model_spec={"name": "tiny"}), timeout=30)
  assert [(s.version, s.state) for s in state.model_version_status] == [
      (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
      (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
  for bad, code in ((predict_pb2.PredictRequest(model_spec={"name": "nope"}),
                     grpc.StatusCode.NOT_FOUND),
                    (predict_pb2.PredictRequest(model_spec={"name": "tiny"}),
                     grpc.StatusCode.INVALID_ARGUMENT)):
    with pytest.raises(grpc.RpcError) as e:
      stub.Predict(bad, timeout=30)
    assert e.value.code() == code
  labelled = predict_pb2.PredictRequest()
  labelled.CopyFrom(request)
  labelled.model_spec.version_label = ""  # A label no version has (it was served the latest).
  with pytest.raises(grpc.RpcError) as e:
    stub.Predict(labelled, timeout=30)
  assert (e.value.code(), e.value.details()) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: ")
  assert stub.Predict(request, timeout=30).outputs["classes"].string_val  # Still serving.


def test_client_gives_the_same_answers_over_rest_and_grpc(served, expected):
  rest = client.make_client(served["url"].removeprefix("http://"), "tiny", "rest")
  rpc = client.make_client(served["grpc"], "tiny", "grpc")
  for c in (rest, rpc):
    rows = c.predict(TEXTS)
    assert [r["classes"] for r in rows] == expected["classes"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected["probabilities"],
                               atol=1e-6)
    np.testing.assert_allclose([[s for _, s in r] for r in c.classify(TEXTS)],
                               expected["probabilities"], atol=1e-6)
  with pytest.raises(client.ServerError, match="404: Servable not found"):
    client.make_client(served["url"].removeprefix("http://"), "nope").predict(["a"])


def test_concurrent_requests_are_batched_and_metrics_show_it(served):
  def one(i):
    return post(served, "/v1/models/tiny:predict", {"instances": [f"text {i}"]}).status_code
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    assert set(pool.map(one, range(48))) == {200}
  page = requests.get(served["url"] + "/monitoring/prometheus/metrics", timeout=10).text
  count = float(re.search(r'tfagent_serving_batch_size_count\{model_name="tiny"\} (\S+)',
                          page).group(1))
  total = float(re.search(r'tfagent_serving_batch_size_sum\{model_name="tiny"\} (\S+)',
                          page).group(1))
  assert total / count > 1.5  # Examples per model call: requests were merged.
  assert re.search(r'tfagent_serving_requests_total\{method="predict",model_name="tiny",'
                   r'protocol="rest",status="OK"\} \d+', page)
  assert "tfagent_serving_request_latency_seconds_bucket" in page


def test_tensorflow_thread_flags_set_the_model_thread_pools(served):
  # TensorFlow names its inter-op pool's threads tf_Compute; 2 cores would give 2.
  names = []
  for tid in os.listdir(f"/proc/{served['pid']}/task"):
    with open(f"/proc/{served['pid']}/task/{tid}/comm") as f:
      names.append(f.read().strip())
  assert names.count("tf_Compute") == 3, names


def test_negative_thread_count_is_a_clear_error():
  # Raised before any TensorFlow setting, so in-process; serve's exit 1 without a traceback
  # is test_serve_conformance's start-up failure test.
  with pytest.raises(ConfigError, match="--tensorflow_inter_op_parallelism=-1: give a "
                                        "number of threads"):
    serve_options.set_tensorflow_threads(0, -1)


def test_unbatched_submit_hands_back_the_prepared_call_with_its_deadline(trained_run):
  _, result = trained_run
  inputs = {"text": np.array([b"good", b"bad"], dtype=object)}
  unbatched = servable.Servable("tiny", 1, result["saved_model"])
  expected = unbatched.run("", inputs)["probabilities"]

  batcher, call = unbatched.submit("", inputs)
  assert batcher is None  # No batching: the caller gets the prepared call to run.
  np.testing.assert_allclose(call()["probabilities"], expected, atol=1e-6)
  _, late = unbatched.submit("", inputs, deadline=time.monotonic() - 1)
  with pytest.raises(tensors.ServingError) as e:
    late()
  assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
