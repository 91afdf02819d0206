"""--group_field: splits and folds by a seeded hash of the group, never sharing a group."""

import dataclasses
import json
import random
import re

import pytest

import conftest
from tfagent import config, data
from tfagent.errors import ConfigError, DataError

GROUPS = 60  # Planted groups, 6 records each: too few groups per split to pass by chance.


def planted_rows(seed: int = 0) -> list:
  """`(text, label, group)` rows: every text unique, 6 records for each of GROUPS groups."""
  rng = random.Random(seed)
  return [(f"{rng.choice(['good', 'fine', 'bad', 'poor'])} review {g}-{i}",
           rng.choice(["pos", "neg"]), f"movie{g}") for g in range(GROUPS) for i in range(6)]


def write_csv(path, rows, header=("text", "label", "movie")) -> str:
  return conftest.write_csv(path, rows, header)


def group_sets(splits, rows) -> dict:
  """split -> the groups of its texts (texts are unique, so each names its row)."""
  group_of = {text: group for text, _, group in rows}
  return {name: {group_of[t.decode()] for t, _ in ds.as_numpy_iterator()}
          for name, ds in splits.items()}


def load(path, **kw):
  return data.load_splits(config.DataConfig(dataset=f"csv:{path}", group_field="movie", **kw))


def test_no_group_is_in_two_splits_and_the_report_counts_them(tmp_path):
  rows = planted_rows()
  splits, info = load(write_csv(tmp_path / "g.csv", rows))
  groups = group_sets(splits, rows)
  for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
    assert not groups[a] & groups[b], (a, b)
  assert info.report["groups"]["per_split"] == {s: len(g) for s, g in groups.items()}
  assert sum(info.report["groups"]["per_split"].values()) == GROUPS
  # Split by text, the same rows put most groups in two splits: the grouping is what holds.
  by_text = group_sets(data.load_splits(config.DataConfig(dataset=f"csv:{tmp_path}/g.csv"))[0],
                       rows)
  assert by_text["train"] & by_text["validation"]


def test_a_text_copied_into_every_group_is_overlap_and_dedup_keeps_its_test_copy(tmp_path):
  """Split by group, copies of one text land in every split: it was reported as test
  duplicates with no train/test overlap, and --dedup removed its test copies (the first,
  in train, was kept), changing the split every figure is measured on."""
  copy = "great film, would watch again"
  rows = planted_rows() + [(copy, "pos", f"movie{g}") for g in range(GROUPS)]
  path = write_csv(tmp_path / "g.csv", rows)
  splits, info = load(path)
  texts = {s: [t.decode() for t, _ in ds.as_numpy_iterator()] for s, ds in splits.items()}
  n = {s: t.count(copy) for s, t in texts.items()}
  assert min(n.values()) >= 2  # Copies in every split, several in each.
  assert info.report["train_test_overlap"] == 1
  assert info.report["duplicates"] == {s: n[s] - 1 for s in n}
  deduped, info = load(path, dedup=True)
  kept = {s: [t.decode() for t, _ in ds.as_numpy_iterator()] for s, ds in deduped.items()}
  assert {s: t.count(copy) for s, t in kept.items()} == {"train": 0, "validation": 0, "test": 1}
  assert len(kept["test"]) == len(texts["test"]) - (n["test"] - 1)  # Only its later copies.
  assert info.report["removed"] == {"duplicates": sum(n.values()) - 3,
                                    "train_test_overlap": 2, "conflicting_texts": 0}
  assert info.report["duplicates"] == {s: n[s] - 1 for s in n}  # Counted as without --dedup.


def test_folds_keep_groups_whole_and_cover_every_group_once(tmp_path):
  rows = planted_rows()
  path = write_csv(tmp_path / "g.csv", rows)
  held_out = []
  for fold in range(3):
    splits, _ = load(path, folds=3, fold=fold)
    groups = group_sets(splits, rows)
    assert not groups["test"] & (groups["train"] | groups["validation"])
    assert not groups["train"] & groups["validation"]
    held_out.append(groups["test"])
  assert sum(map(len, held_out)) == GROUPS == len(set().union(*held_out))


def test_the_split_is_the_same_on_every_run_and_in_any_file_order(tmp_path):
  rows = planted_rows()
  first = group_sets(load(write_csv(tmp_path / "a.csv", rows))[0], rows)
  again = group_sets(load(write_csv(tmp_path / "a.csv", rows))[0], rows)
  shuffled = list(rows)
  random.Random(1).shuffle(shuffled)
  other_order = group_sets(load(write_csv(tmp_path / "b.csv", shuffled))[0], rows)
  streamed = group_sets(load(tmp_path / "a.csv", cache_max_mb=0)[0], rows)  # Pass 2 streams.
  assert first == again == other_order == streamed
  # Pinned: the hash is sha256 of seed and group, not Python's per-process hash().
  assert sorted(first["validation"], key=lambda g: int(g[5:])) == PINNED_VALIDATION


# Seed 42's validation groups, the same on any machine and in any process.
PINNED_VALIDATION = ["movie22", "movie30", "movie38", "movie40", "movie50"]


def test_validation_is_carved_by_group_beside_an_official_test(tmp_path):
  rows = planted_rows()
  test_rows = [(f"test text {i}", "pos", "movie0") for i in range(3)]
  splits, info = load(write_csv(tmp_path / "train.csv", rows),
                      test_path=write_csv(tmp_path / "test.csv", test_rows))
  groups = group_sets({k: v for k, v in splits.items() if k != "test"}, rows)
  assert not groups["train"] & groups["validation"]
  assert info.report["groups"]["per_split"]["test"] == 1
  assert info.report["groups"]["shared_with_official_test"] == 1


def test_jsonl_groups_may_be_integer_ids(tmp_path):
  rows = planted_rows()
  path = tmp_path / "g.jsonl"
  path.write_text("".join(json.dumps({"text": t, "label": y, "movie": int(g[5:])}) + "\n"
                          for t, y, g in rows))
  splits, info = data.load_splits(config.DataConfig(dataset=f"jsonl:{path}",
                                                    group_field="movie"))
  groups = group_sets(splits, rows)
  assert not groups["train"] & groups["validation"]
  assert sum(info.report["groups"]["per_split"].values()) == GROUPS


def test_a_missing_group_column_names_the_file_and_the_column(tmp_path):
  path = write_csv(tmp_path / "g.csv", [("a", "pos"), ("b", "neg")], header=("text", "label"))
  with pytest.raises(DataError, match=r"g\.csv:1: no column 'movie' \(--group_field\)"):
    load(path)


def test_an_empty_group_is_a_bad_record_naming_file_and_line(tmp_path):
  rows = planted_rows()
  rows[4] = (rows[4][0], rows[4][1], " ")
  path = write_csv(tmp_path / "g.csv", rows)
  with pytest.raises(DataError, match=r"g\.csv:6: group field 'movie' \(--group_field\) is "
                     r"empty"):
    load(path)
  _, info = load(path, on_bad_record="skip")
  assert info.report["skipped"]["missing_field"] == 1


@pytest.mark.parametrize("value,shown", [(1.5, "float 1.5"), (True, "bool True"),
                                         ([1], "list [1]")])
def test_a_jsonl_group_of_another_type_is_named_as_such(tmp_path, value, shown):
  """A float, a boolean or a list is no group: a bad record that says what it is (it was
  reported as "empty")."""
  rows = [{"text": t, "label": l, "movie": g} for t, l, g in planted_rows()]
  rows[4]["movie"] = value
  path = tmp_path / "g.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  cfg = config.DataConfig(dataset=f"jsonl:{path}", group_field="movie")
  with pytest.raises(DataError, match=re.escape(f"g.jsonl:5: group field 'movie' "
                                                f"(--group_field) is {shown}; expected")):
    data.load_splits(cfg)
  _, info = data.load_splits(dataclasses.replace(cfg, on_bad_record="skip"))
  assert info.report["skipped"]["malformed"] == 1


def test_sources_without_groups_refuse_the_flag(corpus_dir):
  with pytest.raises(ConfigError, match=r"--group_field=movie: --dataset=embedded:.* groups "
                     r"are read from csv:, tsv:, jsonl:"):
    data.load_splits(config.DataConfig(dataset=f"embedded:{corpus_dir}", group_field="movie"))
