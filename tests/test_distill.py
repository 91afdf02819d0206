"""Distillation (tfagent/distill.py): the loss against a hand computation, the teacher's
targets cached beside the labels, a student moving toward its teacher, the teacher never
trained, any export version as teacher, and clear errors before training starts."""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config, write_corpus
import pooled_python
from tfagent import data, distill, models, train, training
from tfagent.errors import ConfigError


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def hand_loss(logits, probs, labels, temperature, alpha):
  """Hinton's loss by numpy: alpha T^2 CE(softmax(log p / T), softmax(z / T)) + (1 - alpha) CE."""
  q = softmax(np.log(probs) / temperature)
  taught = -(q * log_softmax(logits / temperature)).sum(-1) * temperature ** 2
  picked = np.take_along_axis(log_softmax(logits), np.maximum(labels, 0)[..., None], -1)[..., 0]
  return (alpha * taught + (1 - alpha) * np.where(labels >= 0, -picked, 0.0)).mean()


def with_train(cfg, **train_fields):
  return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_fields))


@pytest.fixture(scope="module")
def teacher_path(trained_run):
  """The session's tiny LSTM export (saved_models/tiny, one version) as a base path."""
  cfg, _ = trained_run
  return os.path.join(cfg.export.export_dir, cfg.export.model_name)


@pytest.fixture(scope="module")
def flipped_corpus(tmp_path_factory) -> str:
  """The conftest corpus with its classes swapped: the teacher disagrees with every label."""
  folder = write_corpus(tmp_path_factory.mktemp("flipped"), n_per_class=60)
  os.rename(os.path.join(folder, "pos.txt"), os.path.join(folder, "tmp.txt"))
  os.rename(os.path.join(folder, "neg.txt"), os.path.join(folder, "pos.txt"))
  os.rename(os.path.join(folder, "tmp.txt"), os.path.join(folder, "neg.txt"))
  return folder


def student(cfg, teacher=None, total_steps: int = 100):
  """`(splits, taught, model, classifier)`: the training path's data, targets and compiled model."""
  splits, info = data.load_splits(cfg.data)
  taught = distill.teach(cfg, splits, info, info.split_sizes["train"], teacher)
  model, classifier = training.build_and_compile(cfg, tf.distribute.get_strategy(), taught.train,
                                                 info.class_names, total_steps)
  return splits, taught, model, classifier


def fit(cfg, taught, model, classifier, steps: int) -> None:
  stream = data.make_input_fn(taught.train, model.tokenizer, cfg.data,
                              training=True, model_cfg=cfg.model, start_step=0)()
  classifier.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)


def texts_of(split) -> list:
  return [t.decode("utf-8") for t, _ in split.as_numpy_iterator()]


# --- The loss -------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.0])
def test_loss_matches_a_hand_computation(alpha):
  """Labels -1 (unlabelled) drop the label term; an ensemble's [batch, members] shape too."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4)).astype(np.float32) * 3
  probs = rng.dirichlet(np.ones(4), size=(2, 3)).astype(np.float32)
  labels = np.array([[0, 3, -1], [2, -1, 1]])
  q = softmax(np.log(probs) / 2.5)
  targets = np.concatenate([labels[..., None].astype(np.float32), q], -1)
  loss = distill.DistillationLoss(temperature=2.5, alpha=alpha)
  assert float(loss(targets, logits)) == pytest.approx(
      hand_loss(logits, probs, labels, 2.5, alpha), rel=1e-5)
  # Plain labels (validation) are scored by their cross-entropy alone.
  plain = np.array([[0, 3, 1], [2, 0, 1]])
  assert float(loss(plain, logits)) == pytest.approx(
      hand_loss(logits, probs, plain, 2.5, 0.0), rel=1e-5)


def test_training_loss_at_alpha_one_is_cross_entropy_to_the_tempered_teacher(
    teacher_path, corpus_dir, tmp_path):
  """The loss of a real training step on a batch of the real pipeline, from the cached
  targets, equals T^2 CE(softmax(log p / T), softmax(z / T)) with p from the export itself."""
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm")
  cfg = with_train(dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, bucket_width=0),  # Keeps the split's order.
      model=dataclasses.replace(cfg.model, dropout=0.0)),
      teacher=teacher_path, distill_alpha=1.0, distill_temperature=2.0)
  splits, taught, model, classifier = student(cfg)
  first = taught.train.take(8)
  ids, targets = next(iter(data.make_input_fn(first, model.tokenizer, cfg.data,
                                              training=False, model_cfg=cfg.model)()))
  texts = texts_of(splits["train"].take(8))
  probs = distill.Teacher(teacher_path).probabilities(tf.constant(texts))
  labels = np.array([y for _, y in splits["train"].take(8).as_numpy_iterator()])
  np.testing.assert_array_equal(targets.numpy()[:, 0], labels)
  logits = classifier(ids, training=False).numpy()
  expected = hand_loss(logits, probs, labels, 2.0, 1.0)
  logs = classifier.train_on_batch(ids, targets, return_dict=True)
  assert logs["loss"] == pytest.approx(expected, rel=1e-5)
  assert expected > 0.1  # A real loss, not a degenerate zero.


class CountingTeacher(distill.Teacher):
  """The real teacher, counting the texts it is asked about."""
  texts = 0

  def probabilities(self, text):
    self.texts += int(tf.size(text))
    return super().probabilities(text)


def test_teacher_labels_each_text_once_whatever_the_epochs(teacher_path, corpus_dir, tmp_path):
  cfg = with_train(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"),
                   teacher=teacher_path)
  splits, info = data.load_splits(cfg.data)
  teacher = CountingTeacher(teacher_path)
  taught = distill.teach(cfg, splits, info, info.split_sizes["train"], teacher)
  assert teacher.texts == info.split_sizes["train"]
  for _ in range(3):  # Three epochs read the cached targets.
    assert sum(1 for _ in taught.train) == info.split_sizes["train"]
  assert teacher.texts == info.split_sizes["train"]



def test_targets_stay_with_their_texts_when_the_split_comes_in_another_order_each_pass(
    teacher_path, corpus_dir, tmp_path):
  """A stream read with --deterministic=false (tfrecord shards interleaved) comes in another
  order on every pass: the teacher's probabilities and the label must follow their text,
  not a position (the targets were zipped by position: another text's on every pass)."""
  cfg = with_train(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"),
                   teacher=teacher_path, distill_temperature=1.0)
  splits, info = data.load_splits(cfg.data)
  n = info.split_sizes["train"]
  reordered = splits["train"].shuffle(n, seed=3, reshuffle_each_iteration=True)
  assert tf.get_static_value(reordered.cardinality()) == n  # Still held in memory.
  teacher = distill.Teacher(teacher_path)
  taught = distill.teach(cfg, {**splits, "train": reordered}, info, n, teacher)
  truth = {t: y for t, y in splits["train"].as_numpy_iterator()}
  order = distill.class_order(teacher, info.class_names, cfg.data.dataset)
  for _ in range(2):
    for text, target in taught.train.batch(64):
      expected = teacher.probabilities(text)[:, order]
      np.testing.assert_allclose(target[:, 1:].numpy(), expected, atol=1e-5)
      assert [truth[t] for t in text.numpy()] == target[:, 0].numpy().astype(int).tolist()

def test_an_ensemble_student_gets_each_members_targets_last(teacher_path, corpus_dir, tmp_path):
  """Members read their own streams: targets stack to [batch, members, 1 + C]."""
  cfg = with_train(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"),
                   teacher=teacher_path)
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ensemble_size=2))
  splits, info = data.load_splits(cfg.data)
  taught = distill.teach(cfg, splits, info, info.split_sizes["train"])
  tokenizer = models.build_tokenizer(cfg.model, taught.train.map(lambda t, _: t).batch(64))
  ids, targets = next(iter(data.make_input_fn(taught.train, tokenizer, cfg.data, training=True,
                                              model_cfg=cfg.model, start_step=0)()))
  assert len(ids) == 2 and targets.shape[1:] == (2, 3)
  np.testing.assert_allclose(targets.numpy()[..., 1:].sum(-1), 1.0, rtol=1e-5)
  assert set(np.unique(targets.numpy()[..., 0])) <= {0.0, 1.0}


# --- The student learns the teacher; the teacher is never trained ------------------------------

@pytest.mark.slow
def test_student_moves_toward_the_teacher_and_the_teacher_is_untouched(
    teacher_path, flipped_corpus, tmp_path):
  """On labels the teacher contradicts, alpha=1 ends near the teacher and alpha=0 far from it."""
  teacher = distill.Teacher(teacher_path)
  before = [v.numpy().copy() for v in teacher.variables]
  assert before
  kl, agreement = {}, {}
  for alpha in (1.0, 0.0):
    cfg = with_train(tiny_config(flipped_corpus, tmp_path / f"run{alpha}", tmp_path / "sm"),
                     teacher=teacher_path, distill_alpha=alpha, distill_temperature=2.0,
                     learning_rate=2e-2)
    splits, taught, model, classifier = student(cfg, teacher, total_steps=40)
    texts = tf.constant(texts_of(splits["validation"]))
    target = teacher.probabilities(texts)

    def kl_to_teacher():
      probs = softmax(model(texts, training=False).numpy())
      return float((target * (np.log(target) - np.log(probs))).sum(-1).mean())
    untrained = kl_to_teacher()
    fit(cfg, taught, model, classifier, steps=40)
    kl[alpha] = kl_to_teacher()
    agreement[alpha] = float((softmax(model(texts, training=False).numpy()).argmax(-1)
                              == target.argmax(-1)).mean())
    assert not {id(v) for v in teacher.variables} & {
        id(v.value) for v in classifier.trainable_variables}
  assert kl[1.0] < 0.5 * untrained, (kl, untrained)
  assert kl[1.0] < 0.2 * kl[0.0], kl
  assert agreement[1.0] >= 0.9 and agreement[0.0] <= 0.2, agreement
  for old, new in zip(before, teacher.variables):
    np.testing.assert_array_equal(old, new.numpy())


# --- Any export version teaches ------------------------------------------------------------

def test_base_path_takes_the_highest_version_and_any_version_can_teach(teacher_path, tmp_path):
  base = tmp_path / "teacher"
  for version in ("1", "3"):
    shutil.copytree(os.path.join(teacher_path, "1"), base / version)
  latest, first = distill.Teacher(str(base)), distill.Teacher(str(base / "1"))
  assert (latest.version, latest.export_dir) == (3, str(base / "3"))
  assert (first.version, first.export_dir) == (1, str(base / "1"))
  assert latest.class_names == first.class_names == ["negative", "positive"]


# --- Errors before training ----------------------------------------------------------------

class NotAClassifier(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def double(self, text):
    return {"probabilities": 2 * text}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def length(self, text):
    return {"scores": tf.strings.length(text)}


def bad_exports(root) -> dict:
  """Exports that cannot teach: float `text`, no probabilities, no serving_default, no
  SavedModel at all."""
  module = NotAClassifier()
  tf.saved_model.save(module, str(root / "float"), signatures={"serving_default": module.double})
  tf.saved_model.save(module, str(root / "scores"), signatures={"serving_default": module.length})
  tf.saved_model.save(module, str(root / "unsigned"), signatures={"other": module.double})
  os.makedirs(root / "empty")
  return {"float": "serving_default takes .*float32", "scores": "returns \\['scores'\\]",
          "unsigned": "no serving_default signature", "empty": "not a SavedModel",
          "missing": "not a SavedModel"}


def test_a_bad_teacher_is_one_clear_error_before_training(corpus_dir, tmp_path):
  for name, why in bad_exports(tmp_path).items():
    cfg = with_train(tiny_config(corpus_dir, tmp_path / f"run_{name}", tmp_path / "sm"),
                     teacher=str(tmp_path / name))
    with pytest.raises(ConfigError, match=f"--teacher={tmp_path / name}: .*{why}"):
      training.train_and_evaluate(cfg)
    assert not os.path.exists(tmp_path / f"run_{name}" / "checkpoints"), name


def test_a_teacher_of_other_classes_is_refused(teacher_path, tmp_path):
  """Classes are compared by name; the same names in another order are reordered, not refused."""
  path = tmp_path / "other.csv"
  path.write_text("text,label\n" + "".join(f"text number {i},{'good' if i % 2 else 'bad'}\n"
                                           for i in range(100)))
  cfg = with_train(tiny_config(str(path), tmp_path / "run", tmp_path / "sm"),
                   teacher=teacher_path)
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=f"csv:{path}"))
  with pytest.raises(ConfigError, match=f"--teacher={teacher_path}: the export .* has the "
                     "classes negative, positive, the data .* bad, good"):
    training.train_and_evaluate(cfg)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
  teacher = distill.Teacher(teacher_path)
  assert distill.class_order(teacher, ("positive", "negative"), "x") == [1, 0]


@pytest.mark.parametrize("flags, match", [
    ({"distill_unlabeled": "csv:x.csv"}, "--distill_unlabeled=csv:x.csv needs --teacher"),
    ({"teacher": "t", "distill_temperature": 0.0}, "--distill_temperature=0.0 is invalid"),
    ({"teacher": "t", "distill_alpha": 1.5}, "--distill_alpha=1.5 is invalid"),
    ({"teacher": "t", "class_weight": "balanced", "monitor": "val_macro_f1"},
     "--teacher=t does not work with --class_weight=balanced, --monitor=val_macro_f1 yet"),
])
def test_bad_distill_flags_fail_before_data_is_read(flags, match, tmp_path):
  with pytest.raises(ConfigError, match=match):
    train.run(None, dataset=f"csv:{tmp_path}/none.csv", model_dir=str(tmp_path / "run"), **flags)


# --- Unlabelled texts --------------------------------------------------------------------------

def test_unlabeled_texts_of_every_kind_join_training_with_teacher_targets(
    teacher_path, corpus_dir, tmp_path):
  """csv without labels, jsonl with labels (ignored), a folder, an embedded corpus; texts also
  in validation or test are dropped."""
  cfg = with_train(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"),
                   teacher=teacher_path)
  splits, info = data.load_splits(cfg.data)
  held_out = texts_of(splits["test"])[:2]
  (tmp_path / "u.csv").write_text("text\n\"loved it, great\"\nboring and awful\n"
                                  + "".join(f'"{t}"\n' for t in held_out))
  (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": t, "label": "whatever"}) + "\n"
                                            for t in ("great", "awful", "好看")))
  os.makedirs(tmp_path / "folder" / "sub")
  (tmp_path / "folder" / "a.txt").write_text("wonderful film")
  (tmp_path / "folder" / "sub" / "b.txt").write_text("a mess")
  other = write_corpus(tmp_path / "other", n_per_class=10, seed=1)
  teacher = distill.Teacher(teacher_path)
  n = info.split_sizes["train"]
  for source, count in ((f"csv:{tmp_path}/u.csv", 2), (f"jsonl:{tmp_path}/u.jsonl", 3),
                        (f"dir:{tmp_path}/folder", 2), (f"embedded:{other}", None)):
    taught = distill.teach(with_train(cfg, distill_unlabeled=source), splits, info, n, teacher)
    extra = taught.report["unlabeled"]
    assert extra["source"] == source and (count is None or extra["count"] == count), extra
    targets = np.stack([y for _, y in taught.train.as_numpy_iterator()])
    assert taught.n_train == len(targets) == n + extra["count"]
    assert (targets[:, 0] == -1).sum() == extra["count"]
    np.testing.assert_allclose(targets[:, 1:].sum(-1), 1.0, rtol=1e-5)
  csv_report = distill.teach(with_train(cfg, distill_unlabeled=f"csv:{tmp_path}/u.csv"), splits,
                             info, n, teacher).report["unlabeled"]
  assert csv_report["dropped_in_validation_or_test"] == 2


@pytest.mark.parametrize("source, match", [
    ("csv:{tmp}/missing.csv", "does not exist"),
    ("nope:{tmp}", "unknown source kind 'nope'"),
    ("csv:{tmp}/header_only.csv", "no texts to learn from"),
    ("csv:{tmp}/wrong_column.csv", "no column 'text'"),
])
def test_a_bad_unlabeled_source_is_a_clear_error(teacher_path, corpus_dir, tmp_path, source,
                                                 match):
  (tmp_path / "header_only.csv").write_text("text\n")
  (tmp_path / "wrong_column.csv").write_text("body\nsome text\n")
  source = source.format(tmp=tmp_path)
  cfg = with_train(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"),
                   teacher=teacher_path, distill_unlabeled=source)
  with pytest.raises(ConfigError, match=f"--distill_unlabeled={source}: .*{match}"):
    training.train_and_evaluate(cfg)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


# --- End to end ------------------------------------------------------------------------------

def tree_digest(folder) -> str:
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      with open(os.path.join(root, name), "rb") as f:
        digest.update(name.encode() + f.read())
  return digest.hexdigest()


@pytest.mark.slow
def test_distilled_run_exports_and_its_model_card_names_the_teacher(teacher_path, corpus_dir,
                                                                    tmp_path):
  """The whole training path with a teacher (base path), unlabelled texts and the wide path."""
  digest = tree_digest(teacher_path)
  (tmp_path / "u.csv").write_text("text\n" + "".join(f"unlabelled great film {i}\n"
                                                     for i in range(20)))
  cfg = with_train(tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm"),
                   teacher=teacher_path, distill_alpha=0.7,
                   distill_unlabeled=f"csv:{tmp_path}/u.csv")
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, wide_ngrams=2))
  result = training.train_and_evaluate(cfg)
  assert result["accuracy"] >= 0.8, result["accuracy"]
  with open(os.path.join(result["saved_model"], "model_card.json")) as f:
    card = json.load(f)["training"]["distillation"]
  assert card["teacher"] == teacher_path and card["teacher_version"] == 1
  assert (card["temperature"], card["alpha"]) == (3.0, 0.7)
  assert card["unlabeled"]["count"] == 20
  with open(os.path.join(result["saved_model"], "model_card.md")) as f:
    assert f"Distilled from `{teacher_path}/1` (version 1) at temperature 3" in f.read()
  # The checkpoint (its classifier compiled with the distillation loss) reloads, in a process
  # that imports only the loader, as `tfagent evaluate` does.
  reload = subprocess.run(
      [sys.executable, "-c", "import sys; from tfagent import evaluate; "
       "print(type(evaluate.load_checkpoint(sys.argv[1])).__name__)",
       str(tmp_path / "run" / "checkpoints" / "best.keras")],
      capture_output=True, text=True, timeout=300)
  assert reload.returncode == 0 and reload.stdout.split()[-1] == "TextClassifier", reload.stderr[-3000:]
  assert tree_digest(teacher_path) == digest  # The teacher export is unchanged.


MIRRORED_SCRIPT = r"""
import dataclasses, json, sys
import tensorflow as tf
sys.path.insert(0, "tests")
from conftest import tiny_config, write_corpus
from tfagent import distribute, train
root = sys.argv[1]
corpus = write_corpus(root + "/corpus", n_per_class=60)
with open(root + "/u.csv", "w") as f:
  f.write("text\n" + "".join(f"unlabelled great film {i}\n" for i in range(24)))
out = {}
for strategy in ("default", "mirrored"):
  cfg = tiny_config(corpus, f"{root}/{strategy}", f"{root}/sm", name="transformer")
  # As tests/test_distribute.py: no dropout, batches padded to their longest.
  cfg = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, bucket_width=0),
      model=dataclasses.replace(cfg.model, dropout=0.0, ensemble_size=2, wide_ngrams=2),
      train=dataclasses.replace(cfg.train, strategy=strategy, teacher=sys.argv[2],
                                distill_alpha=0.7, distill_unlabeled=f"csv:{root}/u.csv"),
      export=dataclasses.replace(cfg.export, model_name="student"))
  result = train.train_and_evaluate(cfg)
  out[strategy] = {"replicas": distribute.get_strategy(strategy).num_replicas_in_sync,
                   "history": result["history"], "validation": result["validation"]}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_distillation_matches_one_device(teacher_path, tmp_path):
  """A Transformer ensemble of two with the wide path, taught with unlabelled texts: under
  Mirrored on two CPUs the per-epoch losses match one device's (the targets are split with
  the texts across replicas and members)."""
  out = pooled_python.mirrored_result(MIRRORED_SCRIPT, tmp_path, teacher_path)
  assert out["mirrored"]["replicas"] == 2
  single, mirrored = out["default"]["history"], out["mirrored"]["history"]
  assert single["loss"][-1] < single["loss"][0]  # It trained.
  assert mirrored["loss"] == pytest.approx(single["loss"], rel=1e-4, abs=1e-5)
  assert mirrored["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4, abs=1e-5)
  assert out["mirrored"]["validation"] == pytest.approx(out["default"]["validation"], rel=1e-4,
                                                        abs=1e-5)
