"""Local stand-in for TensorFlow Serving: same REST/gRPC protocol, same SavedModel layout.

  status.py    errors with TF Serving's codes and their HTTP mapping
  batching.py  dynamic batching (BatchingParameters, one queue per signature)
  servable.py  one loaded SavedModel version: signatures, warm-up, run
  manager.py   model configs, version polling, loading/unloading, status, labels
  api.py       Predict/Classify/Metadata/Status on numpy and protos, shared by both protocols
  rest.py      Starlette app: TF Serving's REST API and the Prometheus endpoint
  grpc_api.py  PredictionService and ModelService servicers
  server.py    starts both ports over one ModelManager
  metrics.py   Prometheus counters and histograms
  launch.py    runs the server as a subprocess on free loopback ports (tests, bench)
"""
