"""When a version's load is tried again: TF Serving's --max_num_load_retries and
--load_retry_interval_micros, kept as a schedule the poller reads, so no thread
sleeps between tries (and no lock is held across the wait)."""

import os
import time

import tensorflow as tf


def fingerprint(path: str) -> tuple:
  """Every file's path, size and mtime: unchanged means no copy in progress (any file system).

  tf.io.gfile's mtime has whole seconds on local disks: a rewrite of the same
  size within one second goes unseen, a new, removed or resized file does not.
  """
  out = []
  for root, _, files in tf.io.gfile.walk(path):
    for f in files:
      if not tf.io.gfile.exists(os.path.join(root, f)):
        continue  # ram:// lists a sibling's files by prefix (fileio.files_under): assets/.extra.
      st = tf.io.gfile.stat(os.path.join(root, f))
      out.append((os.path.join(root, f), st.length, st.mtime_nsec))
  return tuple(sorted(out))


class LoadRetries:
  """Versions waiting for another try, and versions that failed for good as they are."""

  def __init__(self, max_retries: int, interval_seconds: float):
    self.max_retries, self.interval = max_retries, interval_seconds
    self._next = {}  # key -> (tries so far, time.monotonic() of the next).
    self._failed = {}  # key -> fingerprint of the last try, once every try failed.

  def tries(self, key) -> int | None:
    """Tries made so far, or None if the next one is not due yet."""
    tries, due = self._next.get(key, (0, 0.0))
    return tries if time.monotonic() >= due else None

  def failed_as(self, key, seen: tuple) -> bool:
    """Whether every try failed on the version exactly as `seen`."""
    return self._failed.get(key) == seen

  def record_failure(self, key, seen: tuple) -> bool:
    """Records a failed try on `seen`; True once no tries are left."""
    tries = self._next.pop(key, (0, 0.0))[0]
    if tries < self.max_retries:
      self._next[key] = (tries + 1, time.monotonic() + self.interval)
      return False
    self._failed[key] = seen
    return True

  def loaded(self, key) -> None:
    """The version loaded: nothing is scheduled or remembered for it."""
    self._next.pop(key, None)
    self._failed.pop(key, None)

  def forget(self, name: str, keep=()) -> list:
    """Drops the tries scheduled for `name`'s versions not in `keep`; returns those versions."""
    dropped = [key for key in self._next if key[0] == name and key[1] not in keep]
    for key in dropped:
      del self._next[key]
    return [version for _, version in dropped]

  def pending(self) -> bool:
    """Whether any version waits for another try."""
    return bool(self._next)

  def pause(self, poll_seconds: float) -> float:
    """Seconds to the next poll (every second if `poll_seconds` < 0) or the next retry due.

    A retry already due waits for the next poll, so a version whose files
    still change is not polled in a busy loop.
    """
    now = time.monotonic()
    waits = [due - now for _, due in tuple(self._next.values()) if due > now]
    return min(waits + [max(poll_seconds, 1)])
