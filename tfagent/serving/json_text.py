"""JSON as TF Serving reads and writes it (util/json_tensor.cc), on python-rapidjson: a binding of
the C++ RapidJSON that TF Serving links, so parse verdicts, messages and byte offsets are
RapidJSON's own, and answers are laid out by its PrettyWriter. Floats are TF Serving's text
(WriteDecimal), passed as raw values; strings are bytes read as latin-1, so every byte passes
through as TF Serving writes a string tensor's bytes, and the answer is encoded back."""

import base64
import math
import re
import sys

import numpy as np
import rapidjson

from tfagent.serving.tensors import dtype_name, invalid_argument

# python-rapidjson's reader recurses and stops at Python's recursion limit; TF Serving's has
# none. 10,000 levels use under 1 MB of an 8 MB thread stack (1,000,000 crashed).
MAX_DEPTH = 10_000
sys.setrecursionlimit(max(sys.getrecursionlimit(), MAX_DEPTH))
_PARSE_ERROR = re.compile(r"Parse error at offset (\d+): (.*)", re.S)
_PRETTY, _SINGLE_LINE = rapidjson.WM_PRETTY, rapidjson.WM_PRETTY | rapidjson.WM_SINGLE_LINE_ARRAY


def _parse_error(message: str, offset: int):
  return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def loads(body: bytes):
  """The document of `body`, or TF Serving's "JSON Parse error: ..."; as its ParseJson, NaN and
  Infinity are accepted, text after the document ignored, a UTF-8 byte-order mark skipped."""
  if not body:
    raise invalid_argument("JSON Parse error: The document is empty")
  start = 3 if body.startswith(b"\xef\xbb\xbf") else 0
  view = body[start:] if start else body
  try:
    return rapidjson.loads(view, number_mode=rapidjson.NM_NAN)
  except rapidjson.JSONDecodeError as e:
    offset, message = _PARSE_ERROR.fullmatch(str(e)).groups()
    if message == "The document root must not be followed by other values.":
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
    return rapidjson.dumps(value, indent=4, write_mode=_SINGLE_LINE, ensure_ascii=False)[:256]
  except (RecursionError, UnicodeEncodeError):
    return rapidjson.dumps(str(value)[:256])[:256]


def float_texts(values: np.ndarray) -> list:
  """WriteDecimal: '%g' if it reads back as the same float, else 9 (float) or 17 (double)
  significant digits; '.0' on whole numbers; NaN, Infinity, -Infinity."""
  kind, digits = (np.float32, 9) if values.dtype == np.float32 else (np.float64, 17)
  out = []
  for value in values.ravel().tolist():
    if math.isnan(value) or math.isinf(value):
      out.append("NaN" if math.isnan(value) else "-Infinity" if value < 0 else "Infinity")
      continue
    text = "%g" % value
    if kind(text) != kind(value):
      text = "%.*g" % (digits, value)
    out.append(text if "." in text or "e" in text else text + ".0")
  return out


def _latin1(text: str) -> str:
  """A str as the bytes TF Serving writes (UTF-8, surrogate escapes as their bytes)."""
  return text.encode("utf-8", "surrogateescape").decode("latin-1")


def _values(name: str, array: np.ndarray):
  """An output as nested lists of JSON values (AddTensorValues); `*_bytes` as {"b64": ...}."""
  if array.dtype.kind in "biu":
    return array.tolist()
  if array.dtype == object and name.endswith("_bytes"):
    flat = [{"b64": base64.b64encode(v).decode()} for v in array.ravel()]
  elif array.dtype == object or array.dtype.kind == "S":
    flat = [v.decode("latin-1") for v in array.ravel()]
  elif array.dtype in (np.float32, np.float64):
    flat = [rapidjson.RawJSON(text) for text in float_texts(array)]
  else:
    raise invalid_argument(
        f"Failed to write JSON value for tensor type: {dtype_name(array.dtype)}")
  return np.array(flat, dtype=object).reshape(array.shape).tolist()


def _dumps(value, depth: int = 0, single_line: bool = False) -> str:
  """`value` as the PrettyWriter writes it `depth` levels deep (single-line arrays or not)."""
  text = rapidjson.dumps(value, indent=4, ensure_ascii=False,
                         write_mode=_SINGLE_LINE if single_line else _PRETTY)
  return text.replace("\n", "\n" + "    " * depth) if depth else text


def _rows(key: str, items: list, separator: str) -> bytes:
  """{key: [items]} with the array closed in default mode (TF Serving switches per row)."""
  inner = separator.join(items) + "\n    ]" if items else "]"
  return ('{\n    "%s": [%s\n}' % (key, inner)).encode("latin-1")


def predict_response(outputs: dict, fmt: str) -> bytes:
  """MakeJsonFromTensors: `predictions` (row format) or `outputs` (columnar)."""
  if not outputs:
    raise invalid_argument("Cannot convert empty tensor map to JSON")
  values = {_latin1(name): _values(name, outputs[name]) for name in sorted(outputs)}
  if fmt == "columnar":
    body = values if len(values) > 1 else next(iter(values.values()))
    return _dumps({"outputs": body}).encode("latin-1")
  rows = range(_batch_size(outputs))
  if len(values) == 1:  # Each row's value written in single-line mode.
    (column,) = values.values()
    return _rows("predictions", [_dumps(column[i], 2, True) for i in rows], ", ")
  objects = ["\n        {" + ",".join(f"\n            {_dumps(key)}: {_dumps(v[i], 3, True)}"
                                      for key, v in values.items()) + "\n        }"
             for i in rows]  # Each object begun before the switch to single-line arrays.
  return _rows("predictions", objects, ",")


def _batch_size(outputs: dict) -> int:
  """MakeRowFormatJsonFromTensors' check: every output has the same first dimension."""
  batch = None
  for name in sorted(outputs):
    array = outputs[name]
    if array.ndim == 0:
      raise invalid_argument(f"Tensor name: {name} has no shape information ")
    if batch is not None and array.shape[0] != batch:
      raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                             f"{array.shape[0]} expecting: {batch}")
    batch = array.shape[0]
  return batch


def classify_response(result) -> bytes:
  """MakeJsonFromClassificationResult: a row an example, a [label, score] pair a class."""
  if not result.classifications:
    raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
  rows = []
  for row in result.classifications:
    scores = float_texts(np.array([c.score for c in row.classes], np.float32))
    rows.append(_dumps([[_latin1(c.label), rapidjson.RawJSON(s)]
                        for c, s in zip(row.classes, scores)], 2, True))
  return _rows("results", rows, ", ")


def regress_response(result) -> bytes:
  """MakeJsonFromRegressionResult: one single-line array of values."""
  if not result.regressions:
    raise invalid_argument("Cannot convert empty RegressionResults to JSON")
  texts = float_texts(np.array([r.value for r in result.regressions], np.float32))
  return ('{\n    "results": [%s]\n}' % ", ".join(texts)).encode()


def error_response(message: str) -> bytes:
  """MakeJsonFromStatus."""
  return _dumps({"error": _latin1(message)}).encode("latin-1")
