"""Shared fixtures: a tiny learnable corpus and tiny model configs."""

import csv
import fcntl
import gzip
import io
import os
import pickle
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tfagent import config  # noqa: E402

POSITIVE = ["great movie loved it", "excellent wonderful film", "真不错 好看 推荐",
            "很好 喜欢", "a delight, truly great"]
NEGATIVE = ["terrible movie hated it", "awful boring film", "难看 垃圾 失望",
            "很差 讨厌", "a mess, truly awful"]


def write_csv(path, rows, header=("text", "label"), delimiter=",", encoding="utf-8",
              newline="\n") -> str:
  """A CSV file of `header` then `rows`; `path` ending in .gz is gzip-compressed."""
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt", encoding=encoding, newline="") as f:
    writer = csv.writer(f, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def write_corpus(folder, n_per_class=120, seed=0) -> str:
  """Writes `neg.txt`/`pos.txt` in the embedded layout; every line is unique."""
  rng = random.Random(seed)
  os.makedirs(folder, exist_ok=True)
  for name, phrases, offset in (("pos.txt", POSITIVE, 0), ("neg.txt", NEGATIVE, 10_000)):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
      for i in range(n_per_class):
        f.write(f"{rng.choice(phrases)} {rng.choice(phrases)} #{offset + i}\n")
  return str(folder)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> str:
  return write_corpus(tmp_path_factory.mktemp("corpus"))


def tiny_config(corpus: str, run_dir: str, export_dir: str, name: str = "lstm",
                explain_steps: int = 0) -> config.Config:
  """A config that trains in seconds: tiny model, two epochs.

  Its export has no explain signatures unless `explain_steps` asks for them: tracing them
  costs about 3 s an export, and only the tests of explanations need them.
  """
  return config.Config(
      data=config.DataConfig(dataset=f"embedded:{corpus}", batch_size=32),
      model=config.ModelConfig(name=name, vocab_size=200, sequence_length=16,
                               embedding_dim=8, hidden_dim=4, num_layers=1,
                               num_heads=2, intermediate_dim=8, dropout=0.1),
      train=config.TrainConfig(model_dir=str(run_dir), epochs=2, learning_rate=1e-2,
                               verbose=0),
      export=config.ExportConfig(export_dir=str(export_dir), model_name="tiny",
                                 explain_steps=explain_steps))


@pytest.fixture(scope="session")
def trained_run(corpus_dir, tmp_path_factory):
  """Trains the tiny LSTM once for the whole run; returns (config, result).

  Under pytest-xdist the workers share it: the first to ask trains it, holding a lock in
  their common temporary folder, and the others read its config and result from there
  (training it in every worker cost ~17 CPU-seconds a worker). No test writes into it.
  """
  from tfagent import train
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    root = tmp_path_factory.mktemp("run")
    cfg = tiny_config(corpus_dir, root / "run", root / "saved_models", explain_steps=64)
    return cfg, train.train_and_evaluate(cfg)
  root = tmp_path_factory.getbasetemp().parent / "trained_run"  # pytest-N/, all workers'.
  root.mkdir(exist_ok=True)
  with open(root / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if not (root / "result.pickle").exists():
      cfg = tiny_config(corpus_dir, root / "run", root / "saved_models", explain_steps=64)
      (root / "result.pickle").write_bytes(pickle.dumps((cfg, train.train_and_evaluate(cfg))))
    return pickle.loads((root / "result.pickle").read_bytes())


def run_command(monkeypatch, command: str, *args, stdin: str = "") -> int:
  """`tfagent COMMAND ARGS` in this process; returns its exit code.

  The command's own flag definitions (`cli.command_flags`, a fresh FlagValues) parse
  ARGS as absl does for `python -m`, the module's FLAGS is that FlagValues for the run,
  and its `main` runs with `stdin` as standard input. What only a process shows (exit
  status, one line on stderr, no traceback) is left to one real command line per command.
  """
  from tfagent import cli
  module, values = cli.command_flags(command)
  argv = values([f"tfagent {command}", *args])
  monkeypatch.setattr(module, "FLAGS", values)
  monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
  try:
    module.main(argv)
  except SystemExit as e:
    return e.code
  return 0


MIRRORED = r"""
import json, sys
import tensorflow as tf
from tfagent import config, distribute, train
root, data_fields = sys.argv[1], json.loads(sys.argv[2])
out = {}
for strategy in ("default", "mirrored"):
  cfg = config.Config(
      data=config.DataConfig(batch_size=32, **data_fields),
      model=config.ModelConfig(name="transformer", vocab_size=200, sequence_length=16,
                               embedding_dim=8, num_layers=1, num_heads=2,
                               intermediate_dim=8, dropout=0.0),
      train=config.TrainConfig(model_dir=f"{root}/{strategy}", epochs=2,
                               learning_rate=1e-2, verbose=0, strategy=strategy),
      export=config.ExportConfig(export_dir=f"{root}/sm", model_name="m", explain_steps=0))
  result = train.train_and_evaluate(cfg)
  out[strategy] = {"replicas": distribute.get_strategy(strategy).num_replicas_in_sync,
                   "loss": result["history"]["loss"], "accuracy": result.get("accuracy"),
                   "thresholds": result.get("thresholds")}
print("RESULT " + json.dumps(out))
"""


def train_default_and_mirrored(root, **data_fields) -> dict:
  """Trains a tiny Transformer (no dropout, global batch 32) on `data_fields` with the default
  strategy, then MirroredStrategy over two logical CPUs, in a fresh process; returns
  `{strategy: {replicas, loss (each epoch's), accuracy, thresholds}}`.

  A Transformer, as test_distribute.py's Mirrored test uses: a tiny LSTM stops on a
  replica's empty last batch ("stack elements of an empty list").
  """
  import json
  import pooled_python
  return pooled_python.mirrored_result(MIRRORED, root, json.dumps(data_fields))

# The slowest files first (rough seconds a file, rounded from the durations `.ci/run` prints
# on 2 cores): pytest-xdist gives a worker a whole file (`--dist=loadfile`), and a long file
# started last leaves the other workers idle at the end. Files not listed keep their order,
# after these.
SLOW_FILES = {"test_bench_accuracy.py": 200, "test_distribute.py": 170, "test_storage.py": 130,
              "test_bert.py": 130, "test_explain.py": 130, "test_fault_tolerance.py": 125,
              "test_tune.py": 150,
              "test_docs.py": 110, "test_serve_conformance.py": 70, "test_evaluate.py": 65,
              "test_resume.py": 60, "test_serve.py": 60, "test_cross_validate.py": 50,
              "test_serve_load.py": 45, "test_serve_deadlines.py": 45, "test_cli.py": 45,
              "test_train.py": 45, "test_user_api.py": 40}
SLOW_FILES.update({"test_distill.py": 150, "test_multilabel.py": 120, "test_quantize.py": 100,
                   "test_imbalance.py": 90, "test_serve_explain.py": 60})  # Estimates.
SLOW_FILES.update({"test_pairs.py": 250})  # On 2 busy cores: its slow lane ran in 4-6 min.
# Measured with -n 2 on 2 busy cores (seconds a file): unlisted, they ran last and made the tail.
SLOW_FILES.update({"test_semi.py": 60, "test_export.py": 60, "test_serve_reload.py": 45,
                   "test_wide.py": 30, "test_pipeline.py": 30, "test_tensorboard.py": 25,
                   "test_data_bad_inputs.py": 20, "test_serve_bench.py": 70,
                   "test_serve_hostile.py": 20})


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker a core plus one (at most 4, pytest.ini's --maxprocesses).

  Many tests wait on a child process (a server polling its model directory, a second
  worker, a command's start-up), leaving their core idle; one worker a core left the
  two cores of a CI machine 29 % idle in the full suite.
  """
  del config
  return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items):
  """Runs the files in SLOW_FILES first, slowest first; a file's own tests keep their order."""
  items.sort(key=lambda item: -SLOW_FILES.get(item.path.name, 0))
