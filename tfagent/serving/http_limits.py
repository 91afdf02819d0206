"""Bounds uvicorn's httptools protocol lacks: header bytes and reading time, a timer per connection
on the event loop (uvicorn reads through asyncio transports, not blocking sockets). A request
must arrive whole within `read_timeout` of its first byte, and a new connection must send one
within as long (else 408 and close); the request line and headers may hold `max_header_bytes`,
counted as bytes arrive (else 431 and close); requests past uvicorn's connection cap (its own
503) are counted too. Checked against uvicorn 0.54 and httptools 0.9 (tests/test_serve_hostile.py
fails if the callbacks stop being called).
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LINGER_SECONDS = 1.0
_CLOSE = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
          b"content-length: %d\r\n\r\n%s")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
  """uvicorn's httptools protocol with a header-size cap and a request read timeout."""

  max_header_bytes = 64 << 10
  read_timeout = 30.0
  on_reject = None  # on_reject(http_status): counts the rejection (metrics).

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._read_timer = None
    self._header_bytes = 0
    self._in_headers = True  # Bytes arriving now belong to a request line or headers.
    self._tail = b""  # The last bytes seen, for a header end split across reads.
    self._rejected = False

  @classmethod
  def with_limits(cls, max_header_bytes: int, read_timeout: float, on_reject=None):
    """A subclass carrying the limits (uvicorn instantiates the class it is given)."""
    return type("LimitedHttp", (cls,), {"max_header_bytes": max_header_bytes,
                                        "read_timeout": read_timeout,
                                        "on_reject": staticmethod(on_reject or (lambda c: None))})

  def connection_made(self, transport) -> None:
    super().connection_made(transport)
    self._start_timer()

  def connection_lost(self, exc) -> None:
    self._stop_timer()
    super().connection_lost(exc)

  def data_received(self, data: bytes) -> None:
    """Counts header bytes before the parser buffers them (one check a read, not a header)."""
    if self._rejected:
      return  # Dropped while the rejected connection lingers.
    if self._in_headers:
      probe = self._tail + data
      end = probe.find(b"\r\n\r\n")
      self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
      self._tail = probe[-3:]
      if self._header_bytes > self.max_header_bytes:
        self._reject(431, b"Request Header Fields Too Large",
                     f"Request line and headers are larger than {self.max_header_bytes} bytes "
                     "(--rest_api_max_header_bytes)")
        return
    super().data_received(data)

  def _start_timer(self) -> None:
    if self._read_timer is None and self.read_timeout > 0:
      self._read_timer = self.loop.call_later(self.read_timeout, self._timed_out)

  def _stop_timer(self) -> None:
    if self._read_timer is not None:
      self._read_timer.cancel()
      self._read_timer = None

  def _timed_out(self) -> None:
    self._read_timer = None
    if self.cycle is not None and self.cycle.response_started and \
        not self.cycle.response_complete:
      self.transport.close()  # Mid-answer to an earlier request: just close.
    else:
      self._reject(408, b"Request Timeout",
                   f"No whole request within {self.read_timeout:g} s "
                   "(--rest_api_read_timeout_seconds)")

  def _reject(self, code: int, phrase: bytes, message: str) -> None:
    """Answers `code` and closes after LINGER_SECONDS, dropping what the client still sends
    (closing a socket with unread bytes resets it, and the client would lose the answer)."""
    self._rejected = True
    self._stop_timer()
    if not self.transport.is_closing():
      body = b'{\n    "error": "%s"\n}' % message.encode()
      self.transport.write(_CLOSE % (code, phrase, len(body), body))
      self.loop.call_later(LINGER_SECONDS, self.transport.close)
    self.on_reject(code)

  # httptools callbacks ----------------------------------------------------------

  def on_message_begin(self) -> None:
    self._start_timer()
    super().on_message_begin()

  def on_headers_complete(self) -> None:
    self._in_headers = False
    if self._rejected:
      return
    limit = self.limit_concurrency
    if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
      self.on_reject(503)  # uvicorn answers 503 itself; counted here, as it bypasses the app.
    super().on_headers_complete()

  def on_message_complete(self) -> None:
    self._stop_timer()
    self._in_headers, self._header_bytes, self._tail = True, 0, b""  # The next request's.
    if not self._rejected:
      super().on_message_complete()
