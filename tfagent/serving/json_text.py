"""JSON as TF Serving reads and writes it (util/json_tensor.cc), on python-rapidjson.

Bodies are parsed by python-rapidjson, a binding of the same C++ RapidJSON
that TF Serving links, so parse verdicts, messages and byte offsets are
RapidJSON's own (ParseJson: "JSON Parse error: <GetParseError_En> at offset:
<GetErrorOffset>"). Answers keep TF Serving's PrettyWriter layout, which
switches single-line arrays on and off mid-document, and its float text
(WriteDecimal); that layout is written here.
"""

import math
import re
import sys

import numpy as np
import rapidjson

from tfagent.serving import status

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
