"""The model card's page: what the model is (an ensemble, a wide path) and where its test texts
come from, built from a card dict (no training)."""

import types

from tfagent import config, model_card


def card_of(**fields) -> dict:
  """A card of a 2-class run whose config takes `fields` (`data`, `model`: their overrides)."""
  cfg = config.Config(data=config.DataConfig(dataset="csv:train.csv", **fields.get("data", {})),
                      model=config.ModelConfig(**fields.get("model", {})))
  info = types.SimpleNamespace(class_names=("neg", "pos"), report={},
                               split_sizes={"train": 535, "validation": 65, "test": 150})
  per_class = {n: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 75}
               for n in info.class_names}
  result = {"saved_model": "/sm/m/1", "examples": 150, "accuracy": 0.84, "macro_f1": 0.84,
            "roc_auc": 0.97, "per_class": per_class, "validation": {"accuracy": 0.89}}
  return model_card.build(cfg, info, result, {"train": "a", "validation": "b", "test": "c"}, [])


def line(page: str, start: str) -> str:
  return next(l for l in page.splitlines() if l.startswith(start))


def test_the_card_of_an_ensemble_says_it_is_one_and_how_many_members_it_averages():
  """The card of a 3-member ensemble said only "Model: `--model=lstm`, wide path of 1-2-grams";
  only the json's config block held ensemble_size."""
  page = model_card.to_markdown(card_of(model={"ensemble_size": 3, "wide_ngrams": 2}))
  assert line(page, "- Model:") == (
      "- Model: `--model=lstm`, an ensemble of 3 members (`--ensemble_size=3`: each trained "
      "from its own initial weights and batch order; the export averages their probabilities), "
      "wide path of 1-2-grams")
  one = model_card.to_markdown(card_of(model={"wide_ngrams": 2}))
  assert line(one, "- Model:") == "- Model: `--model=lstm`, wide path of 1-2-grams"


def test_the_cards_data_line_names_the_file_or_fold_the_test_texts_come_from():
  """With --test_path the test figures are that file's, which the card never named; under
  --folds they are the held-out fold's (--test_path is not read)."""
  splits = "splits {'train': 535, 'validation': 65, 'test': 150}"
  card = card_of(data={"test_path": "test.csv"})
  assert line(model_card.to_markdown(card), "- Data:") == (
      f"- Data: `csv:train.csv`, test texts from `test.csv`, {splits}")
  assert card["data"]["test_source"] == "test.csv"
  card = card_of(data={"test_path": "test.csv", "folds": 3, "fold": 1})
  assert line(model_card.to_markdown(card), "- Data:") == (
      f"- Data: `csv:train.csv`, test texts from `csv:train.csv` (held-out fold 1 of 3), {splits}")
  assert card["data"]["test_source"] == "csv:train.csv (held-out fold 1 of 3)"
  card = card_of()  # The source's own test part: nothing to add.
  assert line(model_card.to_markdown(card), "- Data:") == f"- Data: `csv:train.csv`, {splits}"
  assert card["data"]["test_source"] == "csv:train.csv"


def test_every_tasks_card_warnings_start_with_the_vocabularys_advising_what_the_run_allows():
  """One function gives a multiclass and a multilabel card their warnings; a multilabel or a
  pair run refuses --wide_ngrams, so its advice leaves it out."""
  info = types.SimpleNamespace(split_sizes={"train": 10**6}, report={})
  result = {"unknown_token_share": 0.55}
  for data_fields, advice in (({}, "raise --vocab_size, or add --wide_ngrams."),
                              ({"task": "multilabel"}, "raise --vocab_size."),
                              ({"text_pair_field": "b"}, "raise --vocab_size.")):
    cfg = config.Config(data=config.DataConfig(**data_fields))
    assert model_card.card_warnings(cfg, info, result) == [
        f"55% of the validation tokens are out of the vocabulary: {advice}"]
  assert model_card.card_warnings(cfg, info, {"unknown_token_share": 0.1}) == []
