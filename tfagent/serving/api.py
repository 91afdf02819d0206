"""TF Serving's PredictionService and ModelService on request protos, for both protocols (REST
fills the same protos: json_tensor.py), with TF Serving's checks in its order and its messages
(the source functions are named beside each)."""

import grpc
from google.protobuf import text_format
import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     inference_pb2, model_pb2, predict_pb2, regression_pb2)

from tfagent import signatures as sig
from tfagent.serving import servable as servable_lib, tensors
from tfagent.serving.tensors import ServingError, invalid_argument

SIGNATURE_DEF = "signature_def"
MAX_FILL_BYTES = 32 << 20  # Padding of a TensorProto short of its shape, at most.
_PREDICT_METHODS = (sig.PREDICT_METHOD, sig.CLASSIFY_METHOD, sig.REGRESS_METHOD)


def _fill_spec(spec: model_pb2.ModelSpec, servable, signature_name: str = None) -> None:
  """MakeModelSpec (servables/tensorflow/util.cc): an empty signature name is the default."""
  spec.name, spec.version.value = servable.name, servable.version
  if signature_name is not None:
    spec.signature_name = signature_name or sig.DEFAULT_SIGNATURE


def _names(names) -> str:
  return ",".join(sorted(names))


def _shape(array) -> str:
  return ",".join(map(str, array.shape))


def _check_signature(signature, kind: str) -> None:
  """PreProcessClassification (classifier.cc): one `inputs`, `classes` and/or `scores`;
  PreProcessRegression (regressor.cc): one `inputs`, one `outputs`."""
  outputs, text = set(signature.outputs), text_format.MessageToString(signature)
  if len(signature.inputs) != 1:
    raise invalid_argument("Expected one input Tensor.")
  if kind == "classify" and len(outputs) not in (1, 2):
    raise invalid_argument(f"Expected one or two output Tensors, found {len(outputs)}")
  if kind == "regress" and len(outputs) != 1:
    raise invalid_argument("Expected one output Tensor.")
  if sig.CLASSIFY_INPUTS not in signature.inputs:  # Both call it `inputs`.
    raise invalid_argument(f"No {_EXAMPLE_KINDS[kind][1]} inputs found in SignatureDef: {text}")
  if kind == "classify" and not {sig.CLASSIFY_CLASSES, sig.CLASSIFY_SCORES} & outputs:
    raise invalid_argument('Expected classification signature outputs to contain at least one '
                           f'of "classes" or "scores". Signature was: {text}')
  if kind == "regress" and sig.REGRESS_OUTPUTS not in outputs:
    raise invalid_argument(f"No regression outputs found in SignatureDef: {text}")


def _classification_result(outputs: dict, n: int) -> classification_pb2.ClassificationResult:
  """PostProcessClassificationResult: `classes` <string>[n, C] and/or `scores` <float>[n, C]."""
  classes, scores = outputs.get(sig.CLASSIFY_CLASSES), outputs.get(sig.CLASSIFY_SCORES)
  for name, array, kind in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
    if array is not None and array.ndim != 2:
      raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got "
                             f"[{_shape(array)}]")
    if array is not None and tensors.enum_name(array.dtype) != kind:
      raise invalid_argument(f"Expected {name} Tensor of {kind}. Got: "
                             f"{tensors.enum_name(array.dtype)}")
    if array is not None and array.shape[0] != n:
      raise invalid_argument(f"Expected {name} output batch size of {n}. Got: {array.shape[0]}")
  if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
    raise invalid_argument("Tensors class and score should match in dim_size(1). Got "
                           f"{classes.shape[1]} vs. {scores.shape[1]}")
  width = (classes if classes is not None else scores).shape[1]
  result = classification_pb2.ClassificationResult()
  for i in range(n):
    row = result.classifications.add()
    for j in range(width):
      row.classes.add(label=None if classes is None else classes[i, j].decode("utf-8", "replace"),
                      score=None if scores is None else scores[i, j])
  return result


def _regression_result(outputs: dict, n: int) -> regression_pb2.RegressionResult:
  """PostProcessRegressionResult: `outputs` <float>[n] or [n, 1]."""
  values = outputs[sig.REGRESS_OUTPUTS]
  if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
    raise invalid_argument("Expected output Tensor shape to be either [batch_size] or "
                           f"[batch_size, 1] but got [{_shape(values)}]")
  if values.shape[0] != n:
    raise invalid_argument(f"Input batch size did not match output batch size: {n} vs. "
                           f"{values.shape[0]}")
  if values.dtype != np.float32:
    raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: "
                           f"{tensors.enum_name(values.dtype)}")
  return regression_pb2.RegressionResult(
      regressions=[regression_pb2.Regression(value=v) for v in values.ravel().tolist()])


# kind -> (method name, noun, result, response class, result field of a task)
_EXAMPLE_KINDS = {
    "classify": (sig.CLASSIFY_METHOD, "classification", _classification_result,
                 classification_pb2.ClassificationResponse, "classification_result"),
    "regress": (sig.REGRESS_METHOD, "regression", _regression_result,
                regression_pb2.RegressionResponse, "regression_result"),
}
_KIND_OF_METHOD = {value[0]: kind for kind, value in _EXAMPLE_KINDS.items()}


def serialized_examples(request_input) -> np.ndarray:
  """<string>[n] of serialized tf.Examples (InputToSerializedExampleTensor): the context's bytes
  first, so an example's feature replaces the context's of the same name (protobuf merging)."""
  kind = request_input.WhichOneof("kind")
  listed = getattr(request_input, kind) if kind else None
  context = listed.context.SerializeToString() if kind == "example_list_with_context" else b""
  rows = [context + e.SerializeToString() for e in listed.examples] if listed else []
  if not rows:
    raise invalid_argument("Input is empty.")
  return np.array(rows, dtype=object)


def check_spec(request) -> None:
  """Every call but MultiInference refuses a request without a ModelSpec."""
  if not request.HasField("model_spec"):
    raise invalid_argument("Missing ModelSpec")


class Api:
  """The calls, over a ModelManager, with the flags of ServerOptions `options`."""

  def __init__(self, manager, options):
    self.manager, self.options = manager, options
    self.max_string_bytes = max(0, options.max_input_string_bytes)

  def resolve(self, spec: model_pb2.ModelSpec):
    """The servable a ModelSpec names (ServableRequestFromModelSpec)."""
    if not spec.name:
      raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    return self.manager.resolve(spec.name, spec.version.value if choice == "version" else None,
                                spec.version_label if choice == "version_label" else None)

  def predict_signature(self, servable, name: str, rest: bool = False):
    """The signature a predict asks for (RunPredict; GetInfoMap over REST)."""
    name = name or sig.DEFAULT_SIGNATURE
    signature = servable.signature_def(name)
    if signature is None and rest:
      raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
    if signature is None:
      raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                         f'Serving signature key "{name}" not found.')
    if (self.options.enable_signature_method_name_check
        and signature.method_name not in _PREDICT_METHODS):
      raise ServingError(grpc.StatusCode.INTERNAL, "Expected prediction signature method_name "
                         f"to be one of {{{', '.join(_PREDICT_METHODS)}}}. Was: "
                         f"{signature.method_name}")
    return signature

  def predict_inputs(self, request: predict_pb2.PredictRequest, signature) -> dict:
    """The request's tensors as arrays, after VerifyRequestInputsSize, GetInputValues and the
    dtypes (DirectSession's "Expects arg[i]"); nothing is converted before all pass."""
    sent, expected = set(request.inputs), set(signature.inputs)
    defaults = set(getattr(signature, "defaults", {}))
    if len(sent) > len(expected) or (len(sent) < len(expected) and not defaults):
      raise invalid_argument(
          f"input size does not match signature: {len(sent)}!={len(expected)} "
          f"len({{{_names(sent)}}}) != len({{{_names(expected)}}}). Sent extra: "
          f"{{{_names(sent - expected)}}}. Missing but required: {{{_names(expected - sent)}}}.")
    for alias in sorted(expected):
      if alias not in sent and alias not in defaults:
        raise invalid_argument(
            f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) not "
            f"found in request and no default value provided. Inputs expected to be in the "
            f"request {{{_names(sent)}}}, or default input alias set: {_names(defaults)}")
      if alias in sent:
        tensors.check_size(alias, request.inputs[alias], MAX_FILL_BYTES)
    if sent - expected:
      raise invalid_argument(f"Inputs contains invalid name. Used request inputs: "
                             f"{_names(sent & expected)}, request input: {_names(sent)}")
    for i, alias in enumerate(request.output_filter):  # PreProcessPrediction's checks.
      if alias not in signature.outputs:
        raise invalid_argument(f"output tensor alias not found in signature: {alias} Outputs "
                               f"expected to be in the set {{{_names(signature.outputs)}}}.")
      if alias in request.output_filter[:i]:
        raise invalid_argument(f"duplicate output tensor alias: {alias}")
    for index, alias in enumerate(sorted(expected)):
      want, got = signature.inputs[alias].dtype, request.inputs[alias].dtype
      if alias in sent and want != got:
        raise invalid_argument(f"Expects arg[{index}] to be {tensors.dtype_name(want)} but "
                               f"{tensors.dtype_name(got)} is provided")
    inputs = {alias: tensors.to_ndarray(request.inputs[alias], alias) for alias in sorted(sent)}
    tensors.check_strings(inputs, self.max_string_bytes)
    return inputs

  async def predict_async(self, convert, respond, size: int, deadline, executor):
    """One predict from an event loop, REST or gRPC: `convert()` gives (servable, signature
    name, inputs, context), `respond(servable, name, outputs, context)` the answer. Up to
    servable.INLINE_BYTES, conversion runs on the loop and a batched call waits on a future,
    not a thread; a larger request is converted and run on `executor`, off the loop."""
    if size > servable_lib.INLINE_BYTES:
      return await executor.call(deadline, _predict_blocking, convert, respond, deadline)
    servable, name, inputs, context = convert()
    outputs = await servable_lib.run_async(servable, name, inputs, deadline, executor)
    return respond(servable, name, outputs, context)

  async def predict(self, request, deadline, executor) -> predict_pb2.PredictResponse:
    """gRPC Predict (predict_impl.cc, predict_util.cc RunPredict)."""
    check_spec(request)

    def convert():
      servable = self.resolve(request.model_spec)
      name = request.model_spec.signature_name or sig.DEFAULT_SIGNATURE
      inputs = self.predict_inputs(request, self.predict_signature(servable, name))
      return servable, name, inputs, request
    return await self.predict_async(convert, self._predict_response, request.ByteSize(),
                                    deadline, executor)

  def _predict_response(self, servable, name: str, outputs: dict, request):
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, servable, name)
    as_content = self.options.enable_serialization_as_tensor_content
    for key in request.output_filter or sorted(outputs):
      response.outputs[key].CopyFrom(tensors.to_proto(outputs[key], as_content))
    return response

  def example_signature(self, servable, name: str, kind: str):
    """Get{Classification,Regression}SignatureDef: found, and of the right shape."""
    method, noun = _EXAMPLE_KINDS[kind][:2]
    name = name or sig.DEFAULT_SIGNATURE
    signature = servable.signature_def(name)
    if signature is None:
      raise invalid_argument(f"No signature was found with the name: {name}")
    if self.options.enable_signature_method_name_check and signature.method_name != method:
      raise invalid_argument(f"Expected {noun} signature method_name to be {method}. Was: "
                             f"{signature.method_name}")
    _check_signature(signature, kind)

  def _run_examples(self, servable, name: str, kind: str, request_input, deadline):
    """One model call of a signature on the request's examples: its result proto."""
    rows = serialized_examples(request_input)
    tensors.check_strings({"inputs": rows}, self.max_string_bytes)
    outputs = servable.run(name or sig.DEFAULT_SIGNATURE, {sig.CLASSIFY_INPUTS: rows}, deadline)
    return _EXAMPLE_KINDS[kind][2](outputs, len(rows))

  def classify_or_regress(self, request, deadline=None, servable=None):
    """Classify or Regress, by the request's type (classification_service.cc,
    regression_service.cc; classifier.cc RunClassify, regressor.cc RunRegress); on `servable`
    if given (the warm-up's replay of their logs)."""
    if servable is None:
      check_spec(request)
      servable = self.resolve(request.model_spec)
    kind = ("classify" if isinstance(request, classification_pb2.ClassificationRequest)
            else "regress")
    name = request.model_spec.signature_name
    self.example_signature(servable, name, kind)
    response = _EXAMPLE_KINDS[kind][3](
        result=self._run_examples(servable, name, kind, request.input, deadline))
    _fill_spec(response.model_spec, servable, name)
    return response

  def multi_inference(self, request, deadline=None, servable=None):
    """MultiInference (multi_inference_helper.cc; TensorFlowMultiInferenceRunner::Infer):
    checks every task, then runs each; on `servable` if given (warm-up)."""
    spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
    servable = servable or self.resolve(spec)
    names = []
    for task in request.tasks:
      if not task.model_spec.name:
        raise invalid_argument("Found ModelSpec with an empty model name.")
      if task.model_spec.name != spec.name:
        raise invalid_argument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
      name = task.model_spec.signature_name or sig.DEFAULT_SIGNATURE
      if name in names:
        raise invalid_argument(f"Duplicate evaluation of signature: {name}")
      names.append(name)
      signature = servable.signature_def(name)
      if signature is None:
        raise invalid_argument(f"Requested signature not found in model graph: {name}")
      if task.method_name not in _KIND_OF_METHOD:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Unsupported signature method_name: {task.method_name}")
      _check_signature(signature, _KIND_OF_METHOD[task.method_name])
    response = inference_pb2.MultiInferenceResponse()
    for task, name in zip(request.tasks, names):
      kind = _KIND_OF_METHOD[task.method_name]
      result = response.results.add()
      getattr(result, _EXAMPLE_KINDS[kind][4]).CopyFrom(
          self._run_examples(servable, name, kind, request.input, deadline))
      _fill_spec(result.model_spec, servable, task.model_spec.signature_name)
    return response

  def replay(self, servable, log) -> None:
    """Runs one warm-up PredictionLog on `servable` (saved_model_warmup.cc RunWarmupRequest)."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
      request = log.predict_log.request
      name = request.model_spec.signature_name or sig.DEFAULT_SIGNATURE
      servable.run(name, self.predict_inputs(request, self.predict_signature(servable, name)))
    elif kind in ("classify_log", "regress_log"):
      self.classify_or_regress(getattr(log, kind).request, servable=servable)
    elif kind == "multi_inference_log":
      self.multi_inference(log.multi_inference_log.request, servable=servable)
    elif kind is not None:
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")

  def metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata (get_model_metadata_impl.cc): the SignatureDefMap."""
    check_spec(request)
    if not request.metadata_field:
      raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
      if field != SIGNATURE_DEF:
        raise invalid_argument(f"Metadata field {field} is not supported")
    servable = self.resolve(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, servable)
    response.metadata[SIGNATURE_DEF].Pack(
        get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs))
    return response

  def model_status(self, request):
    """GetModelStatus (get_model_status_impl.cc): a version label is ignored."""
    check_spec(request)
    spec = request.model_spec
    return self.manager.model_status(spec.name,
                                     spec.version.value if spec.HasField("version") else None)


def _predict_blocking(convert, respond, deadline):
  """A predict on a pool thread: conversions and the model call block it, not the loop."""
  servable, name, inputs, context = convert()
  return respond(servable, name, servable.run(name, inputs, deadline), context)
