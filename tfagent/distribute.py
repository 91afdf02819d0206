"""tf.distribute strategy from a name (and TF_CONFIG); the training code is the same for all.

Multi-worker writes follow tf.distribute's multi-worker guide: every worker runs
the same saves (they may need collective ops), but only the chief writes to the
real run and export directories; the others write to a temporary folder that
is removed when training ends.
"""

import contextlib
import json
import os
import shutil
import tempfile

from absl import logging
import tensorflow as tf

from tfagent import _compat
from tfagent.config import STRATEGIES  # One definition, shared with the flags.
from tfagent.errors import ConfigError

TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                     '"task": {"type": "worker", "index": 0}}')


def _tf_config_error(problem: str) -> ConfigError:
  return ConfigError(f"TF_CONFIG {problem}; expected e.g. {TF_CONFIG_EXAMPLE}.")


def read_tf_config(environ=os.environ) -> dict:
  """Parses and checks the TF_CONFIG environment variable; {} when unset."""
  raw = environ.get("TF_CONFIG", "").strip()
  if not raw:
    return {}
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise _tf_config_error(f"is not valid JSON ({e.msg} at character {e.pos})") from None
  cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
  if not isinstance(cluster, dict) or not cluster:
    raise _tf_config_error("has no 'cluster' object naming the jobs")
  for job, addresses in cluster.items():
    if (not isinstance(addresses, list) or not addresses
        or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
      raise _tf_config_error(f"field 'cluster.{job}' must be a non-empty list of "
                             f"'host:port' strings, not {addresses!r}")
  task = tf_config.get("task")
  if not isinstance(task, dict) or task.get("type") not in cluster:
    raise _tf_config_error(f"field 'task.type' must name a job of the cluster "
                           f"({', '.join(cluster)}), not {task!r}")
  index = task.get("index")
  if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
    raise _tf_config_error(f"field 'task.index' must be an integer from 0 to "
                           f"{len(cluster[task['type']]) - 1}, not {index!r}")
  return tf_config


def resolve_auto(tpu: str) -> str:
  """`auto`: TPU when --tpu is set, Mirrored on more than one GPU, else default."""
  if tpu:
    return "tpu"
  if len(tf.config.list_physical_devices("GPU")) > 1:
    return "mirrored"
  return "default"


def tpu_strategy(tpu: str) -> tf.distribute.Strategy:
  """Connects to the TPU named by --tpu ('local' on a TPU VM) and returns TPUStrategy."""
  if not tpu:
    raise ConfigError("--strategy=tpu needs --tpu: a TPU name, a grpc://HOST:PORT "
                      "address, or 'local' on a TPU VM.")
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    raise ConfigError(f"--tpu={tpu}: no TPU could be reached ({str(e).splitlines()[0]}); "
                      "check the name or address, or use --strategy=auto.") from None
  return tf.distribute.TPUStrategy(resolver)


def _mean_over_workers(values, strategy):
  """All-reduces each (scalar) log value to its mean over every replica of every worker."""
  def mean(value):
    if not isinstance(value, tf.distribute.DistributedValues):  # One replica a worker.
      value = strategy.experimental_distribute_values_from_function(lambda _: value)
    return strategy.reduce("MEAN", value, axis=None)
  return tf.nest.map_structure(mean, values)


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """How many worker processes (chief included) train together; 1 outside a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
  return max(1, sum(len(jobs.get(job, ())) for job in ("chief", "worker")))


def _reduce_logs(values, strategy, reduction, keras_reduce):
  """Keras' log reduction, but the mean over every worker's replicas across workers."""
  if (reduction in ("auto", "mean") and num_workers(strategy) > 1
      and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
    return _mean_over_workers(values, strategy)
  return keras_reduce(values, strategy, reduction)


@contextlib.contextmanager
def keras_logs_agree(strategy: tf.distribute.Strategy):
  """Within the scope, Keras 3 fit/evaluate logs work, and agree, across workers.

  Keras 3.15 reduces a step's logs under MultiWorkerMirroredStrategy with
  `strategy.reduce("MEAN", v, axis=0)`, which fails on the scalar logs
  ("Invalid reduction dimension 0 for input with 0 dimensions",
  tensorflow/tensorflow#72388). Each worker's logs are its own metrics; they
  are averaged over the workers here, so every worker sees the same loss and
  makes the same early-stopping and checkpoint decisions. Other strategies
  leave Keras untouched.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    yield
    return
  with _compat.keras_reduce_per_replica(_reduce_logs):
    yield


def multi_worker_strategy() -> tf.distribute.Strategy:
  """MultiWorkerMirroredStrategy from TF_CONFIG (checked first); one worker without it."""
  tf_config = read_tf_config()
  if tf_config and "ps" in tf_config["cluster"]:
    raise _tf_config_error("has a 'ps' job, which multi_worker_mirrored does not use")
  return tf.distribute.MultiWorkerMirroredStrategy()


_made = {}  # (name, tpu, TF_CONFIG) -> the strategy this process made for it.


def get_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
  """Returns the strategy called `name` (see STRATEGIES); create it before other TF work.

  One strategy of each kind a process, reused by every later call: a second MirroredStrategy
  numbers its collective ops from where the first began, and a model of other shapes (the
  next trial of a tune, the next fold) then stops on "Shape mismatch in the collective".
  """
  if name == "auto":
    name = resolve_auto(tpu)
  if name == "default":  # Whatever strategy is in scope; nothing to make.
    strategy = tf.distribute.get_strategy()
  else:
    key = (name, tpu, os.environ.get("TF_CONFIG", ""))
    if key not in _made:
      _made[key] = _make_strategy(name, tpu)
    strategy = _made[key]
  task_type, task_id = task_of(strategy)
  logging.info("Strategy %s with %d replica(s); task %s:%d%s.", type(strategy).__name__,
               strategy.num_replicas_in_sync, task_type or "local", task_id,
               " (chief)" if is_chief(strategy) else "")
  return strategy


def _make_strategy(name: str, tpu: str) -> tf.distribute.Strategy:
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  elif name == "mirrored":
    strategy = tf.distribute.MirroredStrategy()
  elif name == "multi_worker_mirrored":
    strategy = multi_worker_strategy()
  elif name == "tpu":
    strategy = tpu_strategy(tpu)
  elif name == "parameter_server":
    # fchollet, keras-team/keras#18624: "Parameter server training is not supported in Keras 3".
    raise ConfigError("--strategy=parameter_server: Keras 3 Model.fit does not support "
                      "ParameterServerStrategy; use --strategy=multi_worker_mirrored with "
                      "the same TF_CONFIG minus its 'ps' job.")
  else:
    raise ConfigError(f"--strategy={name!r} is unknown; valid: {', '.join(STRATEGIES)}.")
  return strategy


def task_of(strategy: tf.distribute.Strategy) -> tuple:
  """`(task_type, task_id)` of this process; `(None, 0)` outside a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(resolver, "task_type", None):
    return None, 0
  return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True where unique files (checkpoints, exports, summaries) are written."""
  return bool(strategy.extended.should_checkpoint)


@contextlib.contextmanager
def worker_scratch(strategy: tf.distribute.Strategy):
  """Yields None on the chief; elsewhere a temporary folder, removed on exit."""
  if is_chief(strategy):
    yield None
    return
  task_type, task_id = task_of(strategy)
  # Local on purpose: a non-chief worker's writes are thrown away, never shared.
  scratch = tempfile.mkdtemp(prefix=f"tfagent-{task_type}{task_id}-")
  try:
    yield scratch
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
