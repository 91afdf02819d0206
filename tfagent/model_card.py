"""A model card beside every export: what the model is, what it learned from, how it scores.

`model_card.json` and `model_card.md` go into the export's version directory
(TF Serving reads only saved_model.pb, variables/ and assets*), written after
the export is evaluated, each beside its name and moved into place. They hold
the class names, the data source with a hash of each split's content and its
size, test and validation metrics with per-class precision/recall/F1 (the same
figures as eval/metrics.json), the resolved config, the package versions, and
warnings measured on the data.
"""

import hashlib
import importlib.metadata
import json
import os
import platform

from tfagent import fileio
from tfagent.data import pairs
from tfagent.data.multilabel import is_multilabel

UNKNOWN_WARN = 0.20  # Share of [UNK] pieces above which the vocabulary does not fit the text.
FEW_EXAMPLES = 1000  # Training texts below which test figures are loose.
IMBALANCE_WARN = 5.0  # Largest class / smallest class in train.
PACKAGES = ("tensorflow", "keras", "keras-hub", "tensorflow-text", "scikit-learn", "numpy",
            "tfagent")
METRIC_KEYS = ("examples", "accuracy", "macro_precision", "macro_recall", "macro_f1",
               "roc_auc", "per_class", "micro_f1", "subset_accuracy", "lrap")  # Last 3: multilabel.


def split_hash(split) -> str:
  """SHA-256 of a split's `(text, label)` sequence, in order: the content it held."""
  digest = hashlib.sha256()
  for text, label in split.batch(4096).as_numpy_iterator():
    for t, y in zip(pairs.joined(text), label):  # A sentence pair's texts joined by NUL.
      # A multi-hot label (multilabel) as its 0/1 values joined by commas.
      label = ",".join(str(int(v)) for v in y) if y.ndim else str(int(y))
      digest.update(t + b"\0" + label.encode() + b"\n")
  return digest.hexdigest()


def unknown_share(model, texts: list) -> float:
  """Share of `[UNK]` among the tokens (word pieces) the model's tokenizer makes of `texts`."""
  import numpy as np
  import tensorflow as tf
  tokenizer = model.tokenizer
  vocabulary = tokenizer.vocabulary()
  if "[UNK]" not in vocabulary or not texts:
    return 0.0
  special = [i for i, piece in enumerate(vocabulary) if piece in ("[PAD]", "[CLS]", "[SEP]", "")]
  ids = np.concatenate([tokenizer(tf.constant(texts[i:i + 256])).numpy().ravel()
                        for i in range(0, len(texts), 256)])
  pieces = ids[~np.isin(ids, special + [0])]
  return float((pieces == vocabulary.index("[UNK]")).mean()) if len(pieces) else 0.0


def vocabulary_warning(cfg, share: float) -> str:
  """A warning when the vocabulary misses more than UNKNOWN_WARN of the pieces, else ''; it
  advises --wide_ngrams only where the run may add it (multilabel and pair runs refuse it)."""
  if share <= UNKNOWN_WARN:
    return ""
  wide = not (is_multilabel(cfg.data) or cfg.data.text_pair_field)
  if cfg.model.name == "bert":
    return (f"{share:.0%} of the word pieces of the training texts are [UNK]: the "
            "pretrained encoder's vocabulary does not cover this language or script, and "
            "what it cannot see it cannot learn. Use --model=lstm" + " --wide_ngrams=4" * wide
            + " (trained from scratch, any language), or a --preset for this language.")
  return (f"{share:.0%} of the validation tokens are out of the vocabulary: raise "
          "--vocab_size" + (", or add --wide_ngrams." if wide else "."))


def card_warnings(cfg, info, result: dict) -> list:
  """The card's warnings, of every task: the vocabulary's (the [UNK] share training measured,
  `result["unknown_token_share"]`), then `data_warnings`'."""
  vocabulary = vocabulary_warning(cfg, result.get("unknown_token_share", 0.0))
  return [vocabulary] * bool(vocabulary) + data_warnings(info, result)


def data_warnings(info, result: dict) -> list:
  """Warnings measured on the data and the run: size, balance, duplicates, a path unused."""
  warnings = []
  sizes = info.split_sizes or {}
  if sizes.get("train", FEW_EXAMPLES) < FEW_EXAMPLES:
    warnings.append(f"Only {sizes['train']} training texts: test figures on "
                    f"{sizes.get('test')} texts vary by several points from run to run.")
  balance = info.report.get("class_balance", {}).get("train") or {}
  counts = [n for n in balance.values() if isinstance(n, (int, float))]
  if counts and min(counts) > 0 and max(counts) / min(counts) > IMBALANCE_WARN:
    warnings.append(f"The classes are unbalanced in train ({balance}): read the per-class "
                    "recall, not only accuracy.")
  conflicting = info.report.get("conflicting_labels")
  if conflicting and info.report.get("dedup"):
    warnings.append(f"{conflicting} repeated texts carried another label than their first "
                    f"copy; every copy of such a text was removed "
                    f"({info.report.get('removed', {}).get('conflicting_texts', 0)} texts).")
  elif conflicting:
    warnings.append(f"{conflicting} repeated texts carry another label than their first copy, "
                    "and are trained on under both; --dedup removes every copy.")
  weight = result.get("wide", {}).get("deep_weight", {}).get("chosen")
  if weight == 0.0:
    warnings.append("The deep path's weight is 0: on validation it added nothing to the "
                    "wide (n-gram) path, so the export is a linear model in effect.")
  return warnings


def package_versions() -> dict:
  versions = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def build(cfg, info, result: dict, hashes: dict, warnings: list) -> dict:
  """The card as a dict; its metrics are `result`'s, i.e. eval/metrics.json's."""
  validation = result.get("validation_metrics", result.get("validation", {}))
  return {
      "model_name": cfg.export.model_name, "saved_model": result["saved_model"],
      "model": cfg.model.name, "class_names": list(info.class_names),
      "data": {"source": cfg.data.dataset, "test_source": tested_on(cfg.to_dict()["data"]),
               "split_sizes": info.split_sizes,
               "content_sha256": hashes, "report": {
                   k: info.report.get(k) for k in ("duplicates", "conflicting_labels",
                                                   "skipped_total", "class_balance")}},
      "metrics": {"test": {k: result[k] for k in METRIC_KEYS if k in result},
                  "validation": validation, "paths": result.get("paths")},
      "training": {"epochs_run": result.get("epochs_run"),
                   "train_seconds": result.get("train_seconds"),
                   "class_weights": result.get("class_weights"),
                   "wide": result.get("wide"), "distillation": result.get("distillation"),
                   "unlabeled": result.get("unlabeled")},
      "quantization": result.get("quantization"),
      "config": cfg.to_dict(), "versions": package_versions(), "warnings": warnings,
  }


def tested_on(data_cfg: dict, code: bool = False) -> str:
  """Where the test figures' texts come from (`data_cfg`: the config's `data` as a dict): the
  held-out fold of --dataset under --folds (which leaves --test_path unread), else
  --test_path's file, else --dataset's own test part. `code`: the names in backticks."""
  quote = (lambda name: f"`{name}`") if code else str
  if data_cfg.get("folds", 0) > 1:
    return (f"{quote(data_cfg['dataset'])} (held-out fold {data_cfg['fold']} of "
            f"{data_cfg['folds']})")
  return quote(data_cfg.get("test_path") or data_cfg["dataset"])


def model_line(card: dict) -> str:
  """The markdown line of the model: its kind, an ensemble's members, the wide path."""
  model_cfg = card["config"]["model"]
  members, ngrams = model_cfg.get("ensemble_size", 1), model_cfg["wide_ngrams"]
  return (f"- Model: `--model={card['model']}`"
          + (f", an ensemble of {members} members (`--ensemble_size={members}`: each trained "
             "from its own initial weights and batch order; the export averages their "
             "probabilities)" if members > 1 else "")
          + (f", wide path of 1-{ngrams}-grams" if ngrams else ""))


def data_line(card: dict) -> str:
  """The markdown line of the data: the source, where the test texts come from when that is
  not its own test part (--test_path, a cross-validation fold), the split sizes."""
  source, tested = f"`{card['data']['source']}`", tested_on(card["config"]["data"], code=True)
  return (f"- Data: {source}" + (f", test texts from {tested}" if tested != source else "")
          + f", splits {card['data']['split_sizes']}")


def weights_line(weights: dict, train_cfg: dict) -> list:
  """The markdown line of a run with --class_weight (each class's weight), or none."""
  if not weights:
    return []
  return [f"- Class weights `--class_weight={train_cfg['class_weight']}`: "
          + ", ".join(f"{name} {w:.4g}" for name, w in weights.items())
          + f"; the epoch kept by `--monitor={train_cfg['monitor']}`"]


def distilled_line(report) -> list:
  """The markdown line of a distilled model (tfagent/distill.py), or none."""
  if not report:
    return []
  extra = report.get("unlabeled")
  return [f"- Distilled from `{report['teacher_export']}` (version {report['teacher_version']}) "
          f"at temperature {report['temperature']:g}, alpha {report['alpha']:g}"
          + (f"; {extra['count']} unlabelled texts from `{extra['source']}`" if extra else "")]


def to_markdown(card: dict) -> str:
  """The card as a page a person reads."""
  test, val = card["metrics"]["test"], card["metrics"]["validation"]
  thresholds = card.get("thresholds")  # Multilabel: label -> threshold, read from the export.
  lines = [f"# Model card: {card['model_name']}", "", *export_lines(card),
           model_line(card), f"- Classes: {', '.join(card['class_names'])}", data_line(card),
           *distilled_line(card["training"].get("distillation")),
           *weights_line(card["training"].get("class_weights"), card["config"]["train"]),
           "", "## Metrics", "", metrics_line(test, val, thresholds is not None), "",
           "| class | precision | recall | F1 | test texts |" + " threshold |" * bool(thresholds),
           "| --- | --- | --- | --- | --- |" + " --- |" * bool(thresholds)]
  for name, m in test["per_class"].items():
    lines.append(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
                 f"{m['support']} |" + (f" {thresholds[name]:.4f} |" if thresholds else ""))
  lines += quantization_lines(card.get("quantization"))
  lines += ["", "## Warnings", ""]
  lines += [f"- {w}" for w in card["warnings"]] or ["- None measured."]
  lines += ["", "## Data content (SHA-256 of each split's texts and labels, in order)", ""]
  lines += [f"- {split}: `{digest}`" for split, digest in card["data"]["content_sha256"].items()]
  lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
            "", "The resolved config is in model_card.json (`config`)."]
  return "\n".join(lines) + "\n"


def export_lines(card: dict) -> list:
  """The card's lines on the export's inputs and outputs: one text or a sentence pair in;
  softmax classes, or (multilabel) independent sigmoid scores and per-label thresholds out."""
  data_cfg = card["config"]["data"]
  inputs = (f"`text` and `text_pair`, <string>[-1] each, row i one sentence pair (trained "
            f"with `text` from field `{data_cfg['text_field']}`, `text_pair` from field "
            f"`{data_cfg['text_pair_field']}`)" if data_cfg.get("text_pair_field")
            else "`text` <string>[-1], raw text")
  lines = [f"- Export: `{card['saved_model']}`. TF Serving's `serving_default` takes {inputs}."]
  if card.get("thresholds") is None:
    return lines + ["- It returns `probabilities` <float32>[-1, C] (softmax: a row sums to 1), "
                    "`class_ids` <int64>[-1] and `classes` <string>[-1]. `classify` takes "
                    "tf.Examples with the same features."]
  return lines + [
      "- Multi-label: it returns `probabilities` <float32>[-1, C], each label's independent "
      "sigmoid score (a row need not sum to 1); `label_mask` <bool>[-1, C], on where the score "
      "is at least its label's threshold (the table below: tuned on validation, read from the "
      "export); `labels` <string>[-1, C], the names under the mask in class order, padded "
      "with \"\". `classify` takes tf.Examples with the same features and returns every "
      "label's score."]


def metrics_line(test: dict, val: dict, multilabel: bool) -> str:
  """The card's headline figures: accuracy and macro F1, or micro/macro F1 for multilabel."""
  if multilabel:
    return (f"Test: micro F1 {test['micro_f1']:.4f}, macro F1 {test['macro_f1']:.4f}, subset "
            f"accuracy {test['subset_accuracy']:.4f}, LRAP {test['lrap']:.4f} on "
            f"{test['examples']} texts. Validation: micro F1 "
            f"{val.get('micro_f1', float('nan')):.4f}.")
  return (f"Test: accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}, ROC-AUC "
          f"{test['roc_auc']:.4f} on {test['examples']} texts. Validation: accuracy "
          f"{val.get('accuracy', float('nan')):.4f}.")


def quantization_lines(report: dict) -> list:
  """The card's Quantization section (tfagent/quantize.py's report), or none without one."""
  if not report:
    return []
  metric = report.get("metric", "accuracy")  # Cards written before multilabel int8 lack it.
  mode, accuracy = report["mode"], report[f"validation_{metric}"]
  name = "micro-F1" if metric == "micro_f1" else "accuracy"
  size, variables = report["export_bytes"], report["variables_bytes"]
  kept = (f"the {mode} export" if report["kept"] == mode else
          f"the float32 export: {report['reason']}")
  return ["", "## Quantization", "",
          f"`--quantize={mode}`, gate {report['max_drop_points']:g} {name} points: kept {kept}.",
          "", f"| | float32 | {mode} |", "| --- | --- | --- |",
          f"| export bytes | {size['float32']} | {size[mode]} |",
          f"| variables/ bytes | {variables['float32']} | {variables[mode]} |",
          f"| validation {name} | {accuracy['float32']:.4f} | {accuracy[mode]:.4f} |"]


def read(export_dir: str) -> dict:
  """The model_card.json of an export's version directory; {} when it has none."""
  import tensorflow as tf
  path = os.path.join(export_dir, "model_card.json")
  if not tf.io.gfile.exists(path):
    return {}
  return json.loads(fileio.read_text(path))


def write(export_dir: str, card: dict) -> None:
  """Writes model_card.json and model_card.md into the export's version directory."""
  fileio.write_text_atomically(os.path.join(export_dir, "model_card.json"),
                               json.dumps(card, indent=2, ensure_ascii=False))
  fileio.write_text_atomically(os.path.join(export_dir, "model_card.md"), to_markdown(card))
