"""Paths through `tf.io.gfile`, so gs://, s3:// (with its plugin) and ram:// work like folders.

Call `tf.io.gfile` directly for single operations; this module holds only what
gfile lacks: the plugin check, atomic small writes and a version's publish order.
Keras-free: the server and `predict` use it.
"""

import contextlib
import gzip
import hashlib
import io
import os

import tensorflow as tf

from tfagent.errors import ConfigError

# Schemes whose filesystem comes from another package than TensorFlow.
PLUGINS = {"s3": "tensorflow-io", "hdfs": "tensorflow-io", "az": "tensorflow-io",
           "http": "tensorflow-io", "https": "tensorflow-io"}


def scheme(path: str) -> str:
  """'gs' of 'gs://b/x'; '' for a local path."""
  return path.split("://", 1)[0] if "://" in path else ""


def is_local(path: str) -> bool:
  return scheme(path) in ("", "file")


def absolute(path: str) -> str:
  """A local path made absolute; a gs://, ram://... URL as it is (abspath would break it)."""
  return os.path.abspath(path) if scheme(path) == "" else path


def check_filesystems(paths: dict) -> None:
  """Fails before any work when a path's scheme has no filesystem registered.

  Args:
    paths: flag name -> path (empty paths are skipped).
  """
  registered = set(tf.io.gfile.get_registered_schemes())
  for flag, path in paths.items():
    name = scheme(path or "")
    if name and name not in registered:
      package = PLUGINS.get(name, "the package that registers it")
      raise ConfigError(f"--{flag}={path}: no filesystem for '{name}://' is installed; "
                        f"`pip install {package}` (and import it) to use it, or give a local, "
                        f"gs:// or ram:// path ({', '.join(sorted(s for s in registered if s))}"
                        " work here).")


def _fsync(path: str) -> None:
  """Flushes a local file or folder to disk (power loss); other stores have no fsync."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def replace_atomically(write, final: str) -> None:
  """Calls `write(tmp_path)` beside `final` (its folder made), then renames it over `final`.

  Readers see the old file or the new one, never a part: a local rename is atomic
  (fsynced first); an object store's copy shows the object only once it is complete.
  """
  folder, name = os.path.split(final)
  tf.io.gfile.makedirs(folder or ".")
  tmp = os.path.join(folder, f".tmp-{name}")
  write(tmp)
  if is_local(final):
    _fsync(tmp)
  tf.io.gfile.rename(tmp, final, overwrite=True)
  if is_local(final):
    _fsync(folder or ".")


def write_bytes_atomically(final: str, content: bytes) -> None:
  """Writes a small file through `replace_atomically`."""
  def write(path):
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(content)
  replace_atomically(write, final)


def write_text_atomically(final: str, text: str) -> None:
  """Writes a small UTF-8 text file through `replace_atomically`."""
  write_bytes_atomically(final, text.encode("utf-8"))


def read_text(path: str, flag: str = "") -> str:
  """A UTF-8 text file; with `flag`, a missing or unreadable one is a ConfigError naming it."""
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      return f.read()
  except tf.errors.OpError as e:
    if not flag:
      raise
    reason = e.message.split("; ", 1)[-1]  # TF's messages read "PATH; reason".
    raise ConfigError(f"--{flag}={path}: {reason}.") from None


def files_under(folder: str) -> list:
  """Every file below `folder`, as paths relative to it, sorted."""
  out = []
  for root, _, files in tf.io.gfile.walk(folder):
    rel = os.path.relpath(root, folder) if is_local(folder) else root[len(folder):].strip("/")
    # ram:// lists a sibling's files by prefix (`assets.extra/w` as `assets/.extra`).
    out.extend(os.path.normpath(os.path.join(rel, f)) for f in files
               if tf.io.gfile.exists(os.path.join(root, f)))
  return sorted(out)


def publish_folder(tmp: str, final: str) -> None:
  """Makes the complete folder `tmp` visible as `final`.

  Local: one atomic rename. Object stores (and ram://) rename file by file, so the
  files are copied with `saved_model.pb` last, as TF Serving advises there: a
  version counts only once its saved_model.pb exists (tfagent/versions.py).
  """
  if is_local(final):
    tf.io.gfile.rename(tmp, final)
    return
  names = sorted(files_under(tmp), key=lambda n: n == "saved_model.pb")
  for name in names[:-1]:
    tf.io.gfile.makedirs(os.path.dirname(os.path.join(final, name)))
    tf.io.gfile.copy(os.path.join(tmp, name), os.path.join(final, name), overwrite=True)
  # saved_model.pb, copied last, is renamed from its copy so that no reader sees it half
  # copied (ram:// and some stores show a file while it is being written).
  replace_atomically(lambda path: tf.io.gfile.copy(os.path.join(tmp, names[-1]), path,
                                                   overwrite=True), os.path.join(final, names[-1]))
  remove_tree(tmp)


def remove_tree(folder: str) -> None:
  """Removes `folder` and its files (rmtree trips on ram://'s prefix listing)."""
  for name in files_under(folder):
    tf.io.gfile.remove(os.path.join(folder, name))
  try:
    tf.io.gfile.rmtree(folder)
  except tf.errors.NotFoundError:  # ram://: only empty folder entries are left.
    pass


def digest(items) -> str:
  """sha256 of a sequence of strings or bytes, each ended by a NUL: its content and order."""
  sha = hashlib.sha256()
  for item in items:
    sha.update(item if isinstance(item, bytes) else item.encode("utf-8", "surrogatepass"))
    sha.update(b"\0")
  return sha.hexdigest()


@contextlib.contextmanager
def atomic_output(path: str, default=None):
  """A text file written beside `path` and moved there on success (no half-written output
  on an error), gzip-compressed when `path` ends in .gz; `default` (e.g. standard output)
  when `path` is empty."""
  if not path:
    yield default
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    gz = path.endswith(".gz")
    with tf.io.gfile.GFile(tmp, "wb" if gz else "w") as out:
      if not gz:
        yield out
      else:
        with gzip.GzipFile(fileobj=out, mode="wb") as packed, io.TextIOWrapper(
            packed, encoding="utf-8", newline="") as text:
          yield text
    tf.io.gfile.rename(tmp, path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
