"""JSON as TF Serving reads and writes it (util/json_tensor.cc), on python-rapidjson.

Bodies are parsed by python-rapidjson, a binding of the same C++ RapidJSON
that TF Serving links, so parse verdicts, messages and byte offsets are
RapidJSON's own (ParseJson: "JSON Parse error: <GetParseError_En> at offset:
<GetErrorOffset>"). Answers keep TF Serving's PrettyWriter layout, which
switches single-line arrays on and off mid-document, and its float text
(WriteDecimal); that layout is written here.
"""

import base64
import math
import re
import sys

import numpy as np
import rapidjson

from tfagent.serving import status, tensors

# python-rapidjson's reader recurses and stops at Python's recursion limit (1,000
# by default); TF Serving's reader has no limit of its own. 10,000 levels use
# under 1 MB of an 8 MB thread stack (100,000 parsed on one; 1,000,000 crashed).
MAX_DEPTH = 10_000
sys.setrecursionlimit(max(sys.getrecursionlimit(), MAX_DEPTH))
_PARSE_ERROR = re.compile(r"Parse error at offset (\d+): (.*)", re.S)
_NOT_SINGULAR = "The document root must not be followed by other values."
_DEBUG_MODE = rapidjson.WM_PRETTY | rapidjson.WM_SINGLE_LINE_ARRAY
_DEBUG_LIMIT = 256  # JsonValueToDebugString stops about here.


def _parse_error(message: str, offset: int) -> status.ServingError:
  return status.invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def loads(body: bytes):
  """The document of `body`, or TF Serving's "JSON Parse error: ..." (INVALID_ARGUMENT).

  As TF Serving's flags: NaN and Infinity accepted (kParseNanAndInfFlag), text
  after the document ignored (kParseStopWhenDoneFlag), a UTF-8 byte-order mark
  skipped (its EncodedInputStream).
  """
  if not body:
    raise status.invalid_argument("JSON Parse error: The document is empty")
  start = 3 if body.startswith(b"\xef\xbb\xbf") else 0
  view = body[start:] if start else body
  try:
    return rapidjson.loads(view, number_mode=rapidjson.NM_NAN)
  except rapidjson.JSONDecodeError as e:
    offset, message = _PARSE_ERROR.fullmatch(str(e)).groups()
    if message == _NOT_SINGULAR:  # The document ended before the trailing text.
      return rapidjson.loads(view[:int(offset)], number_mode=rapidjson.NM_NAN)
    raise _parse_error(message, start + int(offset)) from None
  except UnicodeDecodeError as e:  # Python strings must be UTF-8; TF Serving passes bytes on.
    raise _parse_error("Invalid encoding in string.", start + e.start) from None
  except RecursionError as e:
    match = _PARSE_ERROR.fullmatch(str(e))
    at = start + int(match.group(1)) if match else start
    raise _parse_error(f"Nested deeper than {MAX_DEPTH} levels.", at) from None


def debug_string(value) -> str:
  """JsonValueToDebugString: PrettyWriter with single-line arrays, cut at 256 characters."""
  try:
    text = rapidjson.dumps(value, indent=4, write_mode=_DEBUG_MODE, ensure_ascii=False)
  except (RecursionError, UnicodeEncodeError):
    text = rapidjson.dumps(str(value)[:_DEBUG_LIMIT])
  return text[:_DEBUG_LIMIT]


# Writing answers -----------------------------------------------------------------

_ESCAPE_RE = re.compile(r'[\x00-\x1f"\\]')
_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"',
          "\\": "\\\\"}


def quote(text: str) -> str:
  """A string as RapidJSON's Writer writes it; bytes that are not UTF-8 pass through
  (as surrogate escapes), as TF Serving writes a string tensor's bytes unchecked."""
  if not _ESCAPE_RE.search(text):
    return f'"{text}"'
  return '"' + _ESCAPE_RE.sub(lambda m: _SHORT.get(m.group(0), f"\\u{ord(m.group(0)):04X}"),
                              text) + '"'


def decimal_texts(values: np.ndarray) -> list:
  """TF Serving's WriteDecimal for float32/float64: '%g' if it reads back exactly, else
  full precision; '.0' on whole numbers; NaN, Infinity, -Infinity."""
  digits = 9 if values.dtype == np.float32 else 17
  flat = values.ravel()
  out = []
  for value, exact in zip(flat.tolist(), flat):
    if value != value:
      out.append("NaN")
    elif math.isinf(value):
      out.append("-Infinity" if value < 0 else "Infinity")
    else:
      text = "%g" % value
      if values.dtype.type(text) != exact:
        text = "%.*g" % (digits, value)
      if "." not in text and "e" not in text:
        text += ".0"
      out.append(text)
  return out


class PrettyWriter:
  """RapidJSON's PrettyWriter (4-space indent) with its kFormatSingleLineArray switch,
  which TF Serving flips within one answer (row format: single-line inside each row)."""

  def __init__(self):
    self.out = []
    self._stack = []  # [is_array, values so far]
    self.single_line = False

  def _prefix(self) -> None:
    if not self._stack:
      return
    level = self._stack[-1]
    indent = " " * (4 * len(self._stack))
    if level[0]:
      if level[1]:
        self.out.append(", " if self.single_line else ",")
      if not self.single_line:
        self.out.append("\n" + indent)
    else:
      if level[1]:
        self.out.append(",\n" if level[1] % 2 == 0 else ": ")
      else:
        self.out.append("\n")
      if level[1] % 2 == 0:
        self.out.append(indent)
    level[1] += 1

  def raw(self, text: str) -> None:
    """One value (a number, true, a quoted string...) or an object key."""
    self._prefix()
    self.out.append(text)

  def start(self, array: bool) -> None:
    self._prefix()
    self.out.append("[" if array else "{")
    self._stack.append([array, 0])

  def end(self) -> None:
    array, count = self._stack.pop()
    if count and not (array and self.single_line):
      self.out.append("\n" + " " * (4 * len(self._stack)))
    self.out.append("]" if array else "}")

  def leaf_array(self, texts: list) -> None:
    """An array of values in one go (the common innermost dimension)."""
    self._prefix()
    if not texts:
      self.out.append("[]")
    elif self.single_line:
      self.out.append("[" + ", ".join(texts) + "]")
    else:
      inner = "\n" + " " * (4 * (len(self._stack) + 1))
      self.out.append("[" + inner + ("," + inner).join(texts) + "\n" +
                      " " * (4 * len(self._stack)) + "]")

  def text(self) -> str:
    return "".join(self.out)


# Answers ----------------------------------------------------------------------

def value_texts(array: np.ndarray) -> list:
  """Each value of an output as JSON text (AddSingleValueAndAdvance)."""
  flat = array.ravel()
  if array.dtype == object or array.dtype.kind == "S":
    return [quote(b.decode("utf-8", "surrogateescape")) for b in flat]
  if array.dtype in (np.float32, np.float64):
    return decimal_texts(array)
  if array.dtype == np.bool_:
    return ["true" if v else "false" for v in flat.tolist()]
  if array.dtype.kind in "iu":
    return [str(v) for v in flat.tolist()]
  raise status.invalid_argument(
      f"Failed to write JSON value for tensor type: {tensors.dtype_name(array.dtype)}")


def _b64_object(writer, value: bytes) -> None:
  """A `*_bytes` output value: {"b64": ...}, written as an object."""
  writer.start(False)
  writer.raw('"b64"')
  writer.raw(quote(base64.b64encode(value).decode("ascii")))
  writer.end()


def _write_tensor(writer, name: str, array: np.ndarray) -> None:
  """AddTensorValues: nested arrays (no recursion); `*_bytes` strings as {"b64": ...}."""
  as_bytes = name.endswith("_bytes") and array.dtype == object
  flat = array.ravel()
  texts = None if as_bytes else value_texts(array)
  if array.ndim == 0:
    _b64_object(writer, flat[0]) if as_bytes else writer.raw(texts[0])
    return
  inner = array.shape[-1]
  stride = [int(np.prod(array.shape[d + 1:])) for d in range(array.ndim)]
  pending = [(0, 0)]  # (dimension or -1 to close, offset into the values)
  while pending:
    dim, offset = pending.pop()
    if dim < 0:
      writer.end()
    elif dim == array.ndim - 1 and not as_bytes:
      writer.leaf_array(texts[offset:offset + inner])
    elif dim == array.ndim - 1:
      writer.start(True)
      for value in flat[offset:offset + inner]:
        _b64_object(writer, value)
      writer.end()
    else:
      writer.start(True)
      pending.append((-1, 0))
      for i in reversed(range(array.shape[dim])):
        pending.append((dim + 1, offset + i * stride[dim]))


def predict_response(outputs: dict, fmt: str) -> str:
  """MakeJsonFromTensors: `predictions` (row) or `outputs` (columnar), rapidjson's layout."""
  names = sorted(outputs)
  if not names:
    raise status.invalid_argument("Cannot convert empty tensor map to JSON")
  writer = PrettyWriter()
  writer.start(False)
  objects = len(names) > 1
  if fmt == "columnar":
    writer.raw('"outputs"')
    if objects:
      writer.start(False)
    for name in names:
      if objects:
        writer.raw(quote(name))
      _write_tensor(writer, name, outputs[name])
    if objects:
      writer.end()
  else:
    batch = _batch_size(outputs, names)
    writer.raw('"predictions"')
    writer.start(True)
    for row in range(batch):
      if objects:
        writer.start(False)
      writer.single_line = True
      for name in names:
        if objects:
          writer.raw(quote(name))
        array = outputs[name]
        _write_tensor(writer, name, np.asarray(array[row], dtype=array.dtype))
      writer.single_line = False
      if objects:
        writer.end()
    writer.end()
  writer.end()
  return writer.text()


def _batch_size(outputs: dict, names: list) -> int:
  """MakeRowFormatJsonFromTensors' check: every output has the same first dimension."""
  batch = None
  for name in names:
    array = outputs[name]
    if array.ndim == 0:
      raise status.invalid_argument(f"Tensor name: {name} has no shape information ")
    if batch is not None and array.shape[0] != batch:
      raise status.invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                                    f"{array.shape[0]} expecting: {batch}")
    batch = array.shape[0]
  return batch


def _results_writer(items, noun: str) -> PrettyWriter:
  """A writer past '{"results": ', once there are results to write."""
  if not items:
    raise status.invalid_argument(f"Cannot convert empty {noun} to JSON")
  writer = PrettyWriter()
  writer.start(False)
  writer.raw('"results"')
  return writer


def classify_response(result) -> str:
  """MakeJsonFromClassificationResult."""
  writer = _results_writer(result.classifications, "ClassificationResults")
  writer.start(True)
  for row in result.classifications:
    writer.single_line = True
    writer.start(True)
    scores = decimal_texts(np.array([c.score for c in row.classes], np.float32))
    for entry, score in zip(row.classes, scores):
      writer.leaf_array([quote(entry.label), score])
    writer.end()
    writer.single_line = False
  writer.end()
  writer.end()
  return writer.text()


def regress_response(result) -> str:
  """MakeJsonFromRegressionResult."""
  writer = _results_writer(result.regressions, "RegressionResults")
  writer.single_line = True
  writer.leaf_array(decimal_texts(
      np.array([r.value for r in result.regressions], np.float32)))
  writer.end()
  return writer.text()


def error_response(message: str) -> str:
  """MakeJsonFromStatus."""
  writer = PrettyWriter()
  writer.start(False)
  writer.raw('"error"')
  writer.raw(quote(message))
  writer.end()
  return writer.text()
