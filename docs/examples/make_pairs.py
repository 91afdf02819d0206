"""Writes a generated sentence-pair corpus: do the two texts share a word?

  python docs/examples/make_pairs.py docs/examples/pairs.csv [N]

Each text is WORDS_A_TEXT distinct words of WORDS. A "disjoint" pair's texts share no
word; a "shared" pair's second text has one word of the first put in place of one of its
own. Either text alone is a uniform random set of words whatever the label, so a model
that reads one text stays at chance (half, the classes being balanced), and only one
that compares the two can tell. tests/test_pairs.py trains on the same corpus.
"""

import csv
import random
import sys

WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "candle", "garden", "rocket",
         "violin", "forest", "silver"]
WORDS_A_TEXT = 3
LABELS = ("disjoint", "shared")


def pair(rng: random.Random, shared: bool, words: list, k: int) -> tuple:
  """`(premise, hypothesis)`: `k` distinct `words` each, one word in common if `shared`."""
  premise = rng.sample(words, k)
  hypothesis = rng.sample([w for w in words if w not in premise], k)
  if shared:
    hypothesis[rng.randrange(k)] = rng.choice(premise)
  return " ".join(premise), " ".join(hypothesis)


def records(n: int, seed: int = 0, words: list = None, k: int = WORDS_A_TEXT) -> list:
  """`n` `(premise, hypothesis, label)` rows of `k` of `words` (default WORDS) a text, the
  labels alternating; no pair twice."""
  rng, seen, out = random.Random(seed), set(), []
  while len(out) < n:
    label = LABELS[len(out) % 2]
    texts = pair(rng, label == "shared", words or WORDS, k)
    if texts not in seen:
      seen.add(texts)
      out.append((*texts, label))
  return out


def write_csv(path: str, n: int, seed: int = 0, **kwargs) -> str:
  """Writes `records(n, seed, **kwargs)` as a csv with columns premise, hypothesis and label."""
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["premise", "hypothesis", "label"])
    writer.writerows(records(n, seed, **kwargs))
  return path


if __name__ == "__main__":
  write_csv(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
