"""Errors carrying TF Serving's status codes, and its status -> HTTP mapping."""

import grpc

# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
  """A request failure with a gRPC status code; REST maps it with HTTP_STATUS."""

  def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
    super().__init__(message)
    self.code, self.message = code, message
    self._http_status = http_status

  @property
  def http_status(self) -> int:
    """TF Serving's mapping of the code, unless the error names its own (413, 431...)."""
    return self._http_status or HTTP_STATUS.get(self.code, 500)


def invalid_argument(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def deadline_exceeded(message: str = "Deadline exceeded") -> ServingError:
  return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, message)


def task_size_error(size: int, limit: int) -> ServingError:
  """The batcher's refusal of a request larger than a batch (also raised before decoding)."""
  return invalid_argument(f"Task size {size} is larger than maximum input batch size {limit}")
