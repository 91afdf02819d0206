"""Classify and regress on serialized tf.Examples: the signatures' checks and the results,
as servables/tensorflow/classifier.cc and regressor.cc make them (both protocols)."""

from google.protobuf import text_format
import numpy as np
from tensorflow_serving.apis import classification_pb2, regression_pb2

from tfagent import signatures
from tfagent.serving import status, tensors


def serialized_examples(request_input) -> np.ndarray:
  """<string>[n] of serialized tf.Examples, context bytes first (InputToSerializedExampleTensor).

  Concatenated serializations merge as protobuf merges: an example's feature
  replaces the context's feature of the same name.
  """
  kind = request_input.WhichOneof("kind")
  if kind == "example_list":
    rows = [e.SerializeToString() for e in request_input.example_list.examples]
  elif kind == "example_list_with_context":
    listed = request_input.example_list_with_context
    context = listed.context.SerializeToString()
    rows = [context + e.SerializeToString() for e in listed.examples]
  else:
    rows = []
  if not rows:
    raise status.invalid_argument("Input is empty.")
  out = np.empty(len(rows), dtype=object)
  out[:] = rows
  return out


def _debug(signature) -> str:
  return text_format.MessageToString(signature)


def check_classify_signature(signature) -> None:
  """PreProcessClassification (classifier.cc): one `inputs`, `classes` and/or `scores`."""
  if len(signature.inputs) != 1:
    raise status.invalid_argument("Expected one input Tensor.")
  if len(signature.outputs) not in (1, 2):
    raise status.invalid_argument(
        f"Expected one or two output Tensors, found {len(signature.outputs)}")
  if signatures.CLASSIFY_INPUTS not in signature.inputs:
    raise status.invalid_argument(
        f"No classification inputs found in SignatureDef: {_debug(signature)}")
  if not {signatures.CLASSIFY_CLASSES, signatures.CLASSIFY_SCORES} & set(signature.outputs):
    raise status.invalid_argument(
        'Expected classification signature outputs to contain at least one of "classes" or '
        f'"scores". Signature was: {_debug(signature)}')


def check_regress_signature(signature) -> None:
  """PreProcessRegression (regressor.cc): one `inputs`, one `outputs`."""
  if len(signature.inputs) != 1:
    raise status.invalid_argument("Expected one input Tensor.")
  if len(signature.outputs) != 1:
    raise status.invalid_argument("Expected one output Tensor.")
  if signatures.REGRESS_INPUTS not in signature.inputs:
    raise status.invalid_argument(
        f"No regression inputs found in SignatureDef: {_debug(signature)}")
  if signatures.REGRESS_OUTPUTS not in signature.outputs:
    raise status.invalid_argument(
        f"No regression outputs found in SignatureDef: {_debug(signature)}")


def _shape_text(array: np.ndarray) -> str:
  return "[" + ",".join(str(d) for d in array.shape) + "]"


def _check_matrix(name: str, array, kind: str, n: int) -> None:
  """PostProcessClassificationResult's checks of one output: [n, C] of the right dtype."""
  if array.ndim != 2:
    raise status.invalid_argument(
        f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(array)}")
  dtype = "DT_STRING" if array.dtype == object else tensors.dtype_enum_name(array.dtype)
  if dtype != kind:
    raise status.invalid_argument(f"Expected {name} Tensor of {kind}. Got: {dtype}")
  if array.shape[0] != n:
    raise status.invalid_argument(
        f"Expected {name} output batch size of {n}. Got: {array.shape[0]}")


def classification_result(outputs: dict, n: int) -> classification_pb2.ClassificationResult:
  """A ClassificationResult from `classes` <string>[n, C] and/or `scores` <float>[n, C]."""
  classes = outputs.get(signatures.CLASSIFY_CLASSES)
  scores = outputs.get(signatures.CLASSIFY_SCORES)
  if classes is not None:
    _check_matrix("classes", classes, "DT_STRING", n)
  if scores is not None:
    _check_matrix("scores", scores, "DT_FLOAT", n)
  if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
    raise status.invalid_argument("Tensors class and score should match in dim_size(1). "
                                  f"Got {classes.shape[1]} vs. {scores.shape[1]}")
  width = (classes if classes is not None else scores).shape[1]
  result = classification_pb2.ClassificationResult()
  for i in range(n):
    row = result.classifications.add()
    for j in range(width):
      entry = row.classes.add()
      if classes is not None:
        entry.label = classes[i, j].decode("utf-8", "replace")
      if scores is not None:
        entry.score = scores[i, j]
  return result


def regression_result(outputs: dict, n: int) -> regression_pb2.RegressionResult:
  """A RegressionResult from `outputs` <float>[n] or [n, 1] (PostProcessRegressionResult)."""
  values = outputs[signatures.REGRESS_OUTPUTS]
  if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
    raise status.invalid_argument("Expected output Tensor shape to be either [batch_size] or "
                                  f"[batch_size, 1] but got {_shape_text(values)}")
  if values.shape[0] != n:
    raise status.invalid_argument("Input batch size did not match output batch size: "
                                  f"{n} vs. {values.shape[0]}")
  if values.dtype != np.float32:
    raise status.invalid_argument("Expected output Tensor of DT_FLOAT.  Got: "
                                  f"{tensors.dtype_enum_name(values.dtype)}")
  result = regression_pb2.RegressionResult()
  for value in values.ravel().tolist():
    result.regressions.add(value=value)
  return result
