"""Model configs, version polling and loading, status and version labels.

Like TF Serving's file-system source: each model's base path is polled for integer version
directories; the versions its policy asks for (by default the latest one) are loaded, warmed up,
and only then served; versions no longer asked for are unloaded after their replacement is serving,
so no request fails during a switch. A directory whose files still change (a copy in progress) is
left for a later poll. A load that fails is tried again, on the version as it is then, at the first
poll after --load_retry_interval_micros (no lock is held while it waits); after
--max_num_load_retries it is retried only once the directory changes, so half a version is never
served.
At start-up, as tensorflow_model_server does, the server waits for every model's first version and
refuses to start if one fails to load.
"""

import dataclasses
import gc
import threading
import time

from absl import logging
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfagent import fileio
from tfagent.errors import ConfigError, TfagentError
from tfagent.serving import status
from tfagent.serving.retries import LoadRetries, fingerprint
from tfagent.serving.servable import LoadOptions, Servable, error_code
from tfagent.versions import list_versions

_State = get_model_status_pb2.ModelVersionStatus


@dataclasses.dataclass(frozen=True)
class ModelSpecConfig:
  """One served model: TF Serving's ModelConfig, reduced to what applies here."""
  name: str
  base_path: str
  policy: str = "latest"  # latest | all | specific
  num_versions: int = 1  # For `latest`.
  versions: tuple = ()  # For `specific`.
  labels: tuple = ()  # ((label, version), ...)


def single_model(name: str, base_path: str) -> list:
  """The config `--model_name --model_base_path` stand for (BuildSingleModelConfig)."""
  return [ModelSpecConfig(name=name, base_path=fileio.absolute(base_path))]


def _model_from_proto(c, source: str) -> ModelSpecConfig:
  """One ModelConfig, checked as ServerCore checks it (GetPlatform)."""
  if not c.name or not c.base_path:
    raise ConfigError(f"{source}: every config needs a name and a base_path.")
  if not c.model_platform:
    raise ConfigError(f"{source}: Illegal setting neither ModelServerConfig::model_type "
                      f"(deprecated) nor ModelServerConfig::model_platform, model name is "
                      f"{c.name}; add model_platform: \"tensorflow\".")
  if c.model_platform != "tensorflow":
    raise ConfigError(f"{source}: model {c.name}: model_platform {c.model_platform!r} is not "
                      "supported; use 'tensorflow'.")
  policy = c.model_version_policy.WhichOneof("policy_choice") or "latest"
  return ModelSpecConfig(
      name=c.name, base_path=fileio.absolute(c.base_path), policy=policy,
      num_versions=c.model_version_policy.latest.num_versions or 1,
      versions=tuple(c.model_version_policy.specific.versions),
      labels=tuple(sorted(c.version_labels.items())))


def models_from_proto(proto, source: str) -> list:
  """ModelSpecConfigs of a ModelServerConfig (only model_config_list, as TF Serving)."""
  if proto.WhichOneof("config") == "custom_model_config":
    raise ConfigError(f"{source}: custom_model_config is not supported; use "
                      "model_config_list.")
  models, seen = [], set()
  for c in proto.model_config_list.config:
    if c.name in seen:
      raise ConfigError(f"{source}: Illegal to list model {c.name} multiple times in config "
                        "list")
    seen.add(c.name)
    models.append(_model_from_proto(c, source))
  return models


def parse_model_config(text: str, source: str) -> list:
  """Parses a ModelServerConfig text proto (`model_config_list { config {...} }`)."""
  proto = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, proto)
  except text_format.ParseError as e:
    raise ConfigError(f"{source}: {e}; expected a ModelServerConfig text proto "
                      "(model_config_list { config { name: ... base_path: ... } }).") from None
  return models_from_proto(proto, source)


def aspired(model: ModelSpecConfig, available: list) -> set:
  """The versions the model's version policy asks for, of those on disk."""
  if model.policy == "all":
    return set(available)
  if model.policy == "specific":
    return set(model.versions) & set(available)
  return set(sorted(available)[-model.num_versions:])


def _freeze_heap() -> None:
  """Moves every object alive now out of reach of the cyclic garbage collector.

  A loaded TensorFlow model is hundreds of thousands of long-lived Python
  objects. Left in the collector's oldest generation, each full collection walks
  them all while holding the GIL, and every request in flight stalls: the REST
  p99 at 32 clients (wrk, one BiLSTM) was 180 ms without `gc.freeze()` and 13 ms
  with it. Unfrozen and collected first, so the cycles of an unloaded version are
  freed (one full collection, about 0.2 s, at each version change); reference
  counting still frees frozen objects.
  """
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
    self._labels = {}  # name -> {label: version}, checked by _update_labels.
    self._retries = LoadRetries(options.max_load_retries, options.load_retry_interval_seconds)
    self._stop = threading.Event()
    self._thread = None

  # Start-up and polling --------------------------------------------------------

  def start(self, poll_seconds: int) -> None:
    """Loads every model's first versions (waiting for them), then polls in a thread.

    `poll_seconds` > 0 polls that often; 0 polls once; < 0 never polls, as
    --file_system_poll_wait_seconds. Raises TfagentError if a version fails
    (the server then does not start, as TF Serving).
    """
    while True:
      self.poll_once()
      failed = self._startup_failures()
      if failed:
        raise TfagentError("; ".join(failed))
      waiting = [m for m, s in self._servables.items() if not s]
      retrying = self._retries.pending() and (waiting or poll_seconds <= 0)
      if not (retrying or waiting and poll_seconds >= 0) or self._stop.is_set():
        break
      logging.info("Waiting for a first version of %s", ", ".join(sorted(waiting)))
      self._stop.wait(self._retries.pause(poll_seconds))
    self._update_labels()
    if poll_seconds > 0:
      self._thread = threading.Thread(target=self._poll_loop, args=(poll_seconds,),
                                      daemon=True, name="version-poller")
      self._thread.start()

  def _startup_failures(self) -> list:
    with self._lock:
      return [f"Servable {name} version {v} failed to load: {error}"
              for name, states in self._states.items() for v, (state, error) in states.items()
              if state == _State.END and error and not self._servables[name]]

  def _poll_loop(self, poll_seconds: float) -> None:
    while not self._stop.wait(self._retries.pause(poll_seconds)):
      try:
        self.poll_once()
      except Exception:  # noqa: BLE001  Keep polling; the next poll may succeed.
        logging.exception("Polling model base paths failed")

  def poll_once(self) -> None:
    """One pass over every model: load new aspired versions, then unload the rest."""
    with self._config_lock:
      before = self.available()
      for model in list(self.models.values()):
        self._poll_model(model)
      if self.options.freeze_heap and self.available() != before:
        _freeze_heap()

  def _poll_model(self, model: ModelSpecConfig) -> None:
    on_disk = list_versions(model.base_path)
    loaded = self._servables[model.name]
    if not on_disk and not loaded:
      logging.warning("No versions of servable %s found under base path %s",
                      model.name, model.base_path)
    wanted = aspired(model, list(on_disk))
    for version in self._retries.forget(model.name, wanted):
      self._set_state(model.name, version, _State.END)  # Gone, or no longer asked for.
    for version in sorted(wanted - set(loaded)):
      self._load(model.name, version, on_disk[version])
    loaded = self._servables[model.name]
    for version in set(loaded) - wanted:
      if wanted & set(loaded) or not on_disk:
        self._unload(model.name, version)  # Only once a replacement is serving.

  # Config reloads ----------------------------------------------------------------

  def reload_config(self, models: list) -> None:
    """Serves exactly `models` from now on (ServerCore::ReloadConfig).

    New models are loaded, removed ones unloaded; a model's policy and labels
    take effect at once. Labels must name available versions (FAILED_PRECONDITION).
    """
    with self._config_lock:
      new = {m.name: m for m in models}
      for name in set(self.models) - set(new):
        self._retries.forget(name)
        for version in list(self._servables[name]):
          self._unload(name, version)
      with self._lock:
        for name in new:
          self._servables.setdefault(name, {})
          self._states.setdefault(name, {})
        self.models = new
      self.poll_once()
      self._update_labels()

  def _update_labels(self) -> None:
    """Checks and swaps in the label map (ServerCore::UpdateModelVersionLabelMap)."""
    labels = {}
    for model in self.models.values():
      for label, version in model.labels:
        state = self._states.get(model.name, {}).get(version, (None, ""))[0]
        if state != _State.AVAILABLE and not self._allow_unavailable_labels:
          raise status.failed_precondition(
              f"Request to assign label to version {version} of model {model.name}, which is "
              "not currently available for inference")
        labels.setdefault(model.name, {})[label] = version
    with self._lock:
      self._labels = labels

  # Loading -----------------------------------------------------------------------

  def _set_state(self, name, version, state, error=None) -> None:
    with self._lock:
      self._states[name][version] = (state, error)

  def _load(self, name: str, version: int, path: str) -> None:
    """One try, if due, at a version whose files have stopped changing; each try
    fingerprints the version afresh, and a failed one is retried at a later poll."""
    key, tries = (name, version), self._retries.tries((name, version))
    before = None if tries is None else fingerprint(path)
    if before is None or self._retries.failed_as(key, before):
      return  # Not due yet, or failed as it is now: retried when the directory changes.
    time.sleep(self.options.settle_seconds)
    if fingerprint(path) != before:
      logging.info("Servable %s version %d is still being written; waiting.", name, version)
      return
    if tries:
      logging.info("Retrying servable %s version %d (%d of %d)", name, version, tries,
                   self.options.max_load_retries)
    self._set_state(name, version, _State.LOADING)
    started = time.monotonic()
    try:
      servable = self._new_servable(name, version, path, before)
    except Exception as e:  # noqa: BLE001  A bad version must not stop the server.
      logging.error("Servable %s version %d failed to load from %s: %s", name, version,
                    path, e)
      if self._retries.record_failure(key, before):
        self._set_state(name, version, _State.END, e)
      return
    with self._lock:
      self._servables[name] = {**self._servables[name], version: servable}
      self._states[name][version] = (_State.AVAILABLE, None)
    self._retries.loaded(key)
    logging.info("Successfully loaded servable version {name: %s version: %d} in %.1f s",
                 name, version, time.monotonic() - started)

  def _new_servable(self, name: str, version: int, path: str, before: tuple) -> Servable:
    servable = Servable(name, version, path, self.options)
    try:
      warmed = servable.warm_up(self._replay) if self.options.warmup and self._replay else 0
      if fingerprint(path) != before:
        raise status.unavailable(f"{path}: files changed while loading")
    except BaseException:
      servable.close()
      raise
    logging.info("Servable %s version %d: %d warm-up records replayed", name, version, warmed)
    return servable

  def _unload(self, name: str, version: int) -> None:
    with self._lock:
      servable = self._servables[name].get(version)
      self._servables[name] = {v: s for v, s in self._servables[name].items() if v != version}
      self._states[name][version] = (_State.END, None)
    if servable:
      servable.close()  # In-flight requests hold their own reference and finish.
      logging.info("Unloaded servable version {name: %s version: %d}", name, version)

  # Lookup -------------------------------------------------------------------------

  def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
    """The servable a ModelSpec asks for: a version, a label, or the latest."""
    servables = self._servables.get(name, {})
    if label:
      version = self._labels.get(name, {}).get(label)
      if version is None:
        raise status.invalid_argument(f"Unrecognized servable version label: {label}")
    if version is None:
      if not servables:
        raise status.not_found(f"Servable not found for request: Latest({name})")
      return servables[max(servables)]
    if version not in servables:
      raise status.not_found(f"Servable not found for request: Specific({name}, {version})")
    return servables[version]

  def model_status(self, name: str,
                   version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusResponse for one version, or for every version known (newest first)."""
    with self._lock:
      states = dict(self._states.get(name, {}))
    if version is not None:
      if version not in states:
        raise status.not_found(f"Could not find version {version} of model {name}")
      states = {version: states[version]}
    elif not states:
      raise status.not_found(f"Could not find any versions of model {name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for v in sorted(states, reverse=True):
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
      for s in servables.values():
        s.close()
