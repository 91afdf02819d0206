"""TF Serving's PredictionService and ModelService on protos and arrays, shared by
both protocols. Checks run in TF Serving's order, with its messages (the source
functions are named beside each); input names and sizes are checked before
any array is built."""

import dataclasses

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     inference_pb2, model_pb2, predict_pb2, regression_pb2)

from tfagent import signatures
from tfagent.serving import examples, pool, status, tensors

SIGNATURE_DEF = "signature_def"
_PREDICT_METHODS = (signatures.PREDICT_METHOD, signatures.CLASSIFY_METHOD,
                    signatures.REGRESS_METHOD)


@dataclasses.dataclass(frozen=True)
class ApiOptions:
  """Per-request behaviour the server's flags choose."""
  method_name_check: bool = False  # --enable_signature_method_name_check
  tensor_content: bool = False  # --enable_serialization_as_tensor_content
  max_string_bytes: int = 1 << 20  # --max_input_string_bytes (tfagent); 0: no limit.
  max_fill_bytes: int = 32 << 20  # Padding of a TensorProto short of its shape, at most.


def spec_parts(spec: model_pb2.ModelSpec) -> tuple:
  """(name, version or None, label or None) of a ModelSpec (ServableRequestFromModelSpec)."""
  if not spec.name:
    raise status.invalid_argument("ModelSpec has no name specified.")
  choice = spec.WhichOneof("version_choice")
  version = spec.version.value if choice == "version" else None
  label = spec.version_label if choice == "version_label" else None
  return spec.name, version, label


def fill_spec(spec: model_pb2.ModelSpec, servable, signature_name: str) -> None:
  """MakeModelSpec (servables/tensorflow/util.cc): an empty signature name is the default."""
  spec.name = servable.name
  spec.signature_name = signature_name or signatures.DEFAULT_SIGNATURE
  spec.version.value = servable.version


def check_strings(inputs: dict, limit: int) -> None:
  """No string input longer than --max_input_string_bytes (one huge text stalls a batch)."""
  if not limit:
    return
  for alias, array in inputs.items():
    if array.dtype == object and array.size:
      longest = max(map(len, array.ravel()))
      if longest > limit:
        raise status.invalid_argument(
            f"input tensor alias: {alias} holds a string of {longest} bytes; the limit is "
            f"{limit} bytes (--max_input_string_bytes)")


class Api:
  """The calls, over a ModelManager, with the options the server's flags set."""

  def __init__(self, manager, options: ApiOptions = ApiOptions()):
    self.manager, self.options = manager, options

  def resolve(self, spec: model_pb2.ModelSpec):
    return self.manager.resolve(*spec_parts(spec))

  # Predict ----------------------------------------------------------------

  def predict_signature(self, servable, name: str, rest: bool = False):
    """The signature a predict asks for (RunPredict; GetInfoMap over REST)."""
    name = name or signatures.DEFAULT_SIGNATURE
    signature = servable.signature_def(name)
    if signature is None:
      if rest:
        raise status.invalid_argument(
            f'Serving signature name: "{name}" not found in signature def')
      raise status.failed_precondition(f'Serving signature key "{name}" not found.')
    if self.options.method_name_check and signature.method_name not in _PREDICT_METHODS:
      raise status.ServingError(
          grpc.StatusCode.INTERNAL, "Expected prediction signature method_name to be one of "
          f"{{{', '.join(_PREDICT_METHODS)}}}. Was: {signature.method_name}")
    return signature

  def predict_inputs(self, request: predict_pb2.PredictRequest, signature) -> dict:
    """The request's tensors as arrays, after TF Serving's checks of names and sizes.

    VerifyRequestInputsSize and saved_model::GetInputValues, then the dtypes
    (DirectSession's "Expects arg[i]"); nothing is converted before all pass.
    """
    sent, expected = set(request.inputs), set(signature.inputs)
    defaults = set(getattr(signature, "defaults", {}))
    if len(sent) > len(expected) or (len(sent) < len(expected) and not defaults):
      raise status.invalid_argument(
          f"input size does not match signature: {len(sent)}!={len(expected)} "
          f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
          f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
          f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
    for alias in sorted(expected):
      if alias not in sent and alias not in defaults:
        raise status.invalid_argument(
            f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) not "
            f"found in request and no default value provided. Inputs expected to be in the "
            f"request {{{','.join(sorted(sent))}}}, or default input alias set: "
            f"{','.join(sorted(defaults))}")
      if alias in sent:
        tensors.check_size(alias, request.inputs[alias], self.options.max_fill_bytes)
    if sent - expected:
      raise status.invalid_argument(
          f"Inputs contains invalid name. Used request inputs: "
          f"{','.join(sorted(sent & expected))}, request input: {','.join(sorted(sent))}")
    self.check_output_filter(request.output_filter, signature)
    for index, alias in enumerate(sorted(expected)):
      want, got = signature.inputs[alias].dtype, request.inputs[alias].dtype
      if alias in sent and want != got:
        raise status.invalid_argument(f"Expects arg[{index}] to be {tensors.dtype_name(want)} "
                                      f"but {tensors.dtype_name(got)} is provided")
    inputs = {alias: tensors.to_ndarray(request.inputs[alias]) for alias in sorted(sent)}
    check_strings(inputs, self.options.max_string_bytes)
    return inputs

  @staticmethod
  def check_output_filter(output_filter, signature) -> None:
    """PreProcessPrediction's output_filter checks."""
    seen = set()
    for alias in output_filter:
      if alias not in signature.outputs:
        raise status.invalid_argument(
            f"output tensor alias not found in signature: {alias} Outputs expected to be in "
            f"the set {{{','.join(sorted(signature.outputs))}}}.")
      if alias in seen:
        raise status.invalid_argument(f"duplicate output tensor alias: {alias}")
      seen.add(alias)

  async def predict_async(self, convert, respond, size: int, deadline,
                          executor: pool.CallPool):
    """One predict from an event loop, for REST and gRPC alike.

    `convert()` checks the request and gives (servable, signature name, inputs,
    context); `respond(servable, name, outputs, context)` makes the answer. A
    request up to pool.INLINE_BYTES is converted on the loop and a batched call
    waits on a future, not a thread; a larger one is converted and run on
    `executor` (converting up to 2 GiB must not hold the loop).
    """
    if size > pool.INLINE_BYTES:
      return await executor.call(deadline, _predict_blocking, convert, respond, deadline)
    servable, name, inputs, context = convert()
    outputs = await pool.run_async(servable, name, inputs, deadline, executor)
    return respond(servable, name, outputs, context)

  async def predict(self, request: predict_pb2.PredictRequest, deadline,
                    executor: pool.CallPool) -> predict_pb2.PredictResponse:
    """gRPC Predict (predict_impl.cc, predict_util.cc RunPredict)."""
    self.check_spec(request)
    return await self.predict_async(lambda: self._predict_call(request), self._predict_response,
                                    request.ByteSize(), deadline, executor)

  def _predict_call(self, request: predict_pb2.PredictRequest) -> tuple:
    """(servable, signature name, input arrays, request) of a Predict, after every check."""
    servable = self.resolve(request.model_spec)
    name = request.model_spec.signature_name or signatures.DEFAULT_SIGNATURE
    signature = self.predict_signature(servable, name)
    return servable, name, self.predict_inputs(request, signature), request

  def _predict_response(self, servable, name: str, outputs: dict,
                        request) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    fill_spec(response.model_spec, servable, name)
    for key in request.output_filter or sorted(outputs):
      response.outputs[key].CopyFrom(tensors.to_proto(outputs[key], self.options.tensor_content))
    return response

  # Classify, Regress, MultiInference ---------------------------------------

  def example_signature(self, servable, name: str, kind: str):
    """Get{Classification,Regression}SignatureDef: found, and of the right shape."""
    name = name or signatures.DEFAULT_SIGNATURE
    signature = servable.signature_def(name)
    if signature is None:
      raise status.invalid_argument(f"No signature was found with the name: {name}")
    method = signatures.CLASSIFY_METHOD if kind == "classify" else signatures.REGRESS_METHOD
    if self.options.method_name_check and signature.method_name != method:
      noun = "classification" if kind == "classify" else "regression"
      raise status.invalid_argument(f"Expected {noun} signature method_name to be {method}. "
                                    f"Was: {signature.method_name}")
    (examples.check_classify_signature if kind == "classify"
     else examples.check_regress_signature)(signature)
    return signature

  def _run_examples(self, servable, name: str, request_input, deadline) -> tuple:
    """(outputs, n): one model call of a signature on the request's examples."""
    rows = examples.serialized_examples(request_input)
    check_strings({"inputs": rows}, self.options.max_string_bytes)
    outputs = servable.run(name or signatures.DEFAULT_SIGNATURE,
                           {signatures.CLASSIFY_INPUTS: rows}, deadline)
    return outputs, len(rows)

  def classify_or_regress(self, request, deadline=None):
    """Classify or Regress, by the request's type (classification_service.cc,
    regression_service.cc; classifier.cc RunClassify, regressor.cc RunRegress)."""
    self.check_spec(request)
    kind = "classify" if isinstance(request, classification_pb2.ClassificationRequest) \
        else "regress"
    return self.examples_call(self.resolve(request.model_spec), request, kind, deadline)

  def examples_call(self, servable, request, kind: str, deadline=None):
    """Classify or regress on one servable (also the warm-up's replay of their logs)."""
    name = request.model_spec.signature_name
    self.example_signature(servable, name, kind)
    outputs, n = self._run_examples(servable, name, request.input, deadline)
    if kind == "classify":
      response = classification_pb2.ClassificationResponse()
      response.result.CopyFrom(examples.classification_result(outputs, n))
    else:
      response = regression_pb2.RegressionResponse()
      response.result.CopyFrom(examples.regression_result(outputs, n))
    fill_spec(response.model_spec, servable, name)
    return response

  def multi_inference(self, request, deadline=None) -> inference_pb2.MultiInferenceResponse:
    """MultiInference (multi_inference_helper.cc, multi_inference.cc)."""
    spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
    return self.multi_inference_on(self.resolve(spec), request, deadline)

  def multi_inference_on(self, servable, request, deadline=None):
    names = self._check_tasks(servable, request)
    response = inference_pb2.MultiInferenceResponse()
    for task, name in zip(request.tasks, names):
      outputs, n = self._run_examples(servable, name, request.input, deadline)
      result = response.results.add()
      if task.method_name == signatures.CLASSIFY_METHOD:
        result.classification_result.CopyFrom(examples.classification_result(outputs, n))
      else:
        result.regression_result.CopyFrom(examples.regression_result(outputs, n))
      fill_spec(result.model_spec, servable, task.model_spec.signature_name)
    return response

  @staticmethod
  def _check_tasks(servable, request) -> list:
    """TensorFlowMultiInferenceRunner::Infer's checks; returns each task's signature name."""
    names, model = [], ""
    for task in request.tasks:
      if not task.model_spec.name:
        raise status.invalid_argument("Found ModelSpec with an empty model name.")
      if model and task.model_spec.name != model:
        raise status.invalid_argument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
      model = task.model_spec.name
      name = task.model_spec.signature_name or signatures.DEFAULT_SIGNATURE
      if name in names:
        raise status.invalid_argument(f"Duplicate evaluation of signature: {name}")
      names.append(name)
      signature = servable.signature_def(name)
      if signature is None:
        raise status.invalid_argument(f"Requested signature not found in model graph: {name}")
      if task.method_name == signatures.CLASSIFY_METHOD:
        examples.check_classify_signature(signature)
      elif task.method_name == signatures.REGRESS_METHOD:
        examples.check_regress_signature(signature)
      else:
        raise status.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                  f"Unsupported signature method_name: {task.method_name}")
    return names

  def replay(self, servable, log) -> None:
    """Runs one warm-up PredictionLog on `servable` (saved_model_warmup.cc RunWarmupRequest)."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
      request = log.predict_log.request
      name = request.model_spec.signature_name or signatures.DEFAULT_SIGNATURE
      signature = self.predict_signature(servable, name)
      servable.run(name, self.predict_inputs(request, signature))
    elif kind == "classify_log":
      self.examples_call(servable, log.classify_log.request, "classify")
    elif kind == "regress_log":
      self.examples_call(servable, log.regress_log.request, "regress")
    elif kind == "multi_inference_log":
      self.multi_inference_on(servable, log.multi_inference_log.request)
    elif kind is not None:
      raise status.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                f"Unsupported log_type for warmup: {kind}")

  # Metadata and status --------------------------------------------------------

  def metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata (get_model_metadata_impl.cc): the SignatureDefMap."""
    if not request.HasField("model_spec"):
      raise status.invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
      raise status.invalid_argument(
          "GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
      if field != SIGNATURE_DEF:
        raise status.invalid_argument(f"Metadata field {field} is not supported")
    servable = self.resolve(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in servable.signature_defs.items():
      signature_map.signature_def[key].CopyFrom(value)
    response.metadata[SIGNATURE_DEF].Pack(signature_map)
    return response

  def model_status(self, request):
    """GetModelStatus (get_model_status_impl.cc): a version label is ignored."""
    if not request.HasField("model_spec"):
      raise status.invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    return self.manager.model_status(spec.name, version)

  def check_spec(self, request) -> None:
    """Predict, Classify and Regress refuse a request without a ModelSpec."""
    if not request.HasField("model_spec"):
      raise status.invalid_argument("Missing ModelSpec")


def _predict_blocking(convert, respond, deadline):
  """A predict on a pool thread: conversions and the model call block it, not the loop."""
  servable, name, inputs, context = convert()
  return respond(servable, name, servable.run(name, inputs, deadline), context)
