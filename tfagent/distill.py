"""Knowledge distillation: the model (the student) learns a teacher export's probabilities.

`--teacher=saved_models/NAME[/VERSION]` is read as a SavedModel through its
`serving_default` signature (text -> probabilities), so any export can teach: an
ensemble, a BERT fine-tune, a tuned model. The teacher labels every training text
once, before fit (and the `--distill_unlabeled` texts, which the student then also
trains on); its tempered probabilities travel through tf.data beside the label, as
one target `<float32>[1 + C]` = [label (-1: unlabelled), softmax(log(p) / T)].

The loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") is
  alpha * T^2 * CE(softmax(log(p_teacher) / T), softmax(z / T)) + (1 - alpha) * CE(label, z).
T^2 is kept, as Hinton's paper and keras.distillation's LogitsDistillation do: the
soft term's gradient shrinks as 1/T^2, and the factor keeps alpha the share of the
gradient at any temperature. Validation keeps integer labels, so val_loss (early
stopping, the best checkpoint) stays the labels' cross-entropy. The wide path is
fitted on the labels as before; distillation trains the deep path (the classifier).
"""

import dataclasses
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfagent import model_card, multilabel_export, progress, signatures
from tfagent.data import pipeline, unlabeled
from tfagent.errors import ConfigError
from tfagent.versions import is_version, resolve_saved_model

TEACH_BATCH = 256  # Texts a teacher call.
MIN_PROBABILITY = 1e-12  # Floor before log(p): a probability of exactly 0 stays finite.


@dataclasses.dataclass(frozen=True)
class Taught:
  """The training split the classifier fits: `(text, target)` elements."""
  train: tf.data.Dataset  # target: <int32>[] label, or with a teacher <float32>[1 + C].
  n_train: int  # Its examples (the unlabelled ones included).
  report: dict  # What the model card says of the teacher; {} without one.


def check_config(cfg) -> None:
  """Fails on --distill_* values that cannot work, before any data is read."""
  train_cfg = cfg.train
  if not train_cfg.teacher:
    if train_cfg.distill_unlabeled:
      raise ConfigError(f"--distill_unlabeled={train_cfg.distill_unlabeled} needs "
                        "--teacher=saved_models/NAME[/VERSION]: the teacher labels those texts.")
    return
  if not train_cfg.distill_temperature > 0:
    raise ConfigError(f"--distill_temperature={train_cfg.distill_temperature} is invalid; "
                      "expected a temperature above 0 (1 leaves the teacher's probabilities "
                      "as they are, 3-5 softens them).")
  if not 0.0 <= train_cfg.distill_alpha <= 1.0:
    raise ConfigError(f"--distill_alpha={train_cfg.distill_alpha} is invalid; expected 0 "
                      "(labels only) to 1 (teacher only).")
  # Not yet: their weights and metrics read the integer label, not the packed targets.
  unsupported = [f for f, bad in (
      (f"--task={cfg.data.task}", cfg.data.task != "multiclass"),
      (f"--class_weight={train_cfg.class_weight}", train_cfg.class_weight not in ("", "none")),
      (f"--monitor={train_cfg.monitor}", train_cfg.monitor == "val_macro_f1")) if bad]
  if unsupported:
    raise ConfigError(f"--teacher={train_cfg.teacher} does not work with "
                      f"{', '.join(unsupported)} yet; distillation takes --task=multiclass, "
                      "--class_weight=none and --monitor=val_loss or val_accuracy.")


def teacher_error(path: str, why: str) -> ConfigError:
  return ConfigError(f"--teacher={path}: {why}; expected a classifier export of "
                     "tfagent.train (saved_models/NAME for its highest version, or "
                     "saved_models/NAME/VERSION) whose serving_default takes `text` "
                     "<string>[batch] and returns `probabilities`.")


class Teacher:
  """A classifier export read through its serving_default signature; never trained."""

  def __init__(self, path: str):
    self.path = path
    try:
      self.export_dir = resolve_saved_model(path)
      signatures.register_text_ops()  # A BERT teacher's graph needs tensorflow_text's ops.
      self.module = tf.saved_model.load(self.export_dir)  # Holds the variables alive.
    except (ConfigError, tf.errors.OpError, OSError, ValueError) as e:
      raise teacher_error(path, f"not a SavedModel ({str(e).splitlines()[0]})") from None
    self.serve = self.module.signatures.get(signatures.DEFAULT_SIGNATURE)
    if self.serve is None:
      raise teacher_error(path, f"{self.export_dir} has no serving_default signature")
    inputs, outputs = self.serve.structured_input_signature[1], self.serve.structured_outputs
    text = inputs.get("text")
    if text is None or text.dtype != tf.string or "probabilities" not in outputs:
      raise teacher_error(path, f"its serving_default takes {inputs} and returns "
                          f"{sorted(outputs)}")
    if multilabel_export.LABEL_MASK in outputs:
      raise teacher_error(path, "it is a multilabel export, whose probabilities are a sigmoid "
                          "a label, not one distribution over the classes to distil")
    if signatures.TEXT_PAIR in inputs:
      raise teacher_error(path, "it takes text and text_pair (a sentence-pair export): it "
                          "cannot label one text a record")
    self.class_names = self.read_class_names()
    base = os.path.basename(os.path.normpath(self.export_dir))
    self.version = int(base) if is_version(base) else None

  @property
  def variables(self) -> list:
    return list(self.serve.variables)

  def read_class_names(self) -> list:
    """Class names in probability order: the classify signature's on a probe, else the card."""
    classify = self.module.signatures.get(signatures.CLASSIFY_SIGNATURE)
    if classify is not None:
      example = tf.train.Example(features=tf.train.Features(feature={
          "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))
      out = classify(inputs=tf.constant([example.SerializeToString()]))
      return [c.decode("utf-8") for c in out[signatures.CLASSIFY_CLASSES].numpy()[0]]
    card = model_card.read(self.export_dir)
    if card:
      return list(card["class_names"])
    raise teacher_error(self.path, "its class names cannot be read (no classify signature, "
                        "no model_card.json)")

  def probabilities(self, text: tf.Tensor) -> np.ndarray:
    """`<string>[batch]` -> `<float32>[batch, C]`, in the teacher's class order."""
    return self.serve(text=text)["probabilities"].numpy()


def class_order(teacher: Teacher, class_names, dataset: str) -> list:
  """Teacher columns in the data's class order; other classes than the data's are an error."""
  names = list(class_names)
  if sorted(teacher.class_names) != sorted(names):
    raise ConfigError(f"--teacher={teacher.path}: the export ({teacher.export_dir}) has the "
                      f"classes {', '.join(teacher.class_names)}, the data (--dataset={dataset}) "
                      f"{', '.join(names)}; a teacher must know the data's classes.")
  return [teacher.class_names.index(n) for n in names]


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(log(p) / T) of `<float>[n, C]` probabilities."""
  logits = np.log(np.maximum(probs.astype(np.float64), MIN_PROBABILITY)) / temperature
  logits -= logits.max(axis=-1, keepdims=True)
  e = np.exp(logits)
  return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def teach_texts(teacher: Teacher, texts: tf.data.Dataset, order: list, temperature: float):
  """`<float32>[n, C]`: the teacher's tempered probabilities of `<string>[]` texts, in order."""
  return teacher_rows([teacher.probabilities(t) for t in texts.batch(TEACH_BATCH)], order,
                      temperature)


def teacher_rows(probs: list, order: list, temperature: float) -> np.ndarray:
  """`<float32>[n, C]`: batches of the teacher's probabilities, in the data's class order and
  tempered."""
  if not probs:
    return np.zeros((0, len(order)), np.float32)
  return tempered(np.concatenate(probs)[:, order], temperature)


def teach_split(teacher: Teacher, split: tf.data.Dataset, order: list, temperature: float):
  """One pass over `(text, label)` elements: `(keys <int64>[n], labels <int32>[n], soft
  <float32>[n, C])`, each row of the same element (`text_keys` finds a text's row)."""
  keys, labels, probs = [], [], []
  for text, label in split.batch(TEACH_BATCH):
    keys.append(text_keys(text).numpy())
    labels.append(label.numpy())
    probs.append(teacher.probabilities(text))
  soft = teacher_rows(probs, order, temperature)
  if not probs:
    return np.zeros(0, np.int64), np.zeros(0, np.int32), soft
  return np.concatenate(keys), np.concatenate(labels).astype(np.int32), soft


def text_keys(text: tf.Tensor) -> tf.Tensor:
  """`<int64>[...]` 64-bit hashes of `<string>[...]` texts (one text, one row of targets)."""
  return tf.strings.to_hash_bucket_fast(text, 2**63 - 1)


def attached(split: tf.data.Dataset, keys: np.ndarray, soft: np.ndarray) -> tf.data.Dataset:
  """`(text, [label, soft...])`: each element's teacher probabilities found by its text, not
  by its position, since a stream read with --deterministic=false comes in another order on
  every pass (copies of a text have the same probabilities: any of them serves)."""
  unique, first = np.unique(keys, return_index=True)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(unique, first.astype(np.int64)), -1)
  rows = tf.constant(soft)

  def attach(text, label):
    soft_row = tf.gather(rows, table.lookup(text_keys(text)))  # -1 (not taught) raises.
    return text, tf.concat([tf.cast(label, tf.float32)[None], soft_row], 0)
  return split.map(attach, num_parallel_calls=tf.data.AUTOTUNE)


def packed(texts, labels, soft) -> tf.data.Dataset:
  """`(text, [label, soft...])` elements: one target carries the label and the teacher's."""
  targets = np.concatenate([np.asarray(labels, np.float32)[:, None], soft], axis=1)
  return tf.data.Dataset.zip(texts, tf.data.Dataset.from_tensor_slices(targets))


def mixed(labelled: tf.data.Dataset, extra: tf.data.Dataset, n_labelled: int, n_extra: int,
          seed: int) -> tf.data.Dataset:
  """Both datasets' elements, interleaved in a seeded random order (a shuffle buffer
  smaller than both would otherwise see mostly one of them at a time)."""
  choice = np.random.default_rng(seed).permutation(
      np.repeat(np.array([0, 1], np.int64), [n_labelled, n_extra]))
  out = tf.data.Dataset.choose_from_datasets([labelled, extra],
                                             tf.data.Dataset.from_tensor_slices(choice))
  if pipeline.held_in_memory(labelled):  # Token ids are cached for in-memory splits.
    out = out.apply(tf.data.experimental.assert_cardinality(n_labelled + n_extra))
  return out


def teach(cfg, splits, info, n_train: int, teacher: Teacher = None, held_out=None) -> Taught:
  """The training split with the teacher's tempered probabilities beside each label.

  `teacher`: --teacher already loaded (a caller that keeps it across runs), or None.
  `held_out`: unlabeled.held_out_once's call, shared with --unlabeled (None reads them here).
  """
  check_config(cfg)  # Again: the Python API reaches here without the command's checks.
  if not cfg.train.teacher:
    return Taught(splits["train"], n_train, {})
  with progress.stage("Labelling the training texts with the teacher (--teacher)"):
    return labelled_by(teacher or Teacher(cfg.train.teacher), cfg, splits, info,
                       held_out or unlabeled.held_out_once(splits, cfg.data))


def labelled_by(teacher: Teacher, cfg, splits, info, held_out) -> Taught:
  """`teach` with its teacher loaded: the labelled split's targets, then the unlabelled texts'."""
  tc = cfg.train
  order = class_order(teacher, info.class_names, cfg.data.dataset)
  keys, labels, soft = teach_split(teacher, splits["train"], order, tc.distill_temperature)
  train = attached(splits["train"], keys, soft)
  agreement = float((soft.argmax(-1) == labels).mean())
  report = {"teacher": tc.teacher, "teacher_export": teacher.export_dir,
            "teacher_version": teacher.version, "temperature": tc.distill_temperature,
            "alpha": tc.distill_alpha, "teacher_train_accuracy": agreement, "unlabeled": None}
  logging.info("Teacher %s (version %s): agrees with %.2f %% of the %d training labels.",
               teacher.export_dir, teacher.version, 100 * agreement, len(labels))
  n_extra = 0
  if tc.distill_unlabeled:
    extra, report["unlabeled"] = unlabeled.unlabeled_texts(
        "distill_unlabeled", tc.distill_unlabeled, cfg.data,
        held_out())
    extra_ds = tf.data.Dataset.from_tensor_slices(tf.constant(extra, tf.string))
    extra_soft = teach_texts(teacher, extra_ds, order, tc.distill_temperature)
    n_extra = len(extra)
    train = mixed(train, packed(extra_ds, np.full(n_extra, -1), extra_soft), len(labels),
                  n_extra, cfg.data.seed)
    logging.info("%d unlabelled texts from %s join the %d labelled ones.", len(extra),
                 tc.distill_unlabeled, len(labels))
  return Taught(train, len(labels) + n_extra, report)


def split_targets(y_true, y_pred) -> tuple:
  """`(labels <int32>[...], soft <float32>[..., C] or None)` of a plain or packed target."""
  if len(y_true.shape) < len(y_pred.shape):  # Integer labels: validation, or no teacher.
    return keras.ops.cast(y_true, "int32"), None
  return keras.ops.cast(y_true[..., 0], "int32"), keras.ops.cast(y_true[..., 1:], "float32")


@keras.saving.register_keras_serializable(package="tfagent")
class DistillationLoss(keras.losses.Loss):
  """Hinton's loss on packed targets (module docstring); plain labels: their cross-entropy.

  `y_pred`: logits `<float>[..., C]`; `y_true`: labels `<int>[...]`, or `<float32>[..., 1 + C]`
  targets whose label -1 (an unlabelled text) leaves out the label term.
  """

  def __init__(self, temperature=3.0, alpha=0.5, name="distillation", **kwargs):
    super().__init__(name=name, **kwargs)
    self.temperature, self.alpha = float(temperature), float(alpha)

  def call(self, y_true, y_pred):
    logits = keras.ops.cast(y_pred, "float32")
    labels, soft = split_targets(y_true, logits)
    hard = keras.losses.sparse_categorical_crossentropy(keras.ops.maximum(labels, 0), logits,
                                                        from_logits=True)
    if soft is None:
      return hard
    t = self.temperature
    taught = -keras.ops.sum(soft * keras.ops.log_softmax(logits / t, axis=-1), axis=-1) * t * t
    return self.alpha * taught + (1.0 - self.alpha) * keras.ops.where(labels >= 0, hard, 0.0)

  def get_config(self):
    return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="tfagent")
class LabelAccuracy(keras.metrics.Mean):
  """Accuracy against the labels of plain or packed targets; unlabelled texts not counted."""

  def __init__(self, name="accuracy", **kwargs):
    super().__init__(name=name, **kwargs)

  def update_state(self, y_true, y_pred, sample_weight=None):
    labels, _ = split_targets(y_true, y_pred)
    right = keras.ops.cast(keras.ops.equal(labels, keras.ops.cast(
        keras.ops.argmax(y_pred, axis=-1), "int32")), "float32")
    return super().update_state(right, keras.ops.cast(labels >= 0, "float32"))


def compile_args(train_cfg, task_args: dict) -> dict:
  """The classifier's loss and metrics: the task's (`task_args`), or with a teacher the
  distillation loss on packed targets."""
  # Not keras.distillation.Distiller: it reruns the teacher each step, on ids it cannot take.
  if not train_cfg.teacher:
    return task_args
  return {"loss": DistillationLoss(train_cfg.distill_temperature, train_cfg.distill_alpha),
          "metrics": [LabelAccuracy()]}
