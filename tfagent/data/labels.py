"""Labels as written -> class ids: how the classes are read, and spellings that clash.

Integer ids, integers read as names, class names, or the names `--class_names`
fixes; `--normalize_labels` merges spellings that differ only in case or spacing,
and without it such spellings are an error rather than two classes.
"""

import collections
import dataclasses
import decimal
import re
import unicodedata

from tfagent.data.fields import BadRecord, Raw
from tfagent.errors import ConfigError, DataError

MAX_EXAMPLES_SHOWN = 5  # Clashing spellings (and bad-record messages) shown per kind.
INT_ID = re.compile(r"0|[1-9][0-9]*")  # An id as written: ASCII digits, no sign, no leading 0.
INTEGER = re.compile(r"-?[0-9]+")  # ASCII only, so int() accepts it ("²" is no number).
# How classes were read from the labels, as data_report.json names it.
READINGS = {
    "ids": "integer ids, exactly 0..C-1",
    "numeric_names": "integers that are not exactly 0..C-1, read as class names "
                     "sorted numerically",
    "names": "class names, sorted",
    "fixed": "class names fixed by the source or --class_names, in that order",
}


NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)")


def fold(label: str) -> str:
  """The form `--normalize_labels` compares: Unicode NFKC, format characters (zero-width
  spaces) dropped, spacing collapsed, case folded, a number written one way (1, 01, +1, 1.0
  are 1)."""
  text = "".join(c for c in unicodedata.normalize("NFKC", label)
                 if unicodedata.category(c) != "Cf")
  text = " ".join(text.split()).casefold()
  if len(text) <= 64 and NUMBER.fullmatch(text):  # Longer: no class id; int() would refuse.
    number = decimal.Decimal(text)
    text = (str(int(number)) if number == number.to_integral_value()
            else format(number.normalize(), "f"))
  return text


class LabelMap:
  """Maps labels as written (class names or integer ids) to ids 0..C-1."""

  def __init__(self, class_names, reading: str = "fixed", normalize: bool = False,
               ids: bool = True):
    self.class_names = tuple(class_names)
    self.reading, self.normalize = reading, normalize
    self._index = {}
    for i, name in enumerate(self.class_names):
      if self._key(name) in self._index:
        raise ConfigError(f"class names {self.class_names[self._index[self._key(name)]]!r} "
                          f"and {name!r} are one class under --normalize_labels; give it once.")
      self._index[self._key(name)] = i
    # Fixed names also accept ids 0..C-1, unless a name is itself an integer, or `ids` is off
    # (labels that are always names: dir: folders).
    self.takes_ids = ids and reading == "fixed" and not any(
        INTEGER.fullmatch(n) for n in class_names)

  def names_only(self) -> "LabelMap":
    """This map, taking no ids."""
    return LabelMap(self.class_names, self.reading, self.normalize, ids=False)

  def _key(self, label: str) -> str:
    return fold(label) if self.normalize else label

  @classmethod
  def learn(cls, labels, normalize: bool = False) -> "LabelMap":
    """Classes from training labels: ids if exactly 0..C-1, else names (integers numerically)."""
    labels = sorted({fold(label) if normalize else label for label in labels})
    if labels and all(INTEGER.fullmatch(label) for label in labels):
      labels.sort(key=int)
      ids = all(INT_ID.fullmatch(label) for label in labels) and \
          [int(label) for label in labels] == list(range(len(labels)))
      return cls(labels, "ids" if ids else "numeric_names", normalize)
    return cls(labels, "names", normalize)

  def id_of(self, label: str):
    """Returns the class id of `label` (a tuple of ids for a tuple of labels: multilabel),
    or None if it is (or holds) no known class."""
    if isinstance(label, tuple):
      ids = tuple(self.id_of(one) for one in label)
      return None if None in ids else ids
    label_id = self._index.get(self._key(label))
    if label_id is None and self.takes_ids and INT_ID.fullmatch(label) \
        and int(label) < len(self.class_names):
      return int(label)
    return label_id

  def unknown(self, record: Raw, field: str) -> BadRecord:
    """The bad record for a label that is no class; names a near spelling if one exists."""
    if isinstance(record.label, tuple):  # Multilabel: the first unknown label of the list.
      bad = next(one for one in record.label if self.id_of(one) is None)
      one = self.unknown(dataclasses.replace(record, label=bad), field)
      return BadRecord(one.reason, one.where, f"in the label list {list(record.label)}: "
                       f"{one.message}")
    names = ", ".join(self.class_names)
    ids = f" (or an id 0..{len(self.class_names) - 1})" if self.takes_ids else ""
    near = [n for n in self.class_names if fold(n) == fold(record.label)]
    hint = (f" It differs from {near[0]!r} only in case or spacing: pass "
            "--normalize_labels to merge such spellings." if near else "")
    return BadRecord("unknown_label", record.where, f"unknown label {record.label!r} "
                     f"in field {field!r}; expected one of {names}{ids}.{hint}")


def given_class_names(data_cfg) -> tuple:
  """`--class_names` as a tuple of names; empty when not given. From Python a tuple is taken
  as it is, so that names holding commas (an export's classes) are not split."""
  if isinstance(data_cfg.class_names, (tuple, list)):
    return tuple(data_cfg.class_names)
  return tuple(n.strip() for n in data_cfg.class_names.split(",") if n.strip())


def fixed_labels(data_cfg):
  """A LabelMap from `--class_names`, or None to learn the classes from train."""
  names = given_class_names(data_cfg)
  return LabelMap(list(names), "fixed", data_cfg.normalize_labels) if names else None


def check_spellings(counts: dict, what: str, unit: str = "records", firsts: dict = None):
  """Raises when labels differ only in case, spacing, Unicode form or number format ("POS",
  "pos"; "1", "1.0"): two classes by accident.

  Args:
    counts: label as written -> how many records (or files) carry it.
    what: where the labels come from, for the message (source and field).
    unit: what `counts` counts.
    firsts: label -> where it first occurs, shown when given.
  """
  groups = collections.defaultdict(list)
  for label in counts:
    groups[fold(label)].append(label)
  clashes = [sorted(g) for g in groups.values() if len(g) > 1]
  if not clashes:
    return

  def one(label):
    first = f", first at {firsts[label]}" if firsts and label in firsts else ""
    n = counts[label]
    return f"{label!r} ({n} {unit if n != 1 else unit[:-1]}{first})"
  shown = "; ".join(" and ".join(map(one, g)) for g in clashes[:MAX_EXAMPLES_SHOWN])
  raise DataError(f"{what}: labels {shown} differ only in case or spacing (or Unicode form, "
                  "invisible characters, or how a number is written), so they would train as "
                  "separate classes. Write each class one way, or pass --normalize_labels to "
                  "merge them (spacing collapsed, case folded, numbers and Unicode made one).")
