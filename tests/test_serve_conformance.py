"""Conformance with TF Serving, case by case from its sources (issue 18).

Each case names, in a comment, the TF Serving source it follows (files under
tensorflow_serving/ unless they say otherwise). A server runs in a subprocess
on loopback, started with the official image's entrypoint command line; REST is
called with `requests`, gRPC with the stubs of PyPI tensorflow-serving-api and
the client idioms of TF Serving's own examples (make_ndarray, .float_val...).
The SavedModel is synthetic (tests/serving_util.py), written by Keras's
ExportArchive, so every answer is known exactly and every signature keeps
Keras's predict method name.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

import serving_util
from serving_util import expected_probabilities, run_server
from bench import launch
from tfagent import signatures
from tfagent.serving import server

pytestmark = pytest.mark.slow
TEXTS = ["great", "", "这本书写得很好", "ok"]
STABLE_CONFIG = """model_config_list {{
  config {{ name: "synth" base_path: "{base}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 1 }} }}
}}"""


def entrypoint_args(model_name: str, base_path: str, rest: int, grpc_port: int,
                    *extra) -> list:
  """The official image's command (tools/docker/Dockerfile, tf_serving_entrypoint.sh):
  tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME}
  --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@" (free ports here, not 8500/8501)."""
  return [f"--port={grpc_port}", f"--rest_api_port={rest}", f"--model_name={model_name}",
          f"--model_base_path={base_path}/{model_name}", *extra]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> str:
  """MODEL_BASE_PATH: synth/1 and synth/2, the same synthetic SavedModel, with warm-up
  records of every kind."""
  root = tmp_path_factory.mktemp("models")
  serving_util.write_synthetic_model(str(root / "synth" / "1"))
  write_warmup(str(root / "synth" / "1"))
  shutil.copytree(root / "synth" / "1", root / "synth" / "2")
  return str(root)


@pytest.fixture(scope="module")
def official(models, tmp_path_factory):
  """The server as the official image starts it, plus a --model_config_file (polled)."""
  tmp = tmp_path_factory.mktemp("official")
  config = tmp / "models.config"
  config.write_text(STABLE_CONFIG.format(base=f"{models}/synth"))
  rest, grpc_port = launch.free_port(), launch.free_port()
  args = entrypoint_args("model", "/models", rest, grpc_port, f"--model_config_file={config}",
                         "--model_config_file_poll_wait_seconds=1",
                         "--allow_version_labels_for_unavailable_models",  # Labels at start.
                         "--monitoring_config_file=", "--max_num_load_retries=0",
                         "--num_request_iterations_for_warmup=2")
  log = tmp / "server.log"
  with run_server(args, "synth", str(log), ports=(rest, grpc_port)) as (url, address, pid):
    channel = grpc.insecure_channel(address)
    yield {"url": url, "grpc": address, "pid": pid, "log": log, "config": config,
           "models": models,
           "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "model_service": model_service_pb2_grpc.ModelServiceStub(channel)}


def rest(s, path: str, body=None, method: str = "POST") -> requests.Response:
  data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
  return requests.request(method, s["url"] + path, data=data, timeout=60)


def predict_request(texts=TEXTS, signature: str = "") -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = "synth", signature
  request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts))
  return request


def grpc_error(call, request) -> grpc.RpcError:
  with pytest.raises(grpc.RpcError) as e:
    call(request, timeout=60)
  return e.value


def error_of(response: requests.Response, code: int) -> str:
  assert response.status_code == code, response.text
  assert response.headers["Content-Type"] == "application/json"
  return response.json()["error"]


# 1. gRPC Predict outputs ---------------------------------------------------------

def test_grpc_predict_fills_typed_fields_as_the_official_clients_read_them(official):
  # servables/tensorflow/predict_util.cc PostProcessPredictionResult: AsProtoField by default.
  response = official["predict"].Predict(predict_request(), timeout=60)
  probabilities = response.outputs["probabilities"]
  assert not probabilities.tensor_content
  np.testing.assert_array_equal(np.reshape(probabilities.float_val, (4, 2)),
                                expected_probabilities(TEXTS))
  np.testing.assert_array_equal(tf.make_ndarray(probabilities), expected_probabilities(TEXTS))
  assert list(response.outputs["class_ids"].int64_val) == [0, 0, 1, 0]
  assert list(response.outputs["classes"].string_val) == [b"negative", b"negative",
                                                          b"positive", b"negative"]
  # util.cc MakeModelSpec: the default signature is named in the answer.
  assert (response.model_spec.name, response.model_spec.version.value,
          response.model_spec.signature_name) == ("synth", 2, "serving_default")


def test_output_filter_is_checked_before_the_model_runs(official):
  # predict_util.cc PreProcessPrediction: unknown and duplicate aliases.
  request = predict_request()
  request.output_filter.extend(["classes"])
  assert list(official["predict"].Predict(request, timeout=60).outputs) == ["classes"]
  request.output_filter.extend(["nope"])
  error = grpc_error(official["predict"].Predict, request)
  assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert error.details() == ("output tensor alias not found in signature: nope Outputs "
                             "expected to be in the set {class_ids,classes,probabilities}.")
  request.output_filter[:] = ["classes", "classes"]
  assert grpc_error(official["predict"].Predict, request).details() == \
      "duplicate output tensor alias: classes"


# 2. Float text in REST answers ----------------------------------------------------

def test_rest_floats_are_written_as_tf_serving_writes_them(official):
  # util/json_tensor.cc WriteDecimal: %g when it reads back exactly, else %.9g (float)
  # or %.17g (double); '.0' on whole numbers; NaN and Infinity as tokens.
  body = b'{"signature_name": "floats", "inputs": [0.123456791, 9e6, 1, 3e-05, NaN, -Infinity]}'
  text = rest(official, "/v1/models/synth:predict", body).text
  y = text.split('"y": [')[1].split("]")[0].split()
  assert [v.rstrip(",") for v in y] == ["0.123456791", "9e+06", "1.0", "3e-05", "NaN",
                                        "-Infinity"]
  d = text.split('"d": [')[1].split("]")[0].split()
  assert d[0].rstrip(",") == "0.12345679104328156"  # The float's exact double.


def test_rest_answers_are_byte_for_byte_rapidjson_pretty_writer(official):
  # util/json_tensor.cc MakeRowFormatJsonFromTensors (single-line arrays within a row),
  # MakeColumnarFormatJsonFromTensors (fully pretty), `_bytes` outputs as {"b64": ...}.
  row = rest(official, "/v1/models/synth:predict",
             {"signature_name": "floats", "instances": [0.5, 1]}).content
  assert row == (b'{\n    "predictions": [\n        {\n            "d": 0.5,\n'
                 b'            "y": 0.5\n        },\n        {\n            "d": 1.0,\n'
                 b'            "y": 1.0\n        }\n    ]\n}')
  columnar = rest(official, "/v1/models/synth:predict",
                  {"signature_name": "floats", "inputs": {"x": [0.5]}}).content
  assert columnar == (b'{\n    "outputs": {\n        "d": [\n            0.5\n        ],\n'
                      b'        "y": [\n            0.5\n        ]\n    }\n}')
  echo = rest(official, "/v1/models/synth:predict",
              {"signature_name": "bytes", "instances": ["hi", "yo"]}).content
  assert echo == (b'{\n    "predictions": [{\n            "b64": "aGk="\n        }, {\n'
                  b'            "b64": "eW8="\n        }\n    ]\n}')
  single = rest(official, "/v1/models/synth:regress",
                {"signature_name": "regress", "examples": [{"x": 1.5}, {"x": 2.0}]}).content
  assert single == b'{\n    "results": [3.0, 4.0]\n}'  # MakeJsonFromRegressionResult


# 3. Server flags --------------------------------------------------------------------

def test_official_entrypoint_command_line_starts_the_server(official):
  # model_servers/main.cc: --model_name and --model_base_path are ignored with
  # --model_config_file (the entrypoint always passes them; /models/model is absent).
  status = rest(official, "/v1/models/synth", method="GET").json()["model_version_status"]
  assert [s["version"] for s in status] == ["2", "1"]
  assert rest(official, "/v1/models/model", method="GET").status_code == 404


def test_every_tensorflow_model_server_flag_is_accepted_with_its_default():
  # model_servers/main.cc flag_list and server.h Options: names and defaults.
  tf_flags = {"port": 8500, "grpc_socket_path": "", "rest_api_num_threads": None,
              "rest_api_timeout_in_ms": 30000, "rest_api_enable_cors_support": False,
              "enable_batching": False, "allow_version_labels_for_unavailable_models": False,
              "batching_parameters_file": "", "enable_per_model_batching_parameters": False,
              "model_config_file": "", "model_config_file_poll_wait_seconds": 0,
              "model_name": "default", "model_base_path": "", "num_load_threads": 0,
              "num_unload_threads": 0, "max_num_load_retries": 5,
              "load_retry_interval_micros": 60_000_000, "file_system_poll_wait_seconds": 1,
              "flush_filesystem_caches": True, "tensorflow_session_parallelism": 0,
              "tensorflow_session_config_file": "", "tensorflow_intra_op_parallelism": 0,
              "tensorflow_inter_op_parallelism": 0, "use_alts_credentials": False,
              "ssl_config_file": "", "platform_config_file": "",
              "per_process_gpu_memory_fraction": 0.0, "saved_model_tags": "serve",
              "grpc_channel_arguments": "", "grpc_max_threads": None,
              "enable_model_warmup": True, "num_request_iterations_for_warmup": 0,
              "version": False, "monitoring_config_file": "",
              "remove_unused_fields_from_bundle_metagraph": True, "prefer_tflite_model": False,
              "num_tflite_pools": None, "num_tflite_interpreters_per_pool": 1,
              "enable_signature_method_name_check": False,
              "xla_cpu_compilation_enabled": False, "xla_gpu_compilation_enabled": False,
              "enable_profiler": True, "thread_pool_factory_config_file": "",
              "mixed_precision": "", "skip_initialize_tpu": False,
              "enable_grpc_healthcheck_service": False,
              "enable_serialization_as_tensor_content": False, "rest_api_port": 8501}
  defaults = server.ServerOptions()
  cores = len(os.sched_getaffinity(0))
  per_core = {"rest_api_num_threads": 4 * cores, "grpc_max_threads": 4 * cores,
              "num_tflite_pools": cores}
  for name, value in tf_flags.items():
    assert getattr(defaults, name) == (per_core[name] if value is None else value), name
  assert isinstance(defaults.file_system_poll_wait_seconds, int)  # int32 in TF Serving.
  # The one default that differs (documented in docs/serving.md): TF's REST port is 0.
  assert defaults.rest_api_port == 8501


def test_an_ignored_flag_warns_and_a_model_config_file_is_polled(official, tmp_path):
  # server.cc PollFilesystemAndReloadConfig: a changed config takes effect at the next poll.
  config = official["config"]
  before = config.read_text()
  config.write_text(before.replace('value: 1 }', 'value: 1 }\n'
                                   '           version_labels { key: "canary" value: 2 }'))
  try:
    deadline = time.monotonic() + 60
    while rest(official, "/v1/models/synth/labels/canary:predict",
               {"instances": ["a"]}).status_code != 200:
      assert time.monotonic() < deadline, "the config file was not re-read"
      time.sleep(0.2)
  finally:
    config.write_text(before)


# 4. Classify, regress, multi-inference ----------------------------------------------

def classification_request(signature: str = "classify", texts=TEXTS):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name, request.model_spec.signature_name = "synth", signature
  for text in texts:
    example = request.input.example_list.examples.add()
    example.features.feature["text"].bytes_list.value.append(text.encode())
  return request


def test_classify_works_on_a_signature_that_keeps_keras_predict_method_name(official):
  # servables/tensorflow/classifier.cc GetClassificationSignatureDef: without
  # --enable_signature_method_name_check only the signature's shape is checked.
  sig = rest(official, "/v1/models/synth/metadata", method="GET").json()
  assert sig["metadata"]["signature_def"]["signature_def"]["classify"]["method_name"] == \
      signatures.PREDICT_METHOD
  results = rest(official, "/v1/models/synth:classify", {
      "signature_name": "classify", "examples": [{"text": t} for t in TEXTS]}).json()["results"]
  assert [[label for label, _ in r] for r in results] == [serving_util.CLASS_NAMES] * 4
  # Scores are float32s written as their shortest exact text: read back as float32.
  np.testing.assert_array_equal(np.float32([[s for _, s in r] for r in results]),
                                expected_probabilities(TEXTS))
  response = official["predict"].Classify(classification_request(), timeout=60)
  np.testing.assert_array_equal(
      [[c.score for c in row.classes] for row in response.result.classifications],
      expected_probabilities(TEXTS))
  assert response.model_spec.signature_name == "classify"


def test_classify_checks_output_dtypes_and_signature_shape(official):
  # classifier.cc PostProcessClassificationResult and PreProcessClassification.
  error = grpc_error(official["predict"].Classify, classification_request("bad_classify"))
  assert error.details() == "Expected classes Tensor of DT_STRING. Got: DT_INT64"
  error = grpc_error(official["predict"].Classify, classification_request("floats"))
  assert error.details().startswith("No classification inputs found in SignatureDef: ")
  error = grpc_error(official["predict"].Classify, classification_request("nope"))
  assert error.details() == "No signature was found with the name: nope"
  assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_regress_and_multi_inference(official):
  # servables/tensorflow/regressor.cc RunRegress; multi_inference.cc Infer.
  request = regression_pb2.RegressionRequest()
  request.model_spec.name, request.model_spec.signature_name = "synth", "regress"
  request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.5)
  response = official["predict"].Regress(request, timeout=60)
  assert [r.value for r in response.result.regressions] == [3.0]
  multi = inference_pb2.MultiInferenceRequest()
  for name, method in (("classify", signatures.CLASSIFY_METHOD),
                       ("regress", signatures.REGRESS_METHOD)):
    task = multi.tasks.add(method_name=method)
    task.model_spec.name, task.model_spec.signature_name = "synth", name
  example = multi.input.example_list.examples.add()
  example.features.feature["text"].bytes_list.value.append(b"great")
  example.features.feature["x"].float_list.value.append(2.0)
  results = official["predict"].MultiInference(multi, timeout=60).results
  assert [c.score for c in results[0].classification_result.classifications[0].classes] == \
      pytest.approx(expected_probabilities(["great"])[0])
  assert results[1].regression_result.regressions[0].value == 4.0
  multi.tasks[1].model_spec.signature_name = "classify"
  assert grpc_error(official["predict"].MultiInference, multi).details() == \
      "Duplicate evaluation of signature: classify"
  rest_regress = rest(official, "/v1/models/synth:regress",
                      {"signature_name": "serving_default", "examples": [{"x": 1.0}]})
  assert error_of(rest_regress, 400) == "Expected one output Tensor."


# 5. Error texts ----------------------------------------------------------------------

BAD_REST = [
    # util/json_tensor.cc AddInstanceItem via FillTensorMapFromInstancesList; TypeError with
    # DataTypeString names ("string", "float", "int64").
    ({"instances": ["a", 5]}, "Failed to process element: 1 of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON Value: 5 Type: Number is not of expected type: string"),
    ({"signature_name": "floats", "instances": ["a"]}, "Failed to process element: 0 of "
     "'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String is not of "
     "expected type: float"),
    # An integer out of int64's range is a type error (400), not a crash.
    ({"signature_name": "pair", "instances": [{"a": 2**63, "b": "x"}]},
     "Failed to process element: 0 key: a of 'instances' list. Error: INVALID_ARGUMENT: JSON "
     "Value: 9223372036854775808 Type: Number is not of expected type: int64"),
    # FillPredictRequestFromJson: FormatError's 'JSON Value: <doc>' prefix, TF 2.x spelling.
    ({"instances": 5}, "JSON Value: {\n    \"instances\": 5\n} Expecting 'instances' to be an "
     "list/array"),
    ({"signature_name": 3}, "JSON Value: {\n    \"signature_name\": 3\n} not formatted "
     "correctly. 'signature_name' key must be a string value."),
    # ParseJson: rapidjson's own words and byte offsets.
    (b'{"instances": [', "JSON Parse error: Invalid value. at offset: 15"),
    (b'{"instances": ["a" "b"]}', "JSON Parse error: Missing a comma or ']' after an array "
     "element. at offset: 19"),
    (b'   ', "JSON Parse error: The document is empty. at offset: 3"),
    (b'[1]', "JSON Value: [1] Is not object"),
    # FillTensorMapFromInstancesList: objects and their keys.
    ({"signature_name": "pair", "instances": [{"a": 1}]}, "Failed to process element: 0 of "
     "'instances' list. JSON object: {\n    \"a\": 1\n} keys must be equal to: a,b"),
    # model_servers/http_rest_api_handler.cc GetInfoMap (REST's unknown signature).
    ({"signature_name": "x", "instances": ["a"]},
     'Serving signature name: "x" not found in signature def'),
]


@pytest.mark.parametrize("body,message", BAD_REST)
def test_rest_error_texts_are_tf_servings(official, body, message):
  assert error_of(rest(official, "/v1/models/synth:predict", body), 400) == message


def test_rest_accepts_text_after_the_document(official):
  # util/json_tensor.cc ParseJson: kParseStopWhenDoneFlag.
  response = rest(official, "/v1/models/synth:predict", b'{"instances": ["great"]} trailing')
  np.testing.assert_array_equal(np.float32(response.json()["predictions"][0]["probabilities"]),
                                expected_probabilities(["great"])[0])


def test_grpc_error_texts_and_codes_are_tf_servings(official):
  # DirectSession's argument check as TF Serving returns it: TF's dtype names.
  request = predict_request()
  request.inputs["text"].CopyFrom(tf.make_tensor_proto([1.0], tf.float32))
  error = grpc_error(official["predict"].Predict, request)
  assert (error.code(), error.details()) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be string but float is provided")
  # predict_util.cc RunPredict: an unknown signature is FAILED_PRECONDITION over gRPC.
  error = grpc_error(official["predict"].Predict, predict_request(signature="x"))
  assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                             'Serving signature key "x" not found.')
  # predict_util.cc VerifyRequestInputsSize.
  request = predict_request()
  request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
  assert grpc_error(official["predict"].Predict, request).details() == (
      "input size does not match signature: 2!=1 len({extra,text}) != len({text}). Sent "
      "extra: {extra}. Missing but required: {}.")
  # predict_impl.cc and core/basic_manager.cc.
  assert grpc_error(official["predict"].Predict, predict_pb2.PredictRequest()).details() == \
      "Missing ModelSpec"
  request = predict_request()
  request.model_spec.name = "nope"
  error = grpc_error(official["predict"].Predict, request)
  assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND,
                                             "Servable not found for request: Latest(nope)")


# 6. Smaller ones ---------------------------------------------------------------------

def test_b64_input_may_be_unpadded_and_hold_whitespace(official):
  # util/json_tensor.cc JsonDecodeBase64Object uses absl::Base64Unescape.
  for encoded in ("aGk", "aG k=\n", base64.b64encode(b"hi").decode()):
    response = rest(official, "/v1/models/synth:predict",
                    {"signature_name": "bytes", "instances": [{"b64": encoded}]})
    assert response.json()["predictions"] == [{"b64": "aGk="}], encoded
  bad = rest(official, "/v1/models/synth:predict",
             {"signature_name": "bytes", "instances": [{"b64": "a*"}]})
  assert error_of(bad, 400).endswith("Unable to base64 decode")


def test_status_by_label_lists_every_version(official):
  # model_servers/get_model_status_impl.cc: only a version narrows the answer.
  by_label = rest(official, "/v1/models/synth/labels/stable", method="GET").json()
  assert [s["version"] for s in by_label["model_version_status"]] == ["2", "1"]
  by_version = rest(official, "/v1/models/synth/versions/1", method="GET").json()
  assert [s["version"] for s in by_version["model_version_status"]] == ["1"]
  # http_rest_api_util.cc ParseModelInfo: a version past int64.
  assert error_of(rest(official, "/v1/models/synth/versions/99999999999999999999",
                       method="GET"), 400) == \
      "Failed to convert version: 99999999999999999999 to numeric."


def test_grpc_model_status_ignores_the_label_and_reload_config_works(official):
  # get_model_status_impl.cc GetModelStatusWithModelSpec; model_service_impl.cc
  # HandleReloadConfigRequest.
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name, request.model_spec.version_label = "synth", "stable"
  status = official["model_service"].GetModelStatus(request, timeout=60)
  assert [s.version for s in status.model_version_status] == [2, 1]
  reload = model_management_pb2.ReloadConfigRequest()
  config = reload.config.model_config_list.config.add(
      name="synth", base_path=f"{official['models']}/synth", model_platform="tensorflow")
  config.model_version_policy.all.SetInParent()
  config.version_labels["stable"] = 9
  error = grpc_error(official["model_service"].HandleReloadConfigRequest, reload)
  assert (error.code(), error.details()) == (
      grpc.StatusCode.FAILED_PRECONDITION, "Request to assign label to version 9 of model "
      "synth, which is not currently available for inference")


@pytest.fixture(scope="module")
def flagged(models, tmp_path_factory):
  """A server with the other behaviour flags on, and warm-up logs of every kind."""
  tmp = tmp_path_factory.mktemp("flagged")
  base = tmp / "synth"
  shutil.copytree(f"{models}/synth/1", base / "1")
  os.remove(base / "1" / signatures.WARMUP_FILE)  # Its classify log would fail the check.
  monitoring = tmp / "monitoring.config"
  monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
  batching = tmp / "batching.txt"
  batching.write_text("max_batch_size { value: 16 }\nenable_large_batch_splitting "
                      "{ value: true }\nmax_execution_batch_size { value: 4 }\n")
  args = ["--model_name=synth", f"--model_base_path={base}",
          "--enable_serialization_as_tensor_content", "--enable_signature_method_name_check",
          "--rest_api_enable_cors_support", f"--monitoring_config_file={monitoring}",
          "--enable_batching", f"--batching_parameters_file={batching}",
          "--enable_profiler=false", "--max_num_load_retries=0"]
  log = tmp / "server.log"
  with run_server(args, "synth", str(log)) as (url, address, pid):
    channel = grpc.insecure_channel(address)
    yield {"url": url, "log": log,
           "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel)}


def write_warmup(version_dir: str) -> None:
  """One record of each kind TF Serving replays (servables/tensorflow/saved_model_warmup.cc)."""
  classify = classification_request(texts=["warm"])
  regress = regression_pb2.RegressionRequest()
  regress.model_spec.signature_name = "regress"
  regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
  multi = inference_pb2.MultiInferenceRequest()
  task = multi.tasks.add(method_name=signatures.REGRESS_METHOD)
  task.model_spec.name, task.model_spec.signature_name = "synth", "regress"
  multi.input.CopyFrom(regress.input)
  logs = [prediction_log_pb2.PredictionLog(predict_log={"request": predict_request(["w"])}),
          prediction_log_pb2.PredictionLog(classify_log={"request": classify}),
          prediction_log_pb2.PredictionLog(regress_log={"request": regress}),
          prediction_log_pb2.PredictionLog(multi_inference_log={"request": multi})]
  os.makedirs(os.path.join(version_dir, "assets.extra"), exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(version_dir, signatures.WARMUP_FILE)) as writer:
    for log in logs:
      writer.write(log.SerializeToString())


def test_flags_serialize_tensor_content_check_method_names_and_add_cors(flagged):
  # model_servers/server.cc: --enable_serialization_as_tensor_content (AsProtoTensorContent).
  response = flagged["predict"].Predict(predict_request(), timeout=60)
  probabilities = response.outputs["probabilities"]
  assert probabilities.tensor_content and not probabilities.float_val
  np.testing.assert_array_equal(tf.make_ndarray(probabilities), expected_probabilities(TEXTS))
  # classifier.cc with --enable_signature_method_name_check.
  error = grpc_error(flagged["predict"].Classify, classification_request())
  assert error.details() == ("Expected classification signature method_name to be "
                             "tensorflow/serving/classify. Was: tensorflow/serving/predict")
  # http_rest_api_util.cc AddCORSHeaders; http_server.cc OPTIONS preflight.
  answer = requests.post(flagged["url"] + "/v1/models/synth:predict",
                         json={"instances": ["a"]}, timeout=60)
  assert answer.headers["Access-Control-Allow-Origin"] == "*"
  assert answer.headers["Access-Control-Allow-Methods"] == "POST, GET"
  preflight = requests.options(flagged["url"] + "/v1/models/synth:predict",
                               headers={"Origin": "https://example.org"}, timeout=60)
  assert preflight.status_code == 200
  assert requests.options(flagged["url"] + "/v1/models/synth:predict",
                          timeout=60).status_code == 400
  # http_server.cc: the Prometheus page at the monitoring config's path, and only there.
  assert "tfagent_serving_requests_total" in requests.get(flagged["url"] + "/metrics",
                                                          timeout=60).text
  assert requests.get(flagged["url"] + "/monitoring/prometheus/metrics",
                      timeout=60).status_code == 404


def test_large_batch_splitting_and_an_ignored_flag(flagged):
  # BatchingParameters' enable_large_batch_splitting parses; 10 texts ran as slices of 4.
  texts = [f"t{i}" for i in range(10)]
  response = requests.post(flagged["url"] + "/v1/models/synth:predict",
                           json={"instances": texts}, timeout=60).json()
  np.testing.assert_array_equal(np.float32([p["probabilities"] for p in response["predictions"]]),
                                expected_probabilities(texts))
  assert "--enable_profiler=False is accepted and ignored" in flagged["log"].read_text()


def test_warm_up_replays_every_log_type(official):
  # saved_model_warmup.cc RunWarmupRequest: predict, classify, regress and multi-inference
  # logs, each --num_request_iterations_for_warmup times.
  log = official["log"].read_text()
  assert "Servable synth version 1: 4 warm-up records replayed" in log
  assert "Servable synth version 2: 4 warm-up records replayed" in log


def start_until_exit(args: list, tmp_path) -> subprocess.CompletedProcess:
  cmd, _, _ = launch.server_command(args)
  return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=tmp_path)


def test_a_model_that_fails_to_load_at_start_up_stops_the_server(models, tmp_path):
  # model_servers/server.cc BuildAndStart -> ServerCore::Create fails: "Failed to start
  # server"; saved_model_warmup_util.cc: more than 1,000 warm-up records fail the load.
  broken = tmp_path / "broken" / "1"
  broken.mkdir(parents=True)
  (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
  many = tmp_path / "many"
  shutil.copytree(f"{models}/synth/1", many / "1")
  log = prediction_log_pb2.PredictionLog(predict_log={"request": predict_request(["w"])})
  os.makedirs(many / "1" / "assets.extra", exist_ok=True)
  with tf.io.TFRecordWriter(str(many / "1" / signatures.WARMUP_FILE)) as writer:
    for _ in range(signatures.MAX_WARMUP_RECORDS + 1):
      writer.write(log.SerializeToString())
  config = tmp_path / "models.config"
  config.write_text("model_config_list { " + " ".join(
      f'config {{ name: "{n}" base_path: "{tmp_path / n}" model_platform: "tensorflow" }}'
      for n in ("broken", "many")) + " }")
  out = start_until_exit([f"--model_config_file={config}", "--max_num_load_retries=0"],
                         tmp_path)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Failed to start server. Error: " in out.stderr
  assert "Servable broken version 1 failed to load" in out.stderr
  assert "Number of warmup records exceeds the maximum (1000)" in out.stderr
  assert "Traceback" not in out.stderr


def test_saved_model_tags_choose_the_meta_graph(models, tmp_path):
  # model_servers/server.cc: --saved_model_tags, split on commas; no match fails the load.
  out = start_until_exit([f"--model_base_path={models}/synth", "--model_name=synth",
                          "--saved_model_tags=serve,gpu", "--max_num_load_retries=0"], tmp_path)
  assert out.returncode == 1
  assert "Could not find meta graph def matching supplied tags: { gpu serve }" in out.stderr


def test_failed_load_reports_its_own_code(official):
  # get_model_status_impl.cc: ToStatusProto(servable_state.health), not always UNKNOWN.
  version = os.path.join(official["models"], "synth", "7")
  os.makedirs(os.path.join(version, "variables"))
  shutil.copy(os.path.join(official["models"], "synth", "1", "saved_model.pb"), version)
  try:
    deadline = time.monotonic() + 90
    while True:
      status = rest(official, "/v1/models/synth", method="GET").json()["model_version_status"]
      if status[0]["version"] == "7" and status[0]["state"] == "END":
        break
      assert time.monotonic() < deadline, status
      time.sleep(0.5)
    assert status[0]["status"]["error_code"] == "NOT_FOUND"
    assert "variables" in status[0]["status"]["error_message"]
    assert rest(official, "/v1/models/synth:predict", {"instances": ["a"]}).status_code == 200
  finally:
    shutil.rmtree(version)


def test_version_flag_prints_versions():
  out = subprocess.run([sys.executable, "-m", "tfagent.serve", "--version"],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.startswith("TensorFlow ModelServer: ")
  assert f"TensorFlow Library: {tf.__version__}" in out.stdout


def test_metadata_request_checks_its_fields(official):
  # servables/tensorflow/get_model_metadata_impl.cc ValidateGetModelMetadataRequest.
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nope"])
  request.model_spec.name = "synth"
  assert grpc_error(official["predict"].GetModelMetadata, request).details() == \
      "Metadata field nope is not supported"
