"""Local stand-in for TensorFlow Serving: same REST/gRPC protocol, same SavedModel layout.

  status.py       errors with TF Serving's codes and their HTTP mapping
  protos.py       config protos PyPI lacks (BatchingParameters, MonitoringConfig, SSLConfig)
  tensors.py      TensorProto <-> numpy, sizes and ranks checked first (both protocols)
  json_text.py    JSON parsed by python-rapidjson (TF Serving's RapidJSON); answers written
  json_tensor.py  REST bodies -> arrays and tf.Examples (util/json_tensor.cc)
  examples.py     classify/regress: signature checks and results (classifier.cc, regressor.cc)
  batching.py     dynamic batching (BatchingParameters, one queue per signature)
  servable.py     one loaded SavedModel version: signatures, warm-up, run
  manager.py      model configs, version polling, loading/unloading, status, labels
  api.py          Predict/Classify/Regress/MultiInference/Metadata/Status, shared by both protocols
  rest.py         the REST API as an ASGI app, and the Prometheus page
  http_limits.py  header-size cap and read timeout on uvicorn's HTTP protocol
  grpc_api.py     PredictionService and ModelService servicers
  server.py       every tensorflow_model_server flag; starts both ports over one ModelManager
  metrics.py      Prometheus counters and histograms
  launch.py       runs the server as a subprocess on free loopback ports (tests, bench)
"""
