"""Model configs, version polling and loading, status and labels, as TF Serving's file-system
source and ServerCore: the versions a model's policy asks for are loaded, warmed up, then served;
the others unload once a replacement serves. A version whose files still change waits for a
later poll; a failed load is retried after --load_retry_interval_micros (no lock held while it
waits), past --max_num_load_retries only once its files change. At start-up the server waits for
every model's first version and fails if one fails to load."""

import gc
import os
import threading
import time

from absl import logging
from google.protobuf import text_format
import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2 as config_pb2

from tfagent import fileio
from tfagent.errors import ConfigError, TfagentError
from tfagent.serving.servable import LoadOptions, Servable, error_code
from tfagent.serving.tensors import ServingError, invalid_argument
from tfagent.versions import list_versions

_State = get_model_status_pb2.ModelVersionStatus


def single_model(name: str, base_path: str) -> list:
  """The ModelConfig `--model_name --model_base_path` stand for (BuildSingleModelConfig)."""
  return [config_pb2.ModelConfig(name=name, base_path=fileio.absolute(base_path),
                                 model_platform="tensorflow")]


def models_from_proto(proto, source: str) -> list:
  """The ModelConfigs of a ModelServerConfig, checked as ServerCore checks them."""
  if proto.WhichOneof("config") == "custom_model_config":
    raise ConfigError(f"{source}: custom_model_config is not supported; use model_config_list.")
  models = {}
  for c in proto.model_config_list.config:
    if c.name in models:
      raise ConfigError(f"{source}: Illegal to list model {c.name} multiple times in config "
                        "list")
    if not c.name or not c.base_path:
      raise ConfigError(f"{source}: every config needs a name and a base_path.")
    if not c.model_platform:
      raise ConfigError(f"{source}: Illegal setting neither ModelServerConfig::model_type "
                        "(deprecated) nor ModelServerConfig::model_platform, model name is "
                        f"{c.name}; add model_platform: \"tensorflow\".")
    if c.model_platform != "tensorflow":
      raise ConfigError(f"{source}: model {c.name}: model_platform {c.model_platform!r} is not "
                        "supported; use 'tensorflow'.")
    models[c.name] = config_pb2.ModelConfig()
    models[c.name].CopyFrom(c)
    models[c.name].base_path = fileio.absolute(c.base_path)
  return list(models.values())


def parse_model_config(text: str, source: str) -> list:
  """The ModelConfigs of a ModelServerConfig text proto (`model_config_list { config {...} }`)."""
  proto = config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, proto)
  except text_format.ParseError as e:
    raise ConfigError(f"{source}: {e}; expected a ModelServerConfig text proto "
                      "(model_config_list { config { name: ... base_path: ... } }).") from None
  return models_from_proto(proto, source)


def aspired(model, available: list) -> set:
  """The versions on disk that the model's version policy asks for (by default the latest)."""
  policy = model.model_version_policy
  if policy.HasField("all"):
    return set(available)
  if policy.HasField("specific"):
    return set(policy.specific.versions) & set(available)
  return set(sorted(available)[-(policy.latest.num_versions or 1):])


def fingerprint(path: str) -> tuple:
  """Every file's path, size and mtime (any file system): unchanged means no copy in progress.
  tf.io.gfile's local mtime has whole seconds: a same-size rewrite within one goes unseen."""
  files = [os.path.join(path, f) for f in fileio.files_under(path)]  # ram:// quirk skipped.
  return tuple(sorted((f, st.length, st.mtime_nsec)
                      for f, st in zip(files, map(tf.io.gfile.stat, files))))


def freeze_heap() -> None:
  """Moves every object alive now out of the cyclic garbage collector's scans: a loaded model
  is hundreds of thousands of long-lived objects, and each full collection walked them all
  holding the GIL (REST p99 at 32 clients, one BiLSTM: 180 ms without, 13 ms with). Collected
  first, so an unloaded version's cycles are freed (about 0.2 s at each version change)."""
  started = time.monotonic()
  gc.unfreeze()
  gc.collect()
  gc.freeze()
  logging.info("Froze %d objects out of the garbage collector's scans in %.2f s",
               gc.get_freeze_count(), time.monotonic() - started)


class ModelManager:
  """Loads and serves the versions of each configured model."""

  def __init__(self, models: list, options: LoadOptions = LoadOptions(), replay=None,
               allow_unavailable_labels: bool = False):
    """`replay(servable, prediction_log)` runs one warm-up record (api.Api.replay)."""
    self.models = {m.name: m for m in models}
    self.options, self._replay = options, replay
    self._allow_unavailable_labels = allow_unavailable_labels
    self._lock = threading.Lock()  # Guards the maps below.
    self._config_lock = threading.RLock()  # One poll or reload at a time.
    self._servables = {m: {} for m in self.models}  # name -> {version: Servable}
    self._states = {m: {} for m in self.models}  # name -> {version: (state, error)}
    self._labels = {}  # name -> {label: version}, checked by _checked_labels.
    self._retries = {}  # (name, version) -> (tries so far, time.monotonic() of the next).
    self._failed = {}  # (name, version) -> fingerprint of its last try, once all tries failed.
    self._stop = threading.Event()
    self._thread = None

  def start(self, poll_seconds: int) -> None:
    """Loads every model's first versions (waiting for them), then polls in a thread: every
    `poll_seconds` if > 0; 0 polls once, < 0 never (--file_system_poll_wait_seconds). Raises
    TfagentError if a version fails to load, or a version label names one not loaded yet
    without --allow_version_labels_for_unavailable_models (the server then does not start, as
    TF Serving: ServerCore checks labels before it adds models)."""
    try:
      labels = self._checked_labels(self.models)
    except ServingError as e:
      raise TfagentError(f"{e.message}: give --allow_version_labels_for_unavailable_models to "
                         "label versions that load at start-up.") from None
    while not self._stop.is_set():
      self.poll_once()
      with self._lock:
        failed = [f"Servable {name} version {v} failed to load: {error}"
                  for name, states in self._states.items() for v, (state, error) in states.items()
                  if state == _State.END and error and not self._servables[name]]
      if failed:
        raise TfagentError("; ".join(failed))
      waiting = [m for m, s in self._servables.items() if not s]
      if not (self._retries and (waiting or poll_seconds <= 0) or waiting and poll_seconds >= 0):
        break
      logging.info("Waiting for a first version of %s", ", ".join(sorted(waiting)))
      self._stop.wait(self.pause(poll_seconds))
    with self._lock:
      self._labels = labels
    if poll_seconds > 0:
      self._thread = threading.Thread(target=self._poll_loop, args=(poll_seconds,),
                                      daemon=True, name="version-poller")
      self._thread.start()

  def pause(self, poll_seconds: float) -> float:
    """Seconds to the next poll (every second if `poll_seconds` < 0) or the next retry due; a
    retry already due waits for the next poll (no busy loop on files still changing)."""
    now = time.monotonic()
    return min([due - now for _, due in tuple(self._retries.values()) if due > now] +
               [max(poll_seconds, 1)])

  def _poll_loop(self, poll_seconds: float) -> None:
    while not self._stop.wait(self.pause(poll_seconds)):
      try:
        self.poll_once()
      except Exception:  # noqa: BLE001  Keep polling; the next poll may succeed.
        logging.exception("Polling model base paths failed")

  def poll_once(self) -> None:
    """One pass over every model: load new aspired versions, then unload the rest."""
    with self._config_lock:
      before = self.available()
      for model in list(self.models.values()):
        name, on_disk = model.name, list_versions(model.base_path)
        if not on_disk and not self._servables[name]:
          logging.warning("No versions of servable %s found under base path %s", name,
                          model.base_path)
        wanted = aspired(model, list(on_disk))
        for version in self._forget(name, wanted):
          self._set_state(name, version, _State.END)  # Gone, or no longer asked for.
        for version in sorted(wanted - set(self._servables[name])):
          self._load(name, version, on_disk[version])
        # AvailabilityPreservingPolicy: versions no longer asked for unload once a wanted one
        # serves, or when none is wanted on disk; until then the highest of them serves alone.
        loaded = set(self._servables[name])
        unwanted = sorted(loaded - wanted)
        for version in unwanted if wanted & loaded or not wanted else unwanted[:-1]:
          self._unload(name, version)
      if self.options.freeze_heap and self.available() != before:
        freeze_heap()

  def _forget(self, name: str, keep=()) -> list:
    """Drops the retries due for `name`'s versions not in `keep`; returns those versions."""
    dropped = [key for key in self._retries if key[0] == name and key[1] not in keep]
    for key in dropped:
      del self._retries[key]
    return [version for _, version in dropped]

  def reload_config(self, models: list) -> None:
    """Serves exactly `models` from now on (ServerCore::ReloadConfig): labels are checked first
    (one must name a version available before the reload, else an error and the old config
    stays), removed models unload, new ones load (and are awaited), policies apply at once."""
    with self._config_lock:
      new = {m.name: m for m in models}
      labels, added = self._checked_labels(new), set(new) - set(self.models)
      for name in set(self.models) - set(new):
        self._forget(name)
        for version in list(self._servables[name]):
          self._unload(name, version)
      with self._lock:
        for name in new:
          self._servables.setdefault(name, {})
          self._states.setdefault(name, {})
        self.models = new
        self._labels = labels
      self.poll_once()
    self._await(added)

  def _await(self, names: set) -> None:
    """WaitUntilModelsAvailable for the models a reload adds, lock-free: until each serves a
    version or its retries are spent; one whose versions all failed is an error (UNKNOWN).
    One with no version on disk yet is not waited for (TF Serving waits)."""
    while not self._stop.is_set() and any(n in names and not self._servables[n]
                                          for n, _ in tuple(self._retries)):
      self._stop.wait(self.pause(-1))
      if self._thread is None:
        self.poll_once()
    with self._lock:
      failed = [(n, v, e) for n in sorted(names) if not self._servables.get(n)
                for v, (_, e) in sorted(self._states.get(n, {}).items()) if e]
    items = "".join(f"{{{{name: {n} version: {v}}} due to error: {error_code(e).name}: {e}}}, "
                    for n, v, e in failed)  # ServableId::DebugString, Status::ToString.
    if failed:
      raise ServingError(grpc.StatusCode.UNKNOWN,
                         f"{len(failed)} model(s) did not become available: {{{items}}}")

  def _checked_labels(self, models: dict) -> dict:
    """The label map of `models`, checked against the versions available now
    (ServerCore::UpdateModelVersionLabelMap)."""
    labels = {}
    for model in models.values():
      for label, version in sorted(model.version_labels.items()):
        state = self._states.get(model.name, {}).get(version, (None, ""))[0]
        # The flag lets a new label, or one kept on its version, name an unavailable version;
        # a label in use moves only to an available one (it would stop answering).
        moved = self._labels.get(model.name, {}).get(label, version) != version
        if state != _State.AVAILABLE and (moved or not self._allow_unavailable_labels):
          raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"Request to assign label to version {version} of model "
                             f"{model.name}, which is not currently available for inference")
        labels.setdefault(model.name, {})[label] = version
    return labels

  def _set_state(self, name, version, state, error=None) -> None:
    with self._lock:
      self._states[name][version] = (state, error)

  def _load(self, name: str, version: int, path: str) -> None:
    """One try, if due, at a version whose files have stopped changing (each try reads them
    afresh); a failed try is scheduled again, or given up on until the files change."""
    key = (name, version)
    tries, due = self._retries.get(key, (0, 0.0))
    before = fingerprint(path) if time.monotonic() >= due else None
    if before is None or self._failed.get(key) == before:
      return  # Not due yet, or failed as it is now.
    time.sleep(self.options.settle_seconds)
    if fingerprint(path) != before:
      logging.info("Servable %s version %d is still being written; waiting.", name, version)
      return
    if tries:
      logging.info("Retrying servable %s version %d (%d of %d)", name, version, tries,
                   self.options.max_load_retries)
    self._set_state(name, version, _State.LOADING)
    started, servable = time.monotonic(), None
    try:
      servable = Servable(name, version, path, self.options)
      warmed = servable.warm_up(self._replay) if self.options.warmup and self._replay else 0
      if fingerprint(path) != before:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{path}: files changed while loading")
    except Exception as e:  # noqa: BLE001  A bad version must not stop the server.
      if servable:
        servable.close()
      logging.error("Servable %s version %d failed to load from %s: %s", name, version, path, e)
      self._retries.pop(key, None)
      if tries < self.options.max_load_retries:
        self._retries[key] = (tries + 1,
                              time.monotonic() + self.options.load_retry_interval_seconds)
      else:
        self._failed[key] = before
        self._set_state(name, version, _State.END, e)
      return
    with self._lock:
      self._servables[name] = {**self._servables[name], version: servable}
      self._states[name][version] = (_State.AVAILABLE, None)
    self._retries.pop(key, None)
    self._failed.pop(key, None)
    logging.info("Servable %s version %d: %d warm-up records replayed", name, version, warmed)
    logging.info("Successfully loaded servable version {name: %s version: %d} in %.1f s",
                 name, version, time.monotonic() - started)

  def _unload(self, name: str, version: int) -> None:
    with self._lock:
      servable = self._servables[name].get(version)
      self._servables[name] = {v: s for v, s in self._servables[name].items() if v != version}
      self._states[name][version] = (_State.END, None)
    if servable:
      servable.close()  # In-flight requests hold their own reference and finish.
      logging.info("Unloaded servable version {name: %s version: %d}", name, version)

  def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
    """The servable a ModelSpec asks for: a version, a label, or the latest."""
    servables = self._servables.get(name, {})
    if label is not None:  # An empty label too ("" is a label no version has).
      version = self._labels.get(name, {}).get(label)
      if version is None:
        raise invalid_argument(f"Unrecognized servable version label: {label}")
    if version is None and servables:
      return servables[max(servables)]
    if version not in servables:
      request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
      raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
    return servables[version]

  def model_status(self, name: str, version: int | None = None):
    """GetModelStatusResponse for one version, or for every version known (newest first)."""
    with self._lock:
      states = dict(self._states.get(name, {}))
    if version is not None and version not in states:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"Could not find version {version} of model {name}")
    if not states:
      raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for v in [version] if version is not None else sorted(states, reverse=True):
      state, error = states[v]
      entry = response.model_version_status.add(version=v, state=state)
      entry.status.SetInParent()
      if error is not None:
        entry.status.error_code = error_code(error).value[0]
        entry.status.error_message = str(getattr(error, "message", None) or error)
    return response

  def available(self) -> dict:
    """name -> sorted loaded versions."""
    return {name: sorted(s) for name, s in self._servables.items()}

  def close(self) -> None:
    """Stops polling and closes every servable (in-flight calls keep their own reference)."""
    self._stop.set()
    if self._thread:
      self._thread.join(timeout=10)
    for servables in self._servables.values():
      for servable in servables.values():
        servable.close()
