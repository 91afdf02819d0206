"""A record as read (`Raw`) or refused (`BadRecord`), and the checks its fields pass.

Every reader (tfagent.data.records, the TFDS source, the embedded corpus) builds
its records with these, so a text, label, group or second text is accepted or
refused, with the same message, whatever the file kind.
"""

import dataclasses

REASONS = ("empty_text", "missing_field", "unknown_label", "malformed", "invalid_utf8",
           "empty_label_list", "duplicate_label")  # The last two: --task=multilabel only.


@dataclasses.dataclass(frozen=True)
class Raw:
  """A readable record: its place, its text and its label as written."""
  where: str  # "path:line", "path" or "source record N".
  text: str
  label: str  # Class name or integer id, as text; a tuple of them under --task=multilabel.
  group: str = None  # With --group_field: the record's group, which picks its split.
  text_pair: str = None  # With --text_pair_field: the record's second text.


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """A record that cannot be used; `message` names place, field and what was expected."""
  reason: str  # One of REASONS.
  where: str
  message: str

  def __str__(self) -> str:
    return f"{self.where}: {self.message}"


def _utf8_error(where: str, field: str, value: str):
  """Returns a BadRecord if `value` holds bytes that were not valid UTF-8."""
  try:
    value.encode("utf-8")
    return None
  except UnicodeEncodeError as e:
    byte = ord(value[e.start]) - 0xDC00  # surrogateescape keeps the raw byte.
    shown = f"byte 0x{byte:02x}" if 0 <= byte < 256 else "a lone surrogate"
    return BadRecord("invalid_utf8", where, f"not valid UTF-8 ({shown} in field "
                     f"{field!r}); re-encode the file as UTF-8.")


def a_or_an(word: str) -> str:
  """`word` with its indefinite article: "an int", "a list"."""
  return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def check_text(where: str, field: str, text) -> BadRecord | None:
  """Checks that a text is a non-blank, valid UTF-8 string."""
  if text is None:
    return BadRecord("missing_field", where, f"missing field {field!r}; expected "
                     "a text in every record.")
  if not isinstance(text, str):
    return BadRecord("malformed", where, f"field {field!r} is "
                     f"{a_or_an(type(text).__name__)}; expected a string.")
  bad = _utf8_error(where, field, text)
  if bad:
    return bad
  if "\0" in text:
    return BadRecord("malformed", where, f"field {field!r} holds a NUL character "
                     f"(at {text.index(chr(0))}); text never does: is the file UTF-16 "
                     "or binary? Re-encode it as UTF-8 text.")
  if not text.strip():
    return BadRecord("empty_text", where, f"empty text in field {field!r}; "
                     "expected non-blank text.")
  return None


def canonical_label(where: str, field: str, label):
  """Returns the label as text (ids as decimal) or a BadRecord."""
  if label is None or (isinstance(label, str) and not label.strip()):
    return BadRecord("missing_field", where, f"missing field {field!r}; expected "
                     "a label in every record.")
  if isinstance(label, list):
    return BadRecord("unknown_label", where, f"label {label!r} in field {field!r} is a list; "
                     "lists of labels need --task=multilabel.")
  if isinstance(label, bool) or not isinstance(label, (str, int)):
    return BadRecord("unknown_label", where, f"label {label!r} in field {field!r} "
                     "is neither a class name nor an integer id.")
  if isinstance(label, int):
    return str(label)
  return _utf8_error(where, field, label) or label.strip()


def with_group(record, field: str, value):
  """`record` with its group from `value` (field `field`); an empty group is a BadRecord.

  Without a field, `record` as it is. A group is a non-blank string or an integer
  (a JSON id); records without one cannot be placed, so they are bad records.
  """
  if not field or isinstance(record, BadRecord):
    return record
  if isinstance(value, int) and not isinstance(value, bool):
    value = str(value)
  if not isinstance(value, str):
    shown = "missing" if value is None else f"{type(value).__name__} {value!r}"
    return BadRecord("missing_field" if value is None else "malformed", record.where,
                     f"group field {field!r} (--group_field) is {shown}; expected a non-blank "
                     "group (a string or an integer id) in every record.")
  if not value.strip():
    return BadRecord("missing_field", record.where, f"group field {field!r} (--group_field) "
                     f"is empty ({value!r}); expected a non-blank group (a string or an "
                     "integer id) in every record.")
  return dataclasses.replace(record, group=value.strip())


def with_pair(record, field: str, value):
  """`record` with its second text from `value` (field `field`, --text_pair_field); a
  missing, blank or malformed one is a BadRecord (check_text's). Without a field, `record`."""
  if not field or isinstance(record, BadRecord):
    return record
  return check_text(record.where, field, value) or dataclasses.replace(record, text_pair=value)
