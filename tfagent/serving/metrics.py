"""Prometheus metrics: requests by outcome, request latency, model-call batch sizes."""

import prometheus_client as prom

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
  """One registry per server, so tests running several servers do not collide."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    self.requests = prom.Counter(
        "tfagent_serving_requests", "Requests by model, protocol, API method and status code.",
        ["model_name", "protocol", "method", "status"], registry=self.registry)
    self.latency = prom.Histogram(
        "tfagent_serving_request_latency_seconds", "Request latency inside the server.",
        ["model_name", "protocol", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
    self.batch_size = prom.Histogram(
        "tfagent_serving_batch_size", "Examples per model call made by the dynamic batcher.",
        ["model_name"], buckets=BATCH_BUCKETS, registry=self.registry)

  def observe_request(self, model: str, protocol: str, method: str, code: str,
                      seconds: float) -> None:
    self.requests.labels(model, protocol, method, code).inc()
    self.latency.labels(model, protocol, method).observe(seconds)

  def observe_rejected_connection(self, http_status: int) -> None:
    """A REST request refused before it reached the app (431 headers, 408 too slow)."""
    self.requests.labels("<unknown>", "rest", "other", f"HTTP_{http_status}").inc()

  def observe_batch(self, model: str, size: int) -> None:
    self.batch_size.labels(model).observe(size)

  def page(self) -> bytes:
    return prom.generate_latest(self.registry)
