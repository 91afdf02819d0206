"""Writes a generated 95/5 imbalanced corpus: a rare class that a cue word often marks.

  python docs/examples/make_imbalanced.py docs/examples/imbalanced.csv [N_COMMON N_RARE]

Each text is 5 filler words, plus "cue" in 60 % of rare texts and 10 % of common ones. At
95/5 a cue text is still more likely common (0.24 rare), so an unweighted model predicts
common everywhere; with --class_weight=balanced a cue text is likely rare (0.86).
tests/test_imbalance.py trains on the same corpus.
"""

import csv
import random
import sys

FILLER = [f"w{i}" for i in range(40)]


def records(n_common: int, n_rare: int, seed: int = 0) -> list:
  """`(text, label)` rows, shuffled; every text unique (a running number ends it)."""
  rng = random.Random(seed)
  rows = []
  for label, n, p_cue in (("common", n_common, 0.1), ("rare", n_rare, 0.6)):
    for _ in range(n):
      words = rng.sample(FILLER, 5) + (["cue"] if rng.random() < p_cue else [])
      rng.shuffle(words)
      rows.append((" ".join(words) + f" #{seed}-{len(rows)}", label))  # Unique, label-free.
  rng.shuffle(rows)
  return rows


def write_csv(path: str, n_common: int, n_rare: int, seed: int = 0) -> str:
  """Writes `records(n_common, n_rare, seed)` as a csv with columns text and label."""
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerows(records(n_common, n_rare, seed))
  return path


if __name__ == "__main__":
  counts = [int(n) for n in sys.argv[2:4]] or [1900, 100]
  write_csv(sys.argv[1], *counts)
