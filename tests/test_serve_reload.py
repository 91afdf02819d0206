"""Hot reload: versions appear while a client loop runs, and no request fails."""

import dataclasses
import gc
import os
import re
import shutil
import threading
import time
import weakref

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.apis.get_model_status_pb2 import ModelVersionStatus

import serving_util
from serving_util import run_server
from tfagent import config, evaluate, export, signatures
from tfagent.errors import TfagentError
from tfagent.serving import manager, servable, tensors

POLL_SECONDS = 1
WAIT = 60  # Seconds a condition may take on a busy machine before the test fails.


def wait_for(condition, what: str) -> None:
  """Polls `condition()` until true; fails naming `what` after WAIT seconds."""
  deadline = time.monotonic() + WAIT
  while not condition():
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.05)


class ClientLoop(threading.Thread):
  """REST and gRPC predicts back to back; records failures and the version that answered."""

  def __init__(self, url: str, address: str):
    super().__init__(daemon=True)
    self.url, self.stop = url, threading.Event()
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
    self.failures, self.versions, self.count = [], [], 0

  def run(self):
    request = predict_pb2.PredictRequest(model_spec={"name": "m"})
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["great movie"]))
    session = requests.Session()
    while not self.stop.is_set():
      try:
        r = session.post(f"{self.url}/v1/models/m:predict", json={"instances": ["a"]}, timeout=30)
        if r.status_code != 200:
          self.failures.append(r.text)
        version = self.stub.Predict(request, timeout=30).model_spec.version.value
        self.versions.append((time.monotonic(), version))
        self.count += 2
        time.sleep(0.01)  # A steady client, not a load test: the CPU is shared.
      except Exception as e:  # noqa: BLE001  Any failure is what the test looks for.
        self.failures.append(repr(e))

  def first_seen(self, version: int):
    return next((t for t, v in list(self.versions) if v == version), None)


@pytest.mark.slow
def test_new_version_is_served_after_warm_up_without_a_failed_request(trained_run, tmp_path):
  cfg, result = trained_run
  base = tmp_path / "m"
  shutil.copytree(result["saved_model"], base / "1")
  log = tmp_path / "server.log"
  args = ["--model_name=m", f"--model_base_path={base}",
          f"--file_system_poll_wait_seconds={POLL_SECONDS}", "--max_num_load_retries=0"]
  with run_server(args, "m", str(log)) as (url, address, _):
    loop = ClientLoop(url, address)
    loop.start()
    wait_for(lambda: loop.count >= 10, "the client loop's first requests")
    # Half a version (graph, no variables) is never served; version 1 goes on.
    os.makedirs(base / "3" / "variables")
    shutil.copy(os.path.join(result["saved_model"], "saved_model.pb"), base / "3")
    get_status = lambda: requests.get(f"{url}/v1/models/m",  # noqa: E731
                                      timeout=10).json()["model_version_status"]
    wait_for(lambda: get_status()[0] == {**get_status()[0], "version": "3", "state": "END"},
             "version 3's failed load")
    status = get_status()[0]["status"]
    assert status["error_code"] not in ("OK", "UNKNOWN") and status["error_message"]
    seen = loop.count
    wait_for(lambda: loop.count > seen + 4, "requests after the failed load")
    assert loop.first_seen(3) is None and loop.versions[-1][1] == 1
    shutil.rmtree(base / "3")
    # A real export of version 2, written while the server polls.
    model = evaluate.load_checkpoint(os.path.join(cfg.train.model_dir, "checkpoints",
                                                  "best.keras"))  # Its classes registered.
    export.export_model(model, ["negative", "positive"], config.ExportConfig(
        export_dir=str(tmp_path), model_name="m", version=2, explain_steps=0),
        warmup_texts=["great"])
    exported = time.monotonic()
    wait_for(lambda: loop.first_seen(2) is not None, "version 2 to answer")
    switched = loop.first_seen(2)
    seen = loop.count
    wait_for(lambda: loop.count > seen + 10, "requests after the switch")
    loop.stop.set()
    loop.join(timeout=60)
  load_seconds = float(re.search(r"version: 2\} in ([\d.]+) s", log.read_text()).group(1))
  # Found at the next poll (+ the 0.2 s settle check), then loaded and warmed up.
  assert switched - exported < POLL_SECONDS + 0.2 + load_seconds + 1.0
  assert loop.failures == [] and loop.count > 20
  assert [v for _, v in loop.versions if _ > switched] and all(
      v == 2 for t, v in loop.versions if t > switched)
  print(f"version 2 served {switched - exported:.2f} s after the export "
        f"(poll {POLL_SECONDS} s, load + warm-up {load_seconds:.1f} s); "
        f"{loop.count} requests, 0 failed")


@pytest.fixture
def unfrozen_heap():
  """Gives the test process its garbage collector back after a test that freezes it."""
  yield
  gc.unfreeze()


def test_version_changes_freeze_the_heap_and_free_the_unloaded_version(trained_run, tmp_path,
                                                                       unfrozen_heap):
  _, result = trained_run
  base = tmp_path / "m"
  shutil.copytree(result["saved_model"], base / "1")
  models = manager.single_model("m", str(base))
  mgr = manager.ModelManager(models, servable.LoadOptions(warmup=False, settle_seconds=0,
                                                         freeze_heap=True))
  gc.collect()
  gc.freeze()
  before_load = gc.get_freeze_count()
  mgr.poll_once()
  # The loaded model's objects are out of the collector's scans from now on.
  frozen = gc.get_freeze_count()
  one_version = frozen - before_load
  assert one_version > 1_000
  old = weakref.ref(mgr.resolve("m")._loaded)
  for version in (2, 3, 4):
    shutil.copytree(result["saved_model"], base / str(version))
    mgr.poll_once()
  assert mgr.available() == {"m": [4]}
  # The unloaded versions' objects, frozen with the rest, are freed, not kept.
  assert old() is None
  assert gc.get_freeze_count() - frozen < one_version / 2
  mgr.close()


@pytest.fixture(scope="module")
def synthetic_version(tmp_path_factory) -> str:
  """A small SavedModel with one warm-up record (a predict of one text)."""
  from tensorflow_serving.apis import prediction_log_pb2
  path = str(tmp_path_factory.mktemp("synthetic") / "1")
  serving_util.write_synthetic_model(path)
  log = prediction_log_pb2.PredictionLog()
  log.predict_log.request.model_spec.name = "m"
  log.predict_log.request.inputs["text"].CopyFrom(tf.make_tensor_proto(["warm"]))
  os.makedirs(os.path.dirname(os.path.join(path, signatures.WARMUP_FILE)))
  with tf.io.TFRecordWriter(os.path.join(path, signatures.WARMUP_FILE)) as writer:
    writer.write(log.SerializeToString())
  return path


def test_a_retry_reads_the_version_again_after_its_files_changed_during_a_load(
    synthetic_version, tmp_path):
  base = tmp_path / "m"
  shutil.copytree(synthetic_version, base / "1")
  late = base / "1" / "copied_late.txt"

  def replay(servable_, log):
    del servable_, log
    if not late.exists():  # The copy's last file lands while the first try warms up.
      late.write_text("done")
  mgr = manager.ModelManager(manager.single_model("m", str(base)), servable.LoadOptions(
      settle_seconds=0, max_load_retries=2, load_retry_interval_seconds=0.1), replay=replay)
  try:
    mgr.start(poll_seconds=-1)
    assert mgr.available() == {"m": [1]}
  finally:
    mgr.close()


def test_a_load_waiting_to_retry_holds_no_lock(synthetic_version, tmp_path):
  """A config reload (HandleReloadConfigRequest) and other models load meanwhile."""
  for name in ("a", "b"):
    shutil.copytree(synthetic_version, tmp_path / name / "1")
  a, b = (manager.single_model(name, str(tmp_path / name))[0] for name in ("a", "b"))
  mgr = manager.ModelManager([a], servable.LoadOptions(
      warmup=False, settle_seconds=0, max_load_retries=3, load_retry_interval_seconds=WAIT))
  mgr.start(poll_seconds=POLL_SECONDS)
  reload = threading.Thread(target=mgr.reload_config, args=([a, b],), daemon=True)
  try:
    os.makedirs(tmp_path / "a" / "2")
    (tmp_path / "a" / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    wait_for(lambda: len(mgr.model_status("a").model_version_status) == 2,
             "the poller to try version 2")
    time.sleep(POLL_SECONDS)  # The broken version's first try fails in milliseconds.
    reload.start()
    reload.join(WAIT / 4)
    assert not reload.is_alive(), "the config reload waited for another model's retries"
    assert mgr.resolve("b").version == 1 and mgr.resolve("a").version == 1
  finally:
    mgr.close()
    if reload.is_alive():
      reload.join(WAIT)


def test_labels_are_checked_before_versions_load_and_one_in_use_moves_only_to_a_loaded_one(
    synthetic_version, tmp_path):
  """As ServerCore::ReloadConfig: labels are checked before models load, so a label at
  start-up, or on a version the same reload adds, needs
  --allow_version_labels_for_unavailable_models (both were let through); with the flag, moving
  `stable` from 1 to 9 was let through too, and `stable` then answered 404."""
  shutil.copytree(synthetic_version, tmp_path / "m" / "1")

  def config(labels):
    text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    return manager.parse_model_config(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "m"}" '
        f'model_platform: "tensorflow" {text} }} }}', "models.config")
  options = servable.LoadOptions(warmup=False, settle_seconds=0)
  # At start-up no version is loaded yet: a label needs the flag (it started without it).
  with pytest.raises(TfagentError, match="Request to assign label to version 1 of model m, "
                     "which is not currently available.*--allow_version_labels_for_unavail"):
    manager.ModelManager(config({"stable": 1}), options).start(poll_seconds=-1)
  mgr = manager.ModelManager(config({"stable": 1}), options, allow_unavailable_labels=True)
  try:
    mgr.start(poll_seconds=-1)
    mgr.reload_config(config({"stable": 1, "canary": 9}))  # New: allowed by the flag.
    with pytest.raises(tensors.ServingError, match="Request to assign label to version 9 of "
                       "model m, which is not currently available for inference") as e:
      mgr.reload_config(config({"stable": 9}))
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert mgr.resolve("m", label="stable").version == 1
    plain = manager.ModelManager(config({}), options)  # Without the flag.
    plain.start(poll_seconds=-1)
    plain.reload_config(config({"stable": 1}))  # Version 1 is loaded: a label may name it.
    shutil.copytree(synthetic_version, tmp_path / "m" / "2")
    with pytest.raises(tensors.ServingError, match="label to version 2 of model m"):
      plain.reload_config(config({"stable": 1, "canary": 2}))  # Checked before it loads 2.
    assert [s.version for s in plain.model_status("m").model_version_status] == [1]
    plain.close()
  finally:
    mgr.close()


def test_a_reload_waits_for_the_models_it_adds_and_one_that_fails_is_its_error(
    synthetic_version, tmp_path, caplog):
  """As HandleReloadConfigRequest (WaitUntilModelsAvailable): a reload adding a model whose
  version cannot load answered OK at once; now it waits out the retries and answers UNKNOWN
  naming it, while the good model it adds serves."""
  shutil.copytree(synthetic_version, tmp_path / "good" / "1")
  (tmp_path / "broken" / "1").mkdir(parents=True)
  (tmp_path / "broken" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
  good, broken = (manager.single_model(n, str(tmp_path / n))[0] for n in ("good", "broken"))
  mgr = manager.ModelManager([], servable.LoadOptions(
      warmup=False, settle_seconds=0, max_load_retries=1, load_retry_interval_seconds=0.2))
  try:
    mgr.start(poll_seconds=-1)  # No poller: the reload itself tries again.
    with pytest.raises(tensors.ServingError, match=r"^1 model\(s\) did not become available: "
                       r"\{\{\{name: broken version: 1\} due to error: [A-Z_]+: .*\}, \}$") as e:
      mgr.reload_config([good, broken])
    assert e.value.code == grpc.StatusCode.UNKNOWN
    assert caplog.text.count("Servable broken version 1 failed to load") == 2  # The retry too.
    assert mgr.resolve("good").version == 1
    mgr.reload_config([good, broken])  # Nothing added: no wait, no error.
  finally:
    mgr.close()


def test_load_retries_wait_their_interval_give_up_and_forget_a_vanished_version(tmp_path,
                                                                              caplog):
  """A broken version, tried for real: the retry waits its interval, the last failure ends it
  until its files change, and a version that vanishes is forgotten."""
  broken = tmp_path / "m" / "1"
  broken.mkdir(parents=True)
  (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
  options = servable.LoadOptions(warmup=False, settle_seconds=0, max_load_retries=1,
                                 load_retry_interval_seconds=30)
  mgr = manager.ModelManager(manager.single_model("m", str(tmp_path / "m")), options)
  state = lambda: mgr.model_status("m").model_version_status[0]  # noqa: E731
  mgr.poll_once()  # The first try fails; one retry is left, due in 30 s.
  assert state().state == ModelVersionStatus.LOADING
  assert mgr.pause(poll_seconds=5) == 5 and 25 < mgr.pause(poll_seconds=60) <= 30
  mgr.poll_once()  # Not due: not tried again.
  assert caplog.text.count("failed to load") == 1
  shutil.rmtree(broken)
  mgr.poll_once()  # Gone: its retry is dropped, and it ends.
  assert state().state == ModelVersionStatus.END and mgr.pause(poll_seconds=60) == 60
  now = manager.ModelManager(manager.single_model("m", str(tmp_path / "m")),
                             dataclasses.replace(options, load_retry_interval_seconds=0))
  broken.mkdir()
  (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
  for _ in range(3):  # A try and its one retry fail; the third poll sees the same files.
    now.poll_once()
  assert caplog.text.count("failed to load") == 3
  given_up = now.model_status("m").model_version_status[0]
  assert given_up.state == ModelVersionStatus.END and given_up.status.error_message
  (broken / "saved_model.pb").write_bytes(b"still not a SavedModel, but changed")
  now.poll_once()  # Changed files: tried again.
  assert caplog.text.count("failed to load") == 4


def test_versions_no_longer_wanted_unload_as_tf_servings_availability_policy(synthetic_version,
                                                                           tmp_path):
  """A policy that names only a version not on disk leaves nothing to serve: the others
  unload (they kept serving as AVAILABLE); a wanted version that fails to load keeps the
  highest unwanted one serving alone, the lower ones unload."""
  for version in (1, 2, 3):
    shutil.copytree(synthetic_version, tmp_path / "m" / str(version))
  os.makedirs(tmp_path / "m" / "4")
  (tmp_path / "m" / "4" / "saved_model.pb").write_bytes(b"not a SavedModel")

  def policy(*versions):
    text = " ".join(f"versions: {v}" for v in versions)
    return manager.parse_model_config(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "m"}" '
        f'model_platform: "tensorflow" model_version_policy {{ specific {{ {text} }} }} }} }}',
        "models.config")
  mgr = manager.ModelManager(policy(1, 2, 3), servable.LoadOptions(
      warmup=False, settle_seconds=0, max_load_retries=0))
  try:
    mgr.start(poll_seconds=-1)
    assert mgr.available() == {"m": [1, 2, 3]}
    mgr.reload_config(policy(4))  # On disk, but it fails to load.
    assert mgr.available() == {"m": [3]}
    mgr.reload_config(policy(5))  # Not on disk: nothing is wanted.
    assert mgr.available() == {"m": []}
    with pytest.raises(servable.ServingError) as e:
      mgr.resolve("m")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
  finally:
    mgr.close()
