"""The four calls both protocols share, on numpy arrays and TF Serving's protos."""

import asyncio
import functools
import time

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     model_pb2)

from tfagent.serving import status

CLASSIFY_METHOD = "tensorflow/serving/classify"
SIGNATURE_DEF = "signature_def"


def spec_parts(spec: model_pb2.ModelSpec) -> tuple:
  """(name, version or None, label or None) of a ModelSpec."""
  if not spec.name:
    raise status.invalid_argument("Missing ModelSpec name")
  choice = spec.WhichOneof("version_choice")
  version = spec.version.value if choice == "version" else None
  label = spec.version_label if choice == "version_label" else None
  return spec.name, version, label


def fill_spec(spec: model_pb2.ModelSpec, servable, signature_name: str) -> None:
  spec.name, spec.signature_name = servable.name, signature_name
  spec.version.value = servable.version


def predict(manager, spec: model_pb2.ModelSpec, inputs: dict, output_filter=(),
            deadline=None) -> tuple:
  """Runs a signature; returns (servable, signature name, outputs name -> array)."""
  servable = manager.resolve(*spec_parts(spec))
  name = spec.signature_name or "serving_default"
  outputs = servable.run(name, inputs, deadline)
  if output_filter:
    unknown = set(output_filter) - set(outputs)
    if unknown:
      raise status.invalid_argument(f"output tensor alias not found in signature: "
                                    f"{', '.join(sorted(unknown))}")
    outputs = {k: outputs[k] for k in output_filter}
  return servable, name, outputs


def examples_of(request_input) -> list:
  """tf.Examples of an Input; context features are added to each, the example's win."""
  kind = request_input.WhichOneof("kind")
  if kind == "example_list":
    examples = list(request_input.example_list.examples)
  elif kind == "example_list_with_context":
    context = request_input.example_list_with_context.context
    examples = []
    for e in request_input.example_list_with_context.examples:
      merged = tf.train.Example()
      merged.CopyFrom(context)
      for key, feature in e.features.feature.items():
        merged.features.feature[key].CopyFrom(feature)
      examples.append(merged)
  else:
    examples = []
  if not examples:
    raise status.invalid_argument("Input is empty.")
  return examples


def run_classify(servable, request, deadline=None) -> classification_pb2.ClassificationResult:
  """Runs a classify signature on the request's examples (serialized, one input)."""
  name = request.model_spec.signature_name or "serving_default"
  signature = servable.signature(name)
  if signature.method_name != CLASSIFY_METHOD:
    raise status.invalid_argument(
        f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
        f"Was: {signature.method_name}")
  if len(signature.inputs) != 1:
    raise status.invalid_argument("Expected one input Tensor.")
  serialized = np.array([e.SerializeToString() for e in examples_of(request.input)],
                        dtype=object)
  outputs = servable.run(name, {next(iter(signature.inputs)): serialized}, deadline)
  scores = outputs.get("scores")
  classes = outputs.get("classes")
  result = classification_pb2.ClassificationResult()
  for i in range(len(serialized)):
    row = result.classifications.add()
    width = (scores if scores is not None else classes).shape[1]
    for j in range(width):
      row.classes.add(label=classes[i, j].decode("utf-8", "replace") if classes is not None else "",
                      score=float(scores[i, j]) if scores is not None else 0.0)
  return result


def classify(manager, request, deadline=None) -> classification_pb2.ClassificationResponse:
  servable = manager.resolve(*spec_parts(request.model_spec))
  response = classification_pb2.ClassificationResponse()
  response.result.CopyFrom(run_classify(servable, request, deadline))
  fill_spec(response.model_spec, servable, request.model_spec.signature_name or "serving_default")
  return response


def metadata(manager, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
  """GetModelMetadataResponse with the version's SignatureDefMap (the one field TF Serving has)."""
  fields = list(request.metadata_field)
  if fields != [SIGNATURE_DEF]:
    raise status.invalid_argument(
        f"Metadata field(s) {fields} not supported; request exactly ['signature_def']")
  servable = manager.resolve(*spec_parts(request.model_spec))
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.model_spec.name = servable.name
  response.model_spec.version.value = servable.version
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  for key, value in servable.signature_defs.items():
    signature_map.signature_def[key].CopyFrom(value)
  response.metadata[SIGNATURE_DEF].Pack(signature_map)
  return response


def model_status(manager, request):
  name, version, label = spec_parts(request.model_spec)
  return manager.model_status(name, version, label)


def in_pool(executor, fn, *args) -> "asyncio.Future":
  """`fn(*args)` on `executor`, awaitable from the running event loop (which it never blocks)."""
  return asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))


async def run_async(servable, signature_name: str, inputs: dict, deadline, executor) -> dict:
  """`servable.run` for an event loop: batched calls wait on a future, not a thread.

  The batch thread resolves the future on the loop; unbatched calls run on
  `executor`, as model calls must never block the loop.
  """
  loop = asyncio.get_running_loop()
  future = loop.create_future()

  def resolve(task):
    if not future.done():
      if task.error is not None:
        future.set_exception(task.error)
      else:
        future.set_result(task.result)
  batcher, pending = servable.submit(signature_name, inputs,
                                     lambda t: loop.call_soon_threadsafe(resolve, t), deadline)
  if batcher is None:  # Not batched: `pending` is the call, run off the loop.
    return await in_pool(executor, pending)
  timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
  try:
    return await asyncio.wait_for(future, timeout)
  except asyncio.TimeoutError:
    batcher.cancel(pending)
    raise status.deadline_exceeded() from None
