"""File sources: `csv:PATH`, `tsv:PATH`, `jsonl:PATH` (also .gz) and `dir:PATH`."""

import functools
import os

from absl import logging
import tensorflow as tf

from tfagent.data import multilabel, records, sources
from tfagent.data.labels import LabelMap, check_spellings, fixed_labels, fold
from tfagent.data.validate import Part, load_parts
from tfagent.errors import DataError


def _require_file(path: str, flag: str, kind: str) -> None:
  if not tf.io.gfile.exists(path):
    raise DataError(f"{flag}: {path} does not exist; give a readable file.")
  if tf.io.gfile.isdir(path):
    raise DataError(f"{flag}: {path} is a folder; {kind}:PATH takes one file (for one "
                    "folder per class use dir:PATH).")


def _file_parts(kind: str, arg: str, data_cfg, reader) -> list:
  """The training file and, with `--test_path`, the official test file."""
  _require_file(arg, "--dataset", kind)
  parts = [Part("train", functools.partial(reader, arg, data_cfg))]
  if data_cfg.test_path:
    _require_file(data_cfg.test_path, "--test_path", kind)
    parts.append(Part("test", functools.partial(reader, data_cfg.test_path, data_cfg)))
  return parts


def _load_file(reader, kind: str, arg: str, data_cfg) -> tuple:
  parts = _file_parts(kind, arg, data_cfg, reader)
  return load_parts(parts, fixed_labels(data_cfg), data_cfg, f"{kind}:{arg}")


def _read_delimited(delimiter, path, data_cfg):
  return records.read_delimited(path, delimiter, (data_cfg.text_field, data_cfg.label_field),
                                data_cfg.group_field,
                                label_list=multilabel.label_list(data_cfg),
                                pair=data_cfg.text_pair_field)


def _read_jsonl(path, data_cfg):
  return records.read_jsonl(path, (data_cfg.text_field, data_cfg.label_field),
                            data_cfg.group_field,
                            label_list=multilabel.label_list(data_cfg),
                            pair=data_cfg.text_pair_field)


def folder_labels(files: dict, data_cfg, source: str) -> LabelMap:
  """Classes from the train folders; two differing only in case are an error, or one class."""
  if not data_cfg.normalize_labels:
    check_spellings({name: len(paths) for name, paths in files.items()},
                    f"{source}: class folders", "files")
  names = sorted({fold(n) if data_cfg.normalize_labels else n for n in files})
  return LabelMap(names, "fixed", data_cfg.normalize_labels)


def read_tree(root: str, fixed) -> tuple:
  """`(files by class folder, folders left out)` of root/CLASS/**: all, or those in `fixed`."""
  folders = records.class_folders(root)
  chosen = [f for f in folders if fixed is None or fixed.id_of(f) is not None]
  return records.class_files(root, chosen), sorted(set(folders) - set(chosen))


def tree_report(arg: str, trees: dict) -> dict:
  """Files per class folder, and how many of them sit in its subfolders; also logged."""
  report = {"class_files": {}, "class_files_in_subfolders": {}}
  for split, files in trees.items():
    top = {name: os.path.join(arg, split, name) for name in files}
    report["class_files"][split] = {n: len(paths) for n, paths in files.items()}
    report["class_files_in_subfolders"][split] = {
        n: sum(os.path.dirname(p) != top[n] for p in paths) for n, paths in files.items()}
  logging.info("dir:%s: files per class folder %s, of them in subfolders %s.", arg,
               report["class_files"], report["class_files_in_subfolders"])
  return report


def load_dir(arg: str, data_cfg) -> tuple:
  """`dir:PATH`: PATH/train/CLASS/** (and PATH/test/CLASS/**), one text a file.

  Class folders are read recursively. Class names are the folder names under
  train (sorted), or `--class_names`, which also selects folders: IMDB's
  `train/unsup` is then left out, and said so. A test folder that is no class
  holds unknown labels.
  """
  fixed = fixed_labels(data_cfg)
  trees, ignored = {}, set()
  for split in ("train", "test"):
    root = os.path.join(arg, split)
    if split == "train" or tf.io.gfile.isdir(root):
      trees[split], left_out = read_tree(root, fixed)
      ignored.update(left_out)
  if ignored:
    logging.warning("dir:%s: folders %s are not in --class_names; not read.", arg,
                    sorted(ignored))
  # Folder names are names: a test/0 folder is no class id.
  labels = (fixed or folder_labels(trees["train"], data_cfg, f"dir:{arg}")).names_only()
  parts = [Part(name, functools.partial(records.read_class_files, files))
           for name, files in trees.items()]
  splits, class_names, report = load_parts(parts, labels, data_cfg, f"dir:{arg}")
  report["ignored_folders"] = sorted(ignored)
  report.update(tree_report(arg, trees))
  return splits, class_names, report


sources.SOURCES.update(
    csv=functools.partial(_load_file, functools.partial(_read_delimited, ","), "csv"),
    tsv=functools.partial(_load_file, functools.partial(_read_delimited, "\t"), "tsv"),
    jsonl=functools.partial(_load_file, _read_jsonl, "jsonl"),
    dir=load_dir,
)
