"""Local stand-in for TensorFlow Serving: same REST/gRPC protocol, same SavedModel layout.

  tensors.py      status codes, dtype names, TensorProto <-> numpy (both protocols)
  json_text.py    JSON read and written by python-rapidjson, TF Serving's layout and float text
  json_tensor.py  REST bodies -> the request protos gRPC clients send (util/json_tensor.cc)
  api.py          Predict/Classify/Regress/MultiInference/Metadata/Status on those protos
  batching.py     dynamic batching (BatchingParameters, one queue per signature)
  servable.py     one loaded SavedModel version; model calls off the event loop, deadlines
  manager.py      model configs, version polling, loading and retries, status, labels
  rest.py         the REST API as an ASGI app; header and read-time limits on uvicorn's protocol
  options.py      every tensorflow_model_server flag, and the config files they name
  server.py       the gRPC services, both ports over one ModelManager, Prometheus metrics
"""
