"""Cross-validation: seeded folds that never share a text, K fold runs, test left untouched."""

import dataclasses
import json

import pytest

from conftest import tiny_config
from tfagent import config, cross_validate, data
from tfagent.errors import ConfigError


def texts_of(split) -> list:
  return [t.decode("utf-8") for t, _ in split.as_numpy_iterator()]


def fold_splits(data_cfg, folds: int) -> list:
  return [data.load_splits(dataclasses.replace(data_cfg, folds=folds, fold=k))[0]
          for k in range(folds)]


def test_folds_partition_the_corpus_and_no_text_is_tested_twice(corpus_dir):
  data_cfg = config.DataConfig(dataset=f"embedded:{corpus_dir}")
  normal, _ = data.load_splits(data_cfg)
  corpus = sorted(t for s in ("train", "validation", "test") for t in texts_of(normal[s]))
  tested = []
  for splits in fold_splits(data_cfg, 3):
    test = set(texts_of(splits["test"]))
    rest = texts_of(splits["train"]) + texts_of(splits["validation"])
    assert test and not test & set(rest)
    assert sorted(rest + list(test)) == corpus  # Each fold run sees the whole corpus.
    assert len(texts_of(splits["validation"])) < 0.2 * len(rest)
    tested.extend(test)
  assert sorted(tested) == corpus  # Every text is tested in exactly one fold.


def test_folds_leave_an_official_test_file_unread(tmp_path):
  train = "text,label\n" + "".join(f"great film {i},pos\nawful film {i},neg\n"
                                   for i in range(30))
  (tmp_path / "train.csv").write_text(train, encoding="utf-8")
  (tmp_path / "test.csv").write_text("text,label\nunread,maybe\n", encoding="utf-8")
  data_cfg = config.DataConfig(dataset=f"csv:{tmp_path / 'train.csv'}",
                               test_path=str(tmp_path / "test.csv"))
  with pytest.raises(Exception, match="maybe"):  # Read normally: its bad label is an error.
    data.load_splits(data_cfg)
  splits = fold_splits(data_cfg, 2)
  tested = set(texts_of(splits[0]["test"])) | set(texts_of(splits[1]["test"]))
  assert len(tested) == 60 and "unread" not in tested


@pytest.mark.parametrize("folds,fold,message", [
    (-1, 0, "--folds=-1 is invalid"), (3, 3, "--fold=3 is invalid with --folds=3")])
def test_bad_fold_flags_name_the_flag(corpus_dir, folds, fold, message):
  with pytest.raises(ConfigError, match=message):
    data.load_splits(config.DataConfig(dataset=f"embedded:{corpus_dir}", folds=folds,
                                       fold=fold))


@pytest.mark.slow
def test_cross_validate_trains_every_fold_and_writes_the_summary(corpus_dir, tmp_path):
  cfg = tiny_config(corpus_dir, tmp_path / "cv", tmp_path / "unused")
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, folds=2),
                            train=dataclasses.replace(cfg.train, epochs=1))
  out = cross_validate.cross_validate(cfg, cross_validate.train_fold)
  saved = json.loads((tmp_path / "cv" / cross_validate.SUMMARY_FILE).read_text())
  assert saved == out
  assert [f["fold"] for f in out["per_fold"]] == [0, 1]
  assert sum(f["test_examples"] for f in out["per_fold"]) == 240  # The whole tiny corpus.
  for k, fold in enumerate(out["per_fold"]):
    metrics = json.loads((tmp_path / "cv" / f"fold_{k}" / "eval" / "metrics.json").read_text())
    assert fold["accuracy"] == metrics["accuracy"] and metrics["examples"] == fold["test_examples"]
    assert (tmp_path / "cv" / f"fold_{k}" / "saved_models" / "tiny" / "1").is_dir()
  accuracies = [f["accuracy"] for f in out["per_fold"]]
  assert out["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
  assert out["accuracy"]["std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2**0.5)


def test_cross_validate_needs_two_folds(tmp_path):
  with pytest.raises(ConfigError, match="--folds=0"):
    cross_validate.cross_validate(config.Config(), cross_validate.train_fold)


def test_cross_validate_refuses_noread_test_before_a_fold(tmp_path):
  """Each fold is scored on its held-out part, its test split: without it the first fold
  trained for nothing and the summary crashed (no test accuracy to record)."""
  cfg = config.Config(data=config.DataConfig(folds=2, read_test=False))
  with pytest.raises(ConfigError, match="--noread_test: each fold is scored on the part it "):
    cross_validate.cross_validate(cfg, lambda fold_cfg: pytest.fail("a fold was trained"))
