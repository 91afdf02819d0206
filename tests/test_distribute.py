"""Distribution: strategies from flags and TF_CONFIG, Mirrored on two virtual CPUs,
MultiWorkerMirrored on two real worker processes, mixed precision, and bad input."""

import json
import os
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import tiny_config
import pooled_python
from tfagent import callbacks, distribute, optim, training
from tfagent.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra) -> dict:
  """The environment of a child `python`: this checkout first on the path, quiet TF logs."""
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **extra)
  env.pop("TF_CONFIG", None)
  env.update(extra)
  return env


def free_ports(n: int) -> list:
  """Loopback ports free right now (bound then released)."""
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


# --- Bad input: clear errors that name the flag or field -------------------------------

@pytest.mark.parametrize("raw, field", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "'cluster'"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "'cluster.worker'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "'task.type'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "'task.index' must be an integer from 0 to 1"),
])
def test_malformed_tf_config_names_the_field(raw, field):
  with pytest.raises(ConfigError, match=f"TF_CONFIG .*{field}"):
    distribute.read_tf_config({"TF_CONFIG": raw})


def test_well_formed_tf_config_is_returned():
  raw = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}'
  assert distribute.read_tf_config({"TF_CONFIG": raw})["task"]["index"] == 1
  assert distribute.read_tf_config({}) == {}


def test_tpu_without_a_tpu_is_a_config_error():
  with pytest.raises(ConfigError, match="--strategy=tpu needs --tpu"):
    distribute.get_strategy("tpu")


def test_parameter_server_says_what_to_use_instead():
  with pytest.raises(ConfigError, match="--strategy=parameter_server.*multi_worker_mirrored"):
    distribute.get_strategy("parameter_server")


def test_auto_without_gpus_or_tpu_is_the_default_strategy():
  assert distribute.resolve_auto(tpu="") == "default"
  assert distribute.resolve_auto(tpu="my-tpu") == "tpu"
  for name in ("auto", "default", "one_device"):
    strategy = distribute.get_strategy(name)
    assert strategy.num_replicas_in_sync == 1 and distribute.is_chief(strategy)


def test_bad_precision_and_profile_flags_name_the_flag():
  with pytest.raises(ConfigError, match="--mixed_precision='float8'"):
    with optim.precision_policy("float8"):
      pass
  with pytest.raises(ConfigError, match="--profile_steps='5'"):
    callbacks.profile_range("5")
  assert callbacks.profile_range("2,3") == (2, 3) and callbacks.profile_range("") == 0


def test_mixed_bfloat16_keeps_float32_logits(corpus_dir, tmp_path):
  """bfloat16 compute, float32 variables, logits and loss; the policy is restored."""
  from tfagent import data
  cfg = tiny_config(corpus_dir, tmp_path / "run", tmp_path / "sm", name="transformer")
  splits, info = data.load_splits(cfg.data)
  with optim.precision_policy("bfloat16"):
    model, classifier = training.build_and_compile(cfg, tf.distribute.get_strategy(),
                                                splits["train"], info.class_names, 10)
    encoder = classifier.get_layer("encoder_0")
    assert encoder.compute_dtype == "bfloat16" and encoder.variable_dtype == "float32"
    assert model(tf.constant(["great movie"])).dtype == tf.float32
  import keras
  assert keras.mixed_precision.global_policy().name == "float32"


# --- Mirrored on two virtual CPU devices -------------------------------------------------

MIRRORED_SCRIPT = r"""
import dataclasses, json, sys
import tensorflow as tf
sys.path.insert(0, "tests")
from conftest import tiny_config, write_corpus
from tfagent import distribute, train
corpus = write_corpus(sys.argv[1] + "/corpus")
out = {}
for strategy in ("default", "mirrored"):
  cfg = tiny_config(corpus, f"{sys.argv[1]}/{strategy}", f"{sys.argv[1]}/sm", name=sys.argv[2])
  # No dropout (its randomness differs per device). Length buckets (argv[5] > 0) still give
  # one device and the pair of replicas the same global batches.
  cfg = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, bucket_width=int(sys.argv[5]),
                                    batch_size=int(sys.argv[6])),
      model=dataclasses.replace(cfg.model, dropout=0.0, ensemble_size=int(sys.argv[3]),
                                wide_ngrams=int(sys.argv[4])),
      train=dataclasses.replace(cfg.train, strategy=strategy, epochs=2))
  result = train.train_and_evaluate(cfg)
  out[strategy] = {"replicas": distribute.get_strategy(strategy).num_replicas_in_sync,
                   "history": result["history"], "validation": result["validation"],
                   "wide": result.get("wide"),
                   "test": {k: result[k] for k in ("accuracy", "macro_f1", "roc_auc")}}
print("RESULT " + json.dumps(out))
"""


def run_mirrored_script(tmp_path, name: str, ensemble_size: int, wide_ngrams: int,
                        bucket_width: int, batch_size: int) -> dict:
  """Runs MIRRORED_SCRIPT in a fresh process; returns its results by strategy."""
  out = pooled_python.mirrored_result(MIRRORED_SCRIPT, tmp_path, name, ensemble_size,
                                      wide_ngrams, bucket_width, batch_size)
  assert out["mirrored"]["replicas"] == 2
  return out


def assert_same_training(out: dict) -> None:
  """Two epochs that trained, with the same per-epoch losses and validation on both runs."""
  single, mirrored = out["default"]["history"], out["mirrored"]["history"]
  assert len(single["loss"]) == len(mirrored["loss"]) == 2
  assert single["loss"][-1] < single["loss"][0]  # It trained.
  assert mirrored["loss"] == pytest.approx(single["loss"], rel=1e-4, abs=1e-5)
  assert mirrored["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4, abs=1e-5)
  assert out["mirrored"]["validation"] == pytest.approx(out["default"]["validation"], rel=1e-4,
                                                        abs=1e-5)


@pytest.mark.slow
def test_mirrored_on_two_cpus_matches_one_device(tmp_path):
  """Same global batch (32 = 2 x 16) and seed: per-epoch training loss within 1e-4.

  A Transformer ensemble of two with a wide path beside it: the zipped per-member input
  streams split across replicas, the same n-gram weights, the same deep weight, the same
  export figures. (The LSTM runs distributed in the MultiWorkerMirrored test below.)
  """
  out = run_mirrored_script(tmp_path, "transformer", ensemble_size=2, wide_ngrams=2,
                            bucket_width=0, batch_size=32)
  assert_same_training(out)
  # The same n-gram fit, and the same deep-path weight from the same losses.
  single, mirrored = out["default"]["wide"], out["mirrored"]["wide"]
  assert single["vocabulary_size"] > 0
  for key in ("vocabulary_size", "c", "tried"):
    assert mirrored[key] == single[key], key
  assert mirrored["deep_weight"]["chosen"] == single["deep_weight"]["chosen"]
  assert mirrored["deep_weight"]["validation_loss"] == pytest.approx(
      single["deep_weight"]["validation_loss"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_mirrored_lstm_with_an_idle_replica_matches_one_device(tmp_path):
  """An LSTM trains, evaluates and exports on two replicas as on one device, though the
  validation pass ends with a step where one replica has no examples left.

  21 validation texts in buckets 4 tokens wide and batches of 10 a replica are 18 texts of
  one bucket and 3 of another, so at the last step tf.distribute gives the second replica a
  dummy `[0, 0]` id batch, on which the LSTM's loop over zero steps failed ("Tried to stack
  elements of an empty list"; tests/test_models.py checks that batch alone); and the
  buckets' partial batches, cut per replica, must not be joined (their widths differ).
  """
  out = run_mirrored_script(tmp_path, "lstm", ensemble_size=1, wide_ngrams=0,
                            bucket_width=4, batch_size=20)
  assert_same_training(out)
  # The export (scored on the test split) answers as the one-device export does.
  assert out["mirrored"]["test"] == pytest.approx(out["default"]["test"], rel=1e-4, abs=1e-5)


TWO_SHAPES_SCRIPT = r"""
import dataclasses, json, sys
sys.path.insert(0, "tests")
from conftest import tiny_config, write_corpus
from tfagent import distribute, train
corpus = write_corpus(sys.argv[1] + "/corpus", n_per_class=40)
out = {"same": distribute.get_strategy("mirrored") is distribute.get_strategy("mirrored")}
for width in (8, 12):  # Transformers: a tiny LSTM trains slowly under Mirrored.
  cfg = tiny_config(corpus, f"{sys.argv[1]}/run{width}", f"{sys.argv[1]}/sm", name="transformer")
  cfg = dataclasses.replace(
      cfg, model=dataclasses.replace(cfg.model, intermediate_dim=width, dropout=0.0),
      train=dataclasses.replace(cfg.train, strategy="mirrored", epochs=1))
  out[width] = train.train_and_evaluate(cfg)["history"]["loss"]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_trains_models_of_other_shapes_one_after_the_other_in_one_process(tmp_path):
  """As a tune's trials or cross-validation's folds do: a second MirroredStrategy made its
  collective ops under the first's numbers and the second model stopped on "Shape mismatch in
  the collective instance"; one strategy a process is reused now."""
  out = pooled_python.mirrored_result(TWO_SHAPES_SCRIPT, tmp_path)
  assert out["same"] is True
  assert len(out["8"]) == len(out["12"]) == 1 and out["8"] != out["12"]


# --- MultiWorkerMirrored on two real worker processes ------------------------------------

def train_command(corpus: str, run_dir, export_dir, *extra) -> list:
  """The CLI command of a tiny run (LSTM, 16 tokens) used by the process-level tests."""
  return [sys.executable, "-m", "tfagent.train", f"--dataset=embedded:{corpus}",
          "--model=lstm", "--vocab_size=200", "--sequence_length=16", "--embedding_dim=8",
          "--hidden_dim=4", "--dropout=0.1", "--learning_rate=0.01", "--batch_size=16",
          f"--model_dir={run_dir}", f"--export_dir={export_dir}", "--model_name=tiny",
          "--verbose=2", *extra]


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes(corpus_dir, tmp_path):
  """Two workers on loopback train an LSTM to completion; the chief alone writes the run
  and export; their shards are disjoint and cover the training split. (Ensembles and
  the wide path under a strategy: the Mirrored test above.) Batches of 20: the validation
  shards (11 and 10 texts) are 2 and 1 batches of 10, so the second worker's LSTM runs
  the last validation step on tf.distribute's empty `[0, 0]` dummy batch."""
  ports = free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  run_dir, export_dir = tmp_path / "run", tmp_path / "saved_models"
  command = train_command(corpus_dir, run_dir, export_dir, "--strategy=multi_worker_mirrored",
                          "--epochs=2", "--shard_report", "--batch_size=20",
                          "--explain_steps=0")  # No explain signatures: not read here.
  procs, scratch = [], []
  for index in range(2):
    tmp = tmp_path / f"tmp{index}"
    tmp.mkdir()
    scratch.append(tmp)
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    procs.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  env=subprocess_env(TF_CONFIG=tf_config, TMPDIR=str(tmp))))
  try:
    logs = [p.communicate(timeout=540)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for index, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f"worker {index}:\n{log[-4000:]}"
  assert "replica(s); task worker:0 (chief)" in logs[0] and "task worker:1." in logs[1]
  # One export (version 1) and its serving files, by the chief.
  assert sorted(os.listdir(export_dir / "tiny")) == [
      "1", "batching_parameters.txt", "models.config"]
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["best.keras", "last.keras"]
  assert os.listdir(run_dir / "backup") == []  # Cleared at the end.
  for tmp in scratch:  # The worker's scratch run and export were removed.
    assert not [d for d in os.listdir(tmp) if d.startswith("tfagent-")], os.listdir(tmp)
  with open(run_dir / "eval" / "metrics.json") as f:
    assert json.load(f)["examples"] > 0
  shards = []
  for index in range(2):
    with open(run_dir / "shards" / f"worker-{index}.json") as f:
      shards.append(json.load(f))
  assert [s["input_pipelines"] for s in shards] == [[[2, 0]], [[2, 1]]]
  first, second = (set(s["text_sha1"]) for s in shards)
  assert first and second and not first & second
  with open(run_dir / "data_report.json") as f:
    n_train = json.load(f)["split_sizes"]["train"]
  assert len(first) + len(second) == n_train
