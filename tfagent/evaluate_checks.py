"""What `tfagent evaluate` checks before it scores: the output folder, the task, the export
(multiclass, one text or a pair as the data gives, its classes by name) and, for a run's own
test split, that --dataset still reads the split the run trained with."""

import json
import os

from absl import logging
import tensorflow as tf

from tfagent import signatures
from tfagent.errors import ConfigError, DataError


def check_overwrite(output_dir: str, overwrite: bool) -> None:
  """Fails, before any work, when `output_dir` holds a metrics.json and `overwrite` is off."""
  path = os.path.join(output_dir, "metrics.json")
  if not overwrite and tf.io.gfile.exists(path):
    raise ConfigError(f"{path} exists; pass --overwrite to replace it (overwrite=True in "
                      "Python), or --output_dir=DIR to write elsewhere.")


def check_multiclass(data_cfg) -> None:
  """This command scores multiclass runs; a multilabel run's metrics come from training."""
  if data_cfg.task != "multiclass":
    raise ConfigError(f"--task={data_cfg.task}: tfagent evaluate scores multiclass models; a "
                      "multilabel run writes its eval/metrics.json (micro/macro F1, per "
                      "label, subset accuracy, LRAP) when it trains.")


def test_split_facts(report: dict, split_sizes: dict) -> dict:
  """What identifies a test split: its size, class balance and digest (where recorded)."""
  return {"examples": (split_sizes or {}).get("test"),
          "classes": (report.get("class_balance") or {}).get("test"),
          "digest": (report.get("split_digests") or {}).get("test")}


def check_same_test_split(model_dir: str, info, dataset: str) -> None:
  """Fails when the run's test split, read again, is not the one its data_report.json
  recorded: a relative --dataset read from another directory, or a file edited since."""
  path = os.path.join(model_dir, "data_report.json")
  if not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    recorded = json.load(f)
  before = test_split_facts(recorded, recorded.get("split_sizes"))
  if not before["examples"]:  # Trained without test (a tune trial): nothing to compare.
    return
  now = test_split_facts(info.report, info.split_sizes)
  differ = [k for k in before if before[k] is not None and now[k] is not None
            and before[k] != now[k]]
  if differ:
    raise DataError(
        f"--model_dir={model_dir}: --dataset={dataset} now gives another test split than the "
        f"run trained with ({now['examples']} examples, classes {now['classes']}; "
        f"{path} recorded {before['examples']}, {before['classes']}"
        f"{'; their texts or labels differ' if differ == ['digest'] else ''}). A relative "
        "path is read from the current directory: run from the directory the run trained "
        "in, or score a file with --saved_model and --dataset.")


def warn_if_quantized(model_dir: str) -> None:
  """best.keras is float32; where the run kept an int8/int4 export, says whose figures these are."""
  path = os.path.join(model_dir, "eval", "metrics.json")
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      run = json.load(f)
    kept = (run.get("quantization") or {}).get("kept", "float32")
    if kept != "float32":
      logging.warning("%s: the run exported its %s model; checkpoints/best.keras is its float32 "
                      "model, whose figures these are. Pass --saved_model=%s to score the "
                      "export.", model_dir, kept, run.get("saved_model", "EXPORT"))


def checked_export(export_dir: str, data_cfg, class_names=None) -> tuple:
  """`(predict_fn, class names)` of an export this command can score on `data_cfg`'s texts:
  multiclass, reading one text or a pair as the data gives them. With `class_names` (a run's),
  the export's probabilities come back in their order (an export of the same classes in
  another order is remapped by name); other classes are an error."""
  given = f"--saved_model={export_dir}"
  signature = signatures.read_signature_defs(export_dir)[signatures.DEFAULT_SIGNATURE]
  if "label_mask" in signature.outputs:
    raise ConfigError(f"{given} is a multilabel export (it answers label_mask); tfagent "
                      "evaluate scores multiclass models, and a multilabel run writes its "
                      "eval/metrics.json when it trains.")
  if (signatures.TEXT_PAIR in signature.inputs) != bool(data_cfg.text_pair_field):
    raise ConfigError(
        f"{given} reads " + ("sentence pairs (text, text_pair); give --text_pair_field"
                             if signatures.TEXT_PAIR in signature.inputs else
                             "one text; leave --text_pair_field empty") + " to score it.")
  names = signatures.class_names(export_dir)
  predict_fn = signatures.probabilities_fn(export_dir)
  if class_names is None or list(class_names) == names:
    return predict_fn, names
  if sorted(class_names) != sorted(names):
    raise ConfigError(f"{given} answers the classes {names}; the run's are {list(class_names)}. "
                      "Score an export of this run's classes.")
  order = [names.index(name) for name in class_names]
  return lambda text: tf.gather(predict_fn(text), order, axis=1), list(class_names)
