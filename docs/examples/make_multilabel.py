"""Writes a generated multi-label corpus: 5 topics with a known co-occurrence.

  python docs/examples/make_multilabel.py docs/examples/multilabel.csv [N]

Each record has a primary topic (uniform); its partner topic (PARTNERS) joins it with
probability 0.5, and one other topic with probability 0.15. The text holds two
words of each of its topics, among three filler words, shuffled. Labels are joined by
"|" (the --label_delimiter default). tests/test_multilabel.py trains on the same corpus.
"""

import csv
import random
import sys

TOPICS = {
    "sports": ["goal", "match", "coach", "league", "striker", "stadium"],
    "politics": ["senate", "ballot", "minister", "election", "policy", "parliament"],
    "tech": ["software", "chip", "startup", "algorithm", "server", "robot"],
    "health": ["doctor", "vaccine", "clinic", "fitness", "diet", "injury"],
    "money": ["budget", "tax", "market", "investor", "profit", "bank"],
}
# The known co-occurrence: each topic's partner joins it half of the time.
PARTNERS = {"sports": "health", "politics": "money", "tech": "money", "health": "sports",
            "money": "politics"}
FILLER = ["the", "a", "today", "report", "new", "says", "after", "week", "city", "people",
          "big", "story", "more", "update", "local", "about"]


def records(n: int, seed: int = 0) -> list:
  """`n` `(text, [labels])` pairs; every text unique (a running number ends it)."""
  rng = random.Random(seed)
  names = sorted(TOPICS)
  out = []
  for i in range(n):
    labels = {rng.choice(names)}
    first = next(iter(labels))
    if rng.random() < 0.5:
      labels.add(PARTNERS[first])
    if rng.random() < 0.15:
      labels.add(rng.choice(names))
    words = [w for t in sorted(labels) for w in rng.sample(TOPICS[t], 2)]
    words += rng.sample(FILLER, 3)
    rng.shuffle(words)
    out.append((" ".join(words) + f" n{i}", sorted(labels)))
  return out


def write_csv(path: str, n: int, seed: int = 0, delimiter: str = "|") -> str:
  """Writes `records(n, seed)` as a csv with columns text and labels."""
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "labels"])
    for text, labels in records(n, seed):
      writer.writerow([text, delimiter.join(labels)])
  return path


if __name__ == "__main__":
  write_csv(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
