"""--group_field: records are split by a seeded hash of their group, so no group spans two splits.

The split of a record (validation carved from train, the 80/10/10 split without an
official test, the cross-validation folds) follows the hash of its group instead of
its text: sha256 of the seed and the group, as for texts, so the split is the same
on every run and machine and does not depend on the order of the file. The text's
own hash still finds copies (duplicates, train/test overlap, --dedup).
"""

from absl import logging

from tfagent.data.sources import SPLITS


class GroupTally:
  """The distinct groups of each split, as 8-byte keys of their hash (small beside the text)."""

  def __init__(self):
    self.keys = {split: set() for split in SPLITS}

  def add(self, split: str, record, key: int) -> None:
    """Counts the group of `record` (its split key `key`) in `split`; no group, nothing."""
    if record.group is not None:
      self.keys[split].add(key)

  def report(self, field: str, has_test: bool) -> dict:
    """`groups` of data_report.json: groups per split (and those shared with an official test)."""
    out = {"field": field, "per_split": {s: len(keys) for s, keys in self.keys.items()}}
    if has_test:  # Not ours to split: the official test file may share groups with train.
      carved = self.keys["train"] | self.keys["validation"]
      out["shared_with_official_test"] = len(carved & self.keys["test"])
    logging.info("--group_field=%s: groups per split %s%s.", field, out["per_split"],
                 f", {out['shared_with_official_test']} of them also in the official test"
                 if has_test else "")
    return out
