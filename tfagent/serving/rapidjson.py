"""JSON as TF Serving's rapidjson reads and writes it (util/json_tensor.cc).

TF Serving parses request bodies with rapidjson (iterative parser, NaN and
Infinity allowed, text after the document ignored) and writes answers with
its PrettyWriter. Python's `json` module does the work on the common path;
this module gives rapidjson's verdict where the two differ (parse errors and
their offsets, lone surrogates, `Inf`, `-NaN`, deep nesting, trailing text,
numbers too big for a double) and rapidjson's output layout and number text.

Strings are Python `str` decoded with 'surrogateescape', so bytes that are not
UTF-8 pass through unchanged, as they do through rapidjson.
"""

import json
import math
import re

import numpy as np

from tfagent.serving import status

_ERRORS = {
    "empty": "The document is empty.",
    "value": "Invalid value.",
    "name": "Missing a name for object member.",
    "colon": "Missing a colon after a name of object member.",
    "object": "Missing a comma or '}' after an object member.",
    "array": "Missing a comma or ']' after an array element.",
    "hex": "Incorrect hex digit after \\u escape in string.",
    "surrogate": "The surrogate pair in string is invalid.",
    "escape": "Invalid escape character in string.",
    "quote": "Missing a closing quotation mark in string.",
    "encoding": "Invalid encoding in string.",
    "too_big": "Number too big to be stored in double.",
    "fraction": "Miss fraction part in number.",
    "exponent": "Miss exponent in number.",
}
_WS = re.compile(r"[ \t\n\r]*")
_PLAIN = re.compile(r'[^"\\\x00-\x1f]*')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_INT64_MIN, _UINT64_LIMIT = -(1 << 63), 1 << 64


class _ParseError(Exception):
  def __init__(self, kind: str, pos: int):
    super().__init__(kind)
    self.kind, self.pos = kind, pos


class _TooBig(ValueError):
  """A number literal that overflows a double: rapidjson refuses it."""


def _int(text: str):
  """rapidjson keeps integers that fit int64 or uint64; larger ones become doubles."""
  value = int(text) if len(text) < 40 else None
  if value is not None and _INT64_MIN <= value < _UINT64_LIMIT:
    return value
  return _float(text)


def _float(text: str) -> float:
  value = float(text)
  if math.isinf(value):
    raise _TooBig(text)
  return value


def _constant(name: str) -> float:
  return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def loads(body: bytes):
  """The document of `body`, or TF Serving's "JSON Parse error: ..." (INVALID_ARGUMENT)."""
  if not body:
    raise status.invalid_argument("JSON Parse error: The document is empty")
  text = body.decode("utf-8", "surrogateescape")
  if not _SURROGATE_ESCAPE.search(body):
    try:
      return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except (ValueError, RecursionError):
      pass  # Python and rapidjson differ here; rapidjson's verdict below.
  try:
    return _Parser(text).document()
  except _ParseError as e:
    offset = len(text[:e.pos].encode("utf-8", "surrogateescape"))
    raise status.invalid_argument(
        f"JSON Parse error: {_ERRORS[e.kind]} at offset: {offset}") from None


class _Parser:
  """rapidjson's iterative parser (kParseIterativeFlag | kParseNanAndInfFlag |
  kParseStopWhenDoneFlag): same accepted language, same error kinds and offsets."""

  def __init__(self, text: str):
    self.text, self.pos = text, 0

  def _peek(self) -> str:
    """The next character; NUL at the end, as rapidjson's memory stream."""
    return self.text[self.pos] if self.pos < len(self.text) else "\0"

  def _skip(self) -> None:
    self.pos = _WS.match(self.text, self.pos).end()

  def document(self):
    if self.text.startswith("\ufeff"):
      self.pos = 1  # rapidjson's UTF-8 stream skips a byte-order mark.
    self._skip()
    if self._peek() in "]},:\0":
      raise _ParseError("empty", self.pos)
    return self._value()

  def _value(self):
    """One value; containers are parsed with an explicit stack, so depth costs no recursion."""
    stack = []  # [container, key of the member being read, no entry yet]
    value = self._scalar_or_open(stack)
    while True:
      if value is not _OPEN:
        if not stack:
          return value
        _add(stack[-1], value)
      value = self._after(stack)
      while value is _CLOSED:
        done = stack.pop()[0]
        if not stack:
          return done
        _add(stack[-1], done)
        value = self._after(stack)

  def _after(self, stack):
    """What follows the newest entry of the innermost container: the next value, or _CLOSED."""
    container = stack[-1][0]
    is_array = isinstance(container, list)
    fresh = stack[-1][2]
    stack[-1][2] = False
    self._skip()
    c = self._peek()
    if not fresh:
      if c == ",":
        self.pos += 1
        self._skip()
        c = self._peek()
        if not is_array and c != '"':
          raise _ParseError("name", self.pos)
        if is_array and c in "]},:":
          raise _ParseError("value", self.pos)
      elif c == ("]" if is_array else "}"):
        self.pos += 1
        return _CLOSED
      else:
        raise _ParseError("array" if is_array else "object", self.pos)
    elif c == ("]" if is_array else "}"):
      self.pos += 1
      return _CLOSED
    elif is_array and c in "},:":
      raise _ParseError("value", self.pos)
    elif not is_array and c != '"':
      raise _ParseError("name", self.pos)
    if not is_array:
      stack[-1][1] = self._string()
      self._skip()
      if self._peek() != ":":
        raise _ParseError("colon", self.pos)
      self.pos += 1
      self._skip()
      if self._peek() in "]},:":
        raise _ParseError("value", self.pos)
    return self._scalar_or_open(stack)

  def _scalar_or_open(self, stack):
    c = self._peek()
    if c in "[{":
      self.pos += 1
      stack.append([[] if c == "[" else {}, None, True])
      return _OPEN
    if c == '"':
      return self._string()
    if c in ("t", "f", "n"):
      word = {"t": "true", "f": "false", "n": "null"}[c]
      self._consume(word)
      return {"true": True, "false": False, "null": None}[word]
    return self._number()

  def _consume(self, word: str) -> None:
    """Takes `word`, or fails where it stops matching (rapidjson's Consume chain)."""
    for expected in word:
      if self._peek() != expected:
        raise _ParseError("value", self.pos)
      self.pos += 1

  def _number(self):
    start = self.pos
    minus = self._peek() == "-"
    if minus:
      self.pos += 1
    c = self._peek()
    if c in "NI":
      return self._nan_or_inf(minus)
    if not c.isdigit() or not c.isascii():
      raise _ParseError("value", self.pos)
    match = _NUMBER.match(self.text, start)
    end = match.end()
    if match.group(1) is None and self.text.startswith(".", end):  # "1." has no fraction.
      raise _ParseError("fraction", end + 1)
    if match.group(2) is None and self.text[end:end + 1] in ("e", "E"):
      k = end + 1 + (self.text[end + 1:end + 2] in ("+", "-"))
      raise _ParseError("exponent", k)
    self.pos = end
    literal = match.group(0)
    try:
      return _float(literal) if match.group(1) or match.group(2) else _int(literal)
    except _TooBig:
      raise _ParseError("too_big", start) from None

  def _nan_or_inf(self, minus: bool) -> float:
    if self._peek() == "N":
      self._consume("NaN")
      return math.nan
    self._consume("Inf")
    if self._peek() == "i":
      self._consume("inity")
    return -math.inf if minus else math.inf

  def _string(self) -> str:
    """A string token at the opening quote, escapes decoded."""
    self.pos += 1
    parts = []
    while True:
      end = _PLAIN.match(self.text, self.pos).end()
      parts.append(self.text[self.pos:end])
      self.pos = end
      c = self._peek()
      if c == '"':
        self.pos += 1
        return "".join(parts)
      if c == "\\":
        parts.append(self._escape())
      elif end >= len(self.text) or c == "\0":
        raise _ParseError("quote", self.pos)
      else:
        raise _ParseError("encoding", self.pos)

  def _escape(self) -> str:
    at = self.pos
    c = self.text[at + 1:at + 2]
    if c in _ESCAPES:
      self.pos += 2
      return _ESCAPES[c]
    if c != "u":
      raise _ParseError("escape", at)
    code = self._hex4(at)
    if 0xD800 <= code <= 0xDBFF:
      if self.text[self.pos:self.pos + 2] != "\\u":
        raise _ParseError("surrogate", at)
      low = self._hex4(self.pos)
      if not 0xDC00 <= low <= 0xDFFF:
        raise _ParseError("surrogate", at)
      return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
    if 0xDC00 <= code <= 0xDFFF:
      raise _ParseError("surrogate", at)
    return chr(code)

  def _hex4(self, at: int) -> int:
    digits = self.text[at + 2:at + 6]
    if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
      raise _ParseError("hex", at)
    self.pos = at + 6
    return int(digits, 16)


_OPEN, _CLOSED = object(), object()


def _add(entry: list, value) -> None:
  """Appends `value` to the container of a parser stack entry (under its key for objects)."""
  if isinstance(entry[0], list):
    entry[0].append(value)
  else:
    entry[0][entry[1]] = value


# Writing -----------------------------------------------------------------------

_ESCAPE_RE = re.compile(r'[\x00-\x1f"\\]')
_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"',
          "\\": "\\\\"}


def quote(text: str) -> str:
  """A string as rapidjson's Writer writes it (control characters \\u00XX, upper case)."""
  if not _ESCAPE_RE.search(text):
    return f'"{text}"'
  return '"' + _ESCAPE_RE.sub(lambda m: _SHORT.get(m.group(0), f"\\u{ord(m.group(0)):04X}"),
                              text) + '"'


def double_text(value: float) -> str:
  """rapidjson Writer::Double: shortest digits, Prettify's layout ('1.0', '1e30', '1.5e-7')."""
  if value == 0:
    return "-0.0" if math.copysign(1, value) < 0 else "0.0"
  sign = "-" if value < 0 else ""
  mantissa, _, exponent = repr(abs(value)).partition("e")
  whole, _, frac = mantissa.partition(".")
  digits = (whole + frac.rstrip("0")).lstrip("0") if frac != "0" else whole.lstrip("0")
  point = len(whole) + int(exponent or 0)  # Digits before the decimal point.
  if whole == "0":
    point = -(len(frac) - len(frac.lstrip("0"))) + int(exponent or 0)
  digits = digits.rstrip("0") or "0"
  length, kk = len(digits), point
  k = kk - length
  if 0 <= k and kk <= 21:
    return f"{sign}{digits}{'0' * k}.0"
  if 0 < kk <= 21:
    return f"{sign}{digits[:kk]}.{digits[kk:]}"
  if -6 < kk <= 0:
    return f"{sign}0.{'0' * -kk}{digits}"
  exp = kk - 1
  head = digits if length == 1 else f"{digits[0]}.{digits[1:]}"
  return f"{sign}{head}e{exp}"


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


def scalar_text(value) -> str | None:
  """A parsed JSON leaf as rapidjson writes it; None for NaN and infinities (the Writer
  refuses them, ending a debug string there)."""
  if value is None:
    return "null"
  if value is True:
    return "true"
  if value is False:
    return "false"
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return double_text(value) if math.isfinite(value) else None
  return quote(value)


class PrettyWriter:
  """rapidjson's PrettyWriter (4-space indent) with its kFormatSingleLineArray switch."""

  def __init__(self, limit: int = 0):
    self.out, self.size, self.limit = [], 0, limit
    self._stack = []  # [is_array, values so far]
    self.single_line = False

  def _put(self, text: str) -> None:
    self.out.append(text)
    self.size += len(text)

  def full(self) -> bool:
    """Past `limit` characters (a debug string stops there, as JsonWriterWithLimit)."""
    return bool(self.limit) and self.size >= self.limit

  def _prefix(self) -> None:
    if not self._stack:
      return
    level = self._stack[-1]
    indent = " " * (4 * len(self._stack))
    if level[0]:
      if level[1]:
        self._put(", " if self.single_line else ",")
      if not self.single_line:
        self._put("\n" + indent)
    else:
      if level[1]:
        self._put(",\n" if level[1] % 2 == 0 else ": ")
      else:
        self._put("\n")
      if level[1] % 2 == 0:
        self._put(indent)
    level[1] += 1

  def raw(self, text: str) -> None:
    """One value (a number, true, a quoted string...) or an object key."""
    self._prefix()
    self._put(text)

  def start(self, array: bool) -> None:
    self._prefix()
    self._put("[" if array else "{")
    self._stack.append([array, 0])

  def end(self) -> None:
    array, count = self._stack.pop()
    if count and not (array and self.single_line):
      self._put("\n" + " " * (4 * len(self._stack)))
    self._put("]" if array else "}")

  def leaf_array(self, texts: list) -> None:
    """An array of values in one go (the common innermost dimension)."""
    self._prefix()
    if not texts:
      self._put("[]")
    elif self.single_line:
      self._put("[" + ", ".join(texts) + "]")
    else:
      inner = "\n" + " " * (4 * (len(self._stack) + 1))
      self._put("[" + inner + ("," + inner).join(texts) + "\n" + " " * (4 * len(self._stack))
                + "]")

  def text(self) -> str:
    return "".join(self.out)


def debug_string(value, limit: int = 256) -> str:
  """JsonValueToDebugString: the value as PrettyWriter writes it with single-line arrays,
  stopping once 256 characters are out or at a NaN or infinity (no recursion)."""
  writer = PrettyWriter(limit)
  writer.single_line = True
  pending = [("value", value)]
  while pending:
    kind, item = pending.pop()
    if writer.full():
      break
    if kind == "end":
      writer.end()
    elif kind == "key":
      writer.raw(quote(item))
    elif isinstance(item, (list, dict)):
      writer.start(isinstance(item, list))
      pending.append(("end", None))
      entries = item.items() if isinstance(item, dict) else [(None, v) for v in item]
      for key, v in reversed(list(entries)):
        pending.append(("value", v))
        if key is not None:
          pending.append(("key", key))
    else:
      text = scalar_text(item)
      if text is None:
        writer._prefix()  # rapidjson writes the separator, then refuses the number.
        break
      writer.raw(text)
  return writer.text()
