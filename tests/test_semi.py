"""--unlabeled (tfagent/semi.py): unlabelled texts start the deep path's embedding."""

import dataclasses
import json
import logging
import os
import sys

from absl import logging as absl_logging
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config, write_corpus, write_csv
import pooled_python
from tfagent import config, data, models, semi, training
from tfagent.data import unlabeled
from tfagent.errors import ConfigError

pytest.importorskip("gensim")

# Unlabelled texts that put a made-up word where the labelled corpus has its positive words,
# and another where it has its negative ones (conftest.POSITIVE / NEGATIVE); swapped in the
# other set. The labelled texts never hold either word.
PLANTED = ["{p} movie loved it", "excellent {p} film", "a delight, truly {p}", "{p} {p} loved it",
           "{n} movie hated it", "awful {n} film", "a mess, truly {n}", "{n} {n} hated it"]
QUERIES = ["zorb", "truly zorb", "blick", "truly blick"]
RELOAD = """
import json, sys
import tensorflow as tf
assert "tfagent" not in sys.modules and "gensim" not in sys.modules
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps(out["probabilities"].numpy().tolist()))
"""


def with_unlabeled(cfg, source: str, **model_fields) -> config.Config:
  return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unlabeled=source),
                             model=dataclasses.replace(cfg.model, **model_fields))


def planted_csv(path, positive: str, negative: str, copies: int = 12) -> str:
  rows = [[t.format(p=positive, n=negative) + f" #{i}"] for i in range(copies) for t in PLANTED]
  return write_csv(path, rows, header=("text",))


def reloaded_probabilities(saved_model: str, texts) -> np.ndarray:
  """The export's probabilities, from a fresh Python process that imports neither tfagent
  nor gensim."""
  return np.array(pooled_python.clean_json(RELOAD, saved_model, json.dumps(texts)))


def neutral_corpus(folder) -> str:
  """The tiny corpus, plus `zorb` and `blick` in as many positive as negative texts: the
  labels say nothing of either word."""
  write_corpus(folder)
  for name in ("pos.txt", "neg.txt"):
    with open(os.path.join(folder, name), "a", encoding="utf-8") as f:
      f.writelines(f"{word} film #{name}{i}\n" for i in range(10) for word in ("zorb", "blick"))
  return str(folder)


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory):
  """Two tiny runs, the same but for the unlabelled texts: in the first `zorb` is used as the
  positive words are and `blick` as the negative ones; in the second the other way round."""
  root = tmp_path_factory.mktemp("semi")
  corpus = neutral_corpus(root / "corpus")
  runs = {}
  for name, (pos, neg) in {"zorb_pos": ("zorb", "blick"), "zorb_neg": ("blick", "zorb")}.items():
    source = "csv:" + planted_csv(root / f"{name}.csv", pos, neg)
    cfg = with_unlabeled(tiny_config(corpus, root / name, root / "sm"), source,
                         pretrain_epochs=30)
    cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, model_name=name))
    runs[name] = training.train_and_evaluate(cfg)
  return runs


@pytest.mark.slow
def test_the_unlabelled_texts_decide_the_export_on_words_the_labels_leave_open(planted_runs):
  """A word the labels say nothing of is read as the words it shares contexts with in the
  unlabelled texts: the export, reloaded in a clean process, calls `zorb` more positive when
  the unlabelled texts use it as `great`, more negative when they use it as `awful`."""
  for result in planted_runs.values():
    assert result["unlabeled"]["embedding_rows_initialised"] > 0
    assert result["accuracy"] > 0.9  # The labelled task itself is learned.
    with open(os.path.join(result["saved_model"], "model_card.json")) as f:
      assert json.load(f)["training"]["unlabeled"]["count"] == len(PLANTED) * 12
  pos, neg = (reloaded_probabilities(planted_runs[name]["saved_model"], QUERIES)[:, 1]
              for name in ("zorb_pos", "zorb_neg"))
  zorb, blick = slice(0, 2), slice(2, 4)
  assert (pos[zorb] > neg[zorb]).all() and (pos[blick] < neg[blick]).all(), (pos, neg)


@pytest.mark.parametrize("read_test", [True, False])
def test_a_validation_or_test_text_is_never_unlabelled_text(corpus_dir, tmp_path, caplog,
                                                             read_test):
  """Copies of validation and test texts in --unlabeled are dropped and counted (IMDB's
  unlabelled reviews hold 270 test reviews), spaced otherwise too; the others are kept, once
  each as given. Also
  with --noread_test, as tfagent tune's trials run: the best one is scored on test."""
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm")
  splits, _ = data.load_splits(cfg.data)
  all_test = [t.decode() for t, _ in splits["test"].as_numpy_iterator()]
  test = all_test[:3]
  cased = next(t for t in all_test[3:] if t.upper() != t)
  validation = [t.decode() for t, _ in splits["validation"].take(2).as_numpy_iterator()]
  train = [t.decode() for t, _ in splits["train"].take(2).as_numpy_iterator()]
  new = ["an unseen review", "another one"]
  # Copies as a `dir:` file or another tool may give them: a final newline, other spacing,
  # upper case (the models lowercase: to them it is the same text).
  respaced = [test[0] + "\n", "  " + validation[0].replace(" ", "\t ", 1), cased.upper()]
  source = "csv:" + write_csv(tmp_path / "u.csv",
                              [[t] for t in test + new + validation + train + respaced],
                              header=("text",))
  verbosity = absl_logging.get_verbosity()  # An earlier run may have left it at WARNING.
  absl_logging.set_verbosity(absl_logging.INFO)
  try:
    with caplog.at_level(logging.INFO):
      run = with_unlabeled(cfg, source)
      run = dataclasses.replace(run, data=dataclasses.replace(run.data, read_test=read_test))
      extra = semi.learn(run, data.load_splits(run.data)[0])
  finally:
    absl_logging.set_verbosity(verbosity)
  assert extra.texts == new + train  # Training texts may be unlabelled text too.
  assert extra.report["dropped_in_validation_or_test"] == 8 and extra.report["count"] == 4
  assert "4 texts kept, 8 dropped as validation or test texts" in caplog.text


@pytest.mark.parametrize("own_words", [False, True])
def test_the_vocabulary_takes_unlabelled_texts_only_when_asked(corpus_dir, tmp_path, own_words):
  """--unlabeled_vocabulary off (the default, chosen on IMDB): the training split's texts;
  on: theirs, then the unlabelled texts."""
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm")
  cfg = with_unlabeled(cfg, "csv:u.csv", unlabeled_vocabulary=own_words)
  splits, _ = data.load_splits(cfg.data)
  extra = semi.Unlabeled(["only zorb here"], {}, None)
  texts = [t for t, _ in semi.vocabulary_corpus(cfg, splits["train"], extra).as_numpy_iterator()]
  train = [t for t, _ in splits["train"].as_numpy_iterator()]
  assert texts == train + ([b"only zorb here"] if own_words else [])


@pytest.mark.parametrize("source, match", [
    ("csv:{tmp}/missing.csv", "does not exist"),
    ("csv:{tmp}/empty.csv", "empty file"),
    ("csv:{tmp}/header_only.csv", "no texts to learn from"),
    ("csv:{tmp}/wrong_column.csv", "no column 'text'"),
    ("jsonl:{tmp}/wrong_key.jsonl", "'text'"),
    ("dir:{tmp}/no_files", "no texts to learn from"),
    ("nope:{tmp}", "unknown source kind 'nope'"),
])
def test_a_bad_unlabeled_source_is_one_clear_error_before_training(corpus_dir, tmp_path, source,
                                                                   match):
  (tmp_path / "empty.csv").write_text("")
  (tmp_path / "header_only.csv").write_text("text\n")
  (tmp_path / "wrong_column.csv").write_text("body\nsome text\n")
  (tmp_path / "wrong_key.jsonl").write_text('{"body": "some text"}\n')
  (tmp_path / "no_files").mkdir()
  source = source.format(tmp=tmp_path)
  cfg = with_unlabeled(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"), source)
  with pytest.raises(ConfigError, match=f"--unlabeled={source}: .*{match}"):
    training.train_and_evaluate(cfg)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize("model_fields, match", [
    ({"name": "bert"}, "--model=bert brings its own"),
    ({"pretrain_epochs": 0}, "--pretrain_epochs=0 is invalid"),
])
def test_unlabeled_settings_that_cannot_work_fail_before_data_is_read(tmp_path, model_fields,
                                                                      match):
  cfg = with_unlabeled(tiny_config(str(tmp_path / "none"), tmp_path / "run", tmp_path / "sm"),
                       "csv:u.csv", **model_fields)
  with pytest.raises(ConfigError, match=match):
    training.train_and_evaluate(cfg)
  assert not os.path.exists(tmp_path / "run")


def two_vectors(dim: int):
  """Real gensim KeyedVectors holding vectors for `great` and `awful` only."""
  from gensim.models import KeyedVectors
  vectors = KeyedVectors(vector_size=dim)
  vectors.add_vectors(["great", "awful"], np.arange(2 * dim, dtype=np.float32).reshape(2, dim) + 1)
  return vectors


@pytest.mark.parametrize("model_fields", [{"name": "lstm"}, {"name": "transformer"},
                                          {"name": "lstm", "ensemble_size": 2}])
def test_every_token_embedding_starts_from_the_vectors(tmp_path, model_fields):
  """The vector rows land in the LSTM's embedding, the Transformer's token embedding and each
  ensemble member's; other rows keep their random start."""
  cfg = dataclasses.replace(tiny_config("", tmp_path, tmp_path).model, **model_fields)
  texts = tf.data.Dataset.from_tensor_slices(["great film", "awful film film"]).batch(2)
  model = models.build_model(cfg, ["neg", "pos"], texts)
  vocabulary = model.tokenizer.vocabulary()  # ["", "[UNK]", "film", "awful", "great"]
  vectors = two_vectors(cfg.embedding_dim)
  extra = semi.Unlabeled([], {}, vectors)
  before = [keras.ops.convert_to_numpy(m).copy() for m in semi.token_embeddings(model)]
  semi.init_embeddings(model, extra)
  after = [keras.ops.convert_to_numpy(m) for m in semi.token_embeddings(model)]
  assert len(after) == cfg.ensemble_size
  great, awful = vocabulary.index("great"), vocabulary.index("awful")
  others = [i for i in range(len(vocabulary)) if i not in (great, awful)]
  for old, new in zip(before, after):
    np.testing.assert_array_equal(new[great], vectors["great"])
    np.testing.assert_array_equal(new[awful], vectors["awful"])
    np.testing.assert_array_equal(new[others], old[others])
  assert extra.report == {"embedding_rows_initialised": 2, "vocabulary": len(vocabulary)}


def test_an_embedded_source_gives_every_record_of_its_splits(tmp_path):
  """A labelled corpus as unlabelled text gave its training split only (78 of 100 texts),
  the other 22 neither used nor counted."""
  corpus = write_corpus(tmp_path / "other", n_per_class=50)
  texts, report = unlabeled.unlabeled_texts("unlabeled", f"embedded:{corpus}",
                                            config.DataConfig(), set())
  lines = [line.rstrip("\n") for name in ("pos.txt", "neg.txt")
           for line in open(os.path.join(corpus, name), encoding="utf-8")]
  assert sorted(texts) == sorted(lines) and report["count"] == 100


def test_a_tfds_source_gives_its_unlabelled_split(tmp_path, monkeypatch):
  """tfds:imdb_reviews (prepared offline from a tiny archive) gives its `unsupervised` split,
  whose label -1 is no class, not its labelled train split."""
  from test_data_sources import place_imdb_archive
  root = place_imdb_archive(tmp_path, monkeypatch)
  data_cfg = config.DataConfig(tfds_data_dir=str(root / "tfds"),
                               tfds_manual_dir=str(root / "manual"))
  texts, report = unlabeled.unlabeled_texts("unlabeled", "tfds:imdb_reviews", data_cfg, set())
  assert texts == ["an unlabelled review"] and report["count"] == 1


@pytest.mark.slow
def test_unlabeled_and_self_training_together(trained_run, corpus_dir, tmp_path, monkeypatch):
  """configs/imdb_semi.flags' recipe: --unlabeled starts the embedding and a labels-only export
  (--teacher) labels the same unlabelled texts (--distill_unlabeled); both drop the same copies
  of test texts, read once for both (on IMDB each read takes seconds)."""
  reads = []
  real = unlabeled.held_out_texts
  monkeypatch.setattr(unlabeled, "held_out_texts", lambda *a: reads.append(1) or real(*a))
  teacher_cfg, teacher = trained_run
  splits, _ = data.load_splits(teacher_cfg.data)
  test = [t.decode() for t, _ in splits["test"].take(2).as_numpy_iterator()]
  source = "csv:" + planted_csv(tmp_path / "u.csv", "zorb", "blick", copies=2)
  with open(source[4:], "a", encoding="utf-8") as f:
    f.writelines(f'"{t}"\n' for t in test)
  cfg = with_unlabeled(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"), source)
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, teacher=os.path.dirname(teacher["saved_model"]), distill_unlabeled=source))
  result = training.train_and_evaluate(cfg)
  for report in (result["unlabeled"], result["distillation"]["unlabeled"]):
    assert report["count"] == len(PLANTED) * 2 and report["dropped_in_validation_or_test"] == 2
  assert result["unlabeled"]["embedding_rows_initialised"] > 0
  assert len(reads) == 1


@pytest.mark.slow
def test_a_multilabel_run_starts_its_embedding_from_the_unlabelled_texts(tmp_path):
  """--unlabeled with --task=multilabel: the vectors start the embedding, copies of test
  texts are dropped, and the export answers label masks."""
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                                  "examples"))
  import make_multilabel  # pylint: disable=import-outside-toplevel
  path = make_multilabel.write_csv(str(tmp_path / "topics.csv"), 300)
  cfg = tiny_config("unused", tmp_path / "run", tmp_path / "sm")
  cfg = dataclasses.replace(cfg, data=config.DataConfig(
      dataset=f"csv:{path}", label_field="labels", task="multilabel", batch_size=32))
  splits, _ = data.load_splits(cfg.data)
  train_texts = [t.decode() for t, _ in splits["train"].as_numpy_iterator()]
  test_texts = [t.decode() for t, _ in splits["test"].take(2).as_numpy_iterator()]
  rows = [[t] for t in train_texts + test_texts]
  cfg = with_unlabeled(cfg, "csv:" + write_csv(tmp_path / "u.csv", rows, header=("text",)))
  result = training.train_and_evaluate(cfg)
  report = result["unlabeled"]
  assert report["dropped_in_validation_or_test"] >= 2  # The two test texts (and any copy).
  assert report["count"] + report["dropped_in_validation_or_test"] == len(rows)
  assert report["embedding_rows_initialised"] > 0
  out = tf.saved_model.load(result["saved_model"]).signatures["serving_default"](
      text=tf.constant(test_texts))
  probabilities, mask = out["probabilities"].numpy(), out["label_mask"].numpy()
  assert probabilities.shape == mask.shape == (2, len(make_multilabel.TOPICS))
  assert mask.dtype == bool
