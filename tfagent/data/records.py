"""Record readers for user files: CSV/TSV, JSON Lines and one-folder-per-class.

Each reader yields, in file order, either a `Raw` record or a `BadRecord`
that says where it is and what was expected; the caller decides whether a bad
record is an error or a counted skip (see `tfagent.data.validate`). Both, and
the checks of each field, are `tfagent.data.fields`.
"""

import codecs
import contextlib
import csv
import dataclasses
import gzip
import io
import json
import os
import zlib

import tensorflow as tf

from tfagent.data.fields import BadRecord, Raw, canonical_label, check_text, with_group, with_pair
from tfagent.errors import DataError

# Python's csv default (128 KiB a field) rejects long documents; 16 MiB does not.
CSV_FIELD_LIMIT = 16 * 2**20


def open_binary(path: str):
  """Opens a local or remote (gs://, s3://) file for reading; `.gz` is decompressed."""
  try:
    # Local files through open(): the same bytes, and faster than GFile for text parsing.
    f = tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")
  except (OSError, tf.errors.OpError) as e:
    raise DataError(f"{path}: cannot open ({getattr(e, 'strerror', None) or e}); "
                    "check the path given in --dataset or --test_path.") from None
  return gzip.GzipFile(fileobj=f, mode="rb") if path.endswith(".gz") else f


@contextlib.contextmanager
def reading(path: str):
  """Turns a broken `.gz` (or a read that fails midway) into one DataError naming the file."""
  try:
    yield
  except EOFError:
    raise DataError(f"{path}: the gzip data ends early (a truncated or interrupted "
                    "download?); download or compress the file again.") from None
  except (gzip.BadGzipFile, zlib.error) as e:
    raise DataError(f"{path}: not valid gzip data ({e}); a file named .gz must be "
                    "gzip-compressed: compress it, or drop .gz from its name.") from None
  except OSError as e:
    raise DataError(f"{path}: read failed ({e.strerror or e}); check the file.") from None


def read_label(where: str, fields: tuple, value, label_list=None):
  """The label field of a record as canonical_label reads it (a list's with `label_list`);
  "" where the record has no label field."""
  if len(fields) < 2:
    return ""
  if label_list is not None:
    return label_list.parse(where, fields[1], value)
  return canonical_label(where, fields[1], value)


def _header_index(path: str, header: list, fields: tuple) -> list:
  """Maps field names to column indices; a missing column names the flag to fix."""
  index = []
  for name, flag in zip(fields, ("--text_field", "--label_field")):
    index.append(_column(path, header, name, flag))
  return index


def _column(path: str, header: list, name: str, flag: str):
  """The index of column `name` (flag `flag`); None for no name; a missing one is an error."""
  if not name:
    return None
  if name not in header:
    raise DataError(f"{path}:1: no column {name!r} ({flag}); the header has "
                    f"{', '.join(map(repr, header))}.")
  if header.count(name) > 1:
    raise DataError(f"{path}:1: the header names column {name!r} ({flag}) "
                    f"{header.count(name)} times; which one holds it? Rename the others.")
  return header.index(name)


def read_delimited(path: str, delimiter: str, fields: tuple, group: str = "",
                   label_list=None, pair: str = ""):
  """Yields `Raw`/`BadRecord` for each row of a CSV/TSV file with a header row.

  `fields`: the text column and the label column, or the text column alone (the
  records of unlabelled texts then carry the label ""). `group`: the column of
  each record's group (--group_field), or "" for none. `label_list` (multilabel:
  data.multilabel.LabelList) reads the label field as a list of labels. `pair`:
  the column of each record's second text (--text_pair_field), or "" for none.
  """
  csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
  with open_binary(path) as binary, reading(path):
    # utf-8-sig drops the byte-order mark Excel's "CSV UTF-8" writes; surrogateescape
    # keeps bad bytes so that the row can be reported, not lost.
    f = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(f, delimiter=delimiter, strict=True)
    try:
      header = next(reader, None)
      while header == []:  # Blank lines before the header.
        header = next(reader, None)
    except csv.Error as e:
      raise DataError(f"{path}:{reader.line_num}: the header row cannot be read ({e}); "
                      f"expected the column names, e.g. {delimiter.join(fields)}.") from None
    if not header:
      raise DataError(f"{path}: empty file; expected a header row naming the "
                      f"columns, e.g. {delimiter.join(fields)}.")
    if "\0" in "".join(header):
      raise DataError(f"{path}:1: the header holds NUL bytes: the file looks like UTF-16 "
                      "(or binary); re-encode it as UTF-8.")
    index = _header_index(path, header, fields)
    group_column = _column(path, header, group, "--group_field")
    pair_column = _column(path, header, pair, "--text_pair_field")
    for record in _rows(path, reader, header, index, fields, label_list):
      if isinstance(record, _Row):
        value = record.row[group_column] if group_column is not None else None
        second = record.row[pair_column] if pair_column is not None else None
        record = with_pair(with_group(record.raw, group, value), pair, second)
      yield record


@dataclasses.dataclass(frozen=True)
class _Row:
  """A usable record with the row it came from (its group column is read from it)."""
  raw: Raw
  row: list


def _rows(path: str, reader, header: list, index: list, fields: tuple, label_list=None):
  """Yields a record per row after the header; a quote left open is always an error."""
  start = reader.line_num + 1
  while True:
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      if reader.line_num > start or "end of data" in str(e):
        raise _open_quote_error(path, start, reader.line_num, e) from None
      yield BadRecord("malformed", f"{path}:{start}", f"malformed line ({e}); expected "
                      f"{len(header)} fields separated by {reader.dialect.delimiter!r}.")
      start = reader.line_num + 1
      continue
    where, start = f"{path}:{start}", reader.line_num + 1
    if row:  # A blank line is no record.
      yield _row_record(where, row, header, index, fields, label_list)


def _open_quote_error(path: str, line: int, last: int, error) -> DataError:
  """A quoted field that swallowed the lines after it: they cannot be counted, so never skipped."""
  reach = "the end of the file" if "end of data" in str(error) else f"line {last}"
  return DataError(f"{path}:{line}: a quoted field opens on this line and is not closed "
                   f"properly before {reach} ({error}); the lines it swallowed cannot be "
                   "counted as records, so this stops the run even with "
                   "--on_bad_record=skip. Close the quote; a quote inside a quoted field "
                   'is written twice ("").')


def _row_record(where: str, row: list, header: list, index: tuple, fields: tuple,
                label_list=None):
  """Turns one CSV row into a Raw or BadRecord."""
  if len(row) != len(header):
    return BadRecord("malformed", where, f"malformed line: {len(row)} fields where "
                     f"the header has {len(header)}; quote fields that contain the "
                     "delimiter.")
  if [row[0].lstrip("\ufeff"), *row[1:]] == header:  # `cat a.csv b.csv`: a class "label".
    return BadRecord("malformed", where, "the header row again (files joined with their "
                     "headers?); remove it.")
  text = row[index[0]]
  bad = check_text(where, fields[0], text)
  label = read_label(where, fields, row[index[1]] if len(fields) > 1 else None, label_list)
  if bad or isinstance(label, BadRecord):
    return bad or label
  return _Row(Raw(where, text, label), row)


def read_jsonl(path: str, fields: tuple, group: str = "", label_list=None, pair: str = ""):
  """Yields `Raw`/`BadRecord` for each line of a JSON Lines file (one object a line).

  `fields`: the text key and the label key, or the text key alone; `group`,
  `label_list` and `pair` as read_delimited's.
  """
  with open_binary(path) as f, reading(path):
    for lineno, raw in enumerate(f, start=1):
      where = f"{path}:{lineno}"
      line = decode_line(raw, lineno, where)
      if isinstance(line, BadRecord):
        yield line
      elif line.strip():  # A blank line is no record.
        yield _json_record(where, line, fields, group, label_list, pair)


def decode_line(raw: bytes, lineno: int, where: str):
  """A line of bytes as text, a byte-order mark before line 1 dropped; or a BadRecord."""
  if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
    raw = raw[len(codecs.BOM_UTF8):]
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return BadRecord("invalid_utf8", where, f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); "
                     "re-encode the file as UTF-8.")


def _json_record(where: str, line: str, fields: tuple, group: str = "", label_list=None,
                 pair: str = ""):
  """Turns one JSON line into a Raw or BadRecord."""
  try:
    obj = json.loads(line.rstrip("\r\n"))
  except json.JSONDecodeError as e:
    return BadRecord("malformed", where, f"malformed line ({e.msg} at column "
                     f"{e.colno}); expected one JSON object per line.")
  if not isinstance(obj, dict):
    return BadRecord("malformed", where, f"malformed line: a JSON "
                     f"{type(obj).__name__}, not an object; expected one JSON object "
                     "per line.")
  for field in fields:
    if field in obj and obj[field] is None:
      return BadRecord("missing_field", where, f"field {field!r} is null; expected "
                       f"{'a text' if field == fields[0] else 'a label'} in every record.")
  bad = check_text(where, fields[0], obj.get(fields[0]))
  label = read_label(where, fields, obj.get(fields[1]) if len(fields) > 1 else None,
                     label_list)
  if bad or isinstance(label, BadRecord):
    return bad or label
  record = with_group(Raw(where, obj[fields[0]], label), group, obj.get(group))
  return with_pair(record, pair, obj.get(pair))


def class_folders(root: str) -> list:
  """Returns the sorted sub-folder names of `root` (one per class)."""
  if not tf.io.gfile.isdir(root):
    raise DataError(f"{root}: not a folder; dir:PATH needs PATH/train/CLASS/*.txt "
                    "(and optionally PATH/test/CLASS/*.txt).")
  return sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root)
                if tf.io.gfile.isdir(os.path.join(root, d)) and not d.startswith("."))


def files_under(folder: str) -> list:
  """Files under `folder` at any depth but hidden ones: its own (sorted), then its subfolders'.

  As keras.utils.text_dataset_from_directory, which walks class folders
  recursively (it reads only `.txt`; here every file is one text).
  """
  names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(folder) if not n.startswith("."))
  paths = [os.path.join(folder, n) for n in names]
  subfolders = [p for p in paths if tf.io.gfile.isdir(p)]
  files = sorted(set(paths) - set(subfolders))
  for sub in subfolders:
    files.extend(files_under(sub))
  return files


def class_files(root: str, classes: list) -> dict:
  """CLASS -> the files under `root/CLASS`, recursively; a class with no folder has none."""
  return {name: files_under(os.path.join(root, name))
          if tf.io.gfile.isdir(os.path.join(root, name)) else [] for name in classes}


def read_class_files(files_by_class: dict):
  """Yields a `Raw`/`BadRecord` per file of `class_files`, one text a file."""
  for name, paths in files_by_class.items():
    for path in paths:
      with open_binary(path) as f, reading(path):
        data = f.read()
      skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
      try:
        text = data[skip:].decode("utf-8")  # A byte-order mark is not part of the text.
      except UnicodeDecodeError as e:
        at = skip + e.start
        yield BadRecord("invalid_utf8", path, f"not valid UTF-8 (byte "
                        f"0x{data[at]:02x} at offset {at}); re-encode the file as UTF-8.")
        continue
      yield check_text(path, "text", text) or Raw(path, text, name)
