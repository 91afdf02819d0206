"""What the serving tests share: the server subprocess, a synthetic SavedModel whose
answers are known exactly, a raw keep-alive HTTP connection, metrics and memory readers."""

import http.client
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.launch import serve_in_subprocess as run_server  # noqa: E402,F401

CLASS_NAMES = ["negative", "positive"]


def expected_probabilities(texts: list) -> np.ndarray:
  """What the synthetic model answers: P(positive) = min(len(utf-8 bytes), 10) / 10."""
  s = np.array([min(len(t.encode("utf-8")), 10) / 10 for t in texts], np.float32)
  return np.stack([np.float32(1) - s, s], axis=1)


def write_synthetic_model(export_dir: str, fail_every: int = 0) -> str:
  """A SavedModel written by Keras's ExportArchive, whose answers tests compute exactly.

  Signatures (Keras writes every method_name as tensorflow/serving/predict):
    serving_default  text <string>[b] -> probabilities <float>[b, 2], class_ids <int64>[b],
                     classes <string>[b]
    classify         inputs (serialized tf.Example with `text`) -> classes, scores [b, 2]
    regress          inputs (serialized tf.Example with `x` float) -> outputs <float>[b] (2x)
    floats           x <float>[b] -> y <float>[b] (x), d <double>[b] (x)
    bytes            text <string>[b] -> echo_bytes <string>[b]
    pair             a <int64>[b], b <string>[b] -> n <int64>[b] (2a + len(b))
    bad_classify     inputs -> classes <int64>[b, 2], scores <float>[b, 2]
  `fail_every` > 0: every that-many-th call of serving_default raises (a counter
  variable inside the graph), for fault tests.
  """
  import keras
  import tensorflow as tf
  names = tf.constant(CLASS_NAMES)
  counter = tf.Variable(0, dtype=tf.int64, trainable=False)

  def probabilities(text):
    s = tf.cast(tf.minimum(tf.strings.length(text), 10), tf.float32) / 10
    return tf.stack([1 - s, s], axis=1)

  def parse(serialized, key, dtype):
    spec = {key: tf.io.FixedLenFeature([], dtype)}
    return tf.io.parse_example(serialized, spec)[key]

  def string_spec(name):
    return [tf.TensorSpec([None], tf.string, name=name)]

  @tf.function(input_signature=string_spec("text"))
  def serve(text):
    if fail_every:
      calls = counter.assign_add(1)
      tf.debugging.assert_none_equal(calls % fail_every, tf.constant(0, tf.int64),
                                     message="injected fault")
    p = probabilities(text)
    ids = tf.argmax(p, axis=1)
    return {"probabilities": p, "class_ids": ids, "classes": tf.gather(names, ids)}

  @tf.function(input_signature=string_spec("inputs"))
  def classify(inputs):
    p = probabilities(parse(inputs, "text", tf.string))
    return {"classes": tf.tile(names[tf.newaxis], [tf.shape(p)[0], 1]), "scores": p}

  @tf.function(input_signature=string_spec("inputs"))
  def regress(inputs):
    return {"outputs": 2 * parse(inputs, "x", tf.float32)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
  def floats(x):
    return {"y": x, "d": tf.cast(x, tf.float64)}

  @tf.function(input_signature=string_spec("text"))
  def echo(text):
    return {"echo_bytes": text}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="a"),
                                tf.TensorSpec([None], tf.string, name="b")])
  def pair(a, b):
    return {"n": 2 * a + tf.cast(tf.strings.length(b), tf.int64)}

  @tf.function(input_signature=string_spec("inputs"))
  def bad_classify(inputs):
    p = probabilities(parse(inputs, "text", tf.string))
    return {"classes": tf.zeros_like(p, tf.int64), "scores": p}

  holder = keras.layers.Layer()
  holder.counter = counter
  holder.built = True  # Nothing to build: it only carries the counter.
  archive = keras.export.ExportArchive()
  archive.track(holder)
  for name, fn in (("serving_default", serve), ("classify", classify), ("regress", regress),
                   ("floats", floats), ("bytes", echo), ("pair", pair),
                   ("bad_classify", bad_classify)):
    archive.add_endpoint(name, fn)
  archive.write_out(export_dir, verbose=False)
  return export_dir


def expected_attributions(token: str) -> float:
  """What the synthetic explain signature gives a token: its utf-8 length / 10, negative
  for a token starting with "bad"."""
  return (-1 if token.startswith("bad") else 1) * len(token.encode("utf-8")) / 10


def write_explain_model(export_dir: str) -> str:
  """A SavedModel (tf.saved_model.save of a tf.Module) with serving_default and classify as
  write_synthetic_model's, and the `explain` signature of the export contract:
    explain  text <string>[b] -> tokens <string>[b, T] (split on spaces, padded with ""),
             attributions <float>[b, T] (expected_attributions), probabilities [b, 2],
             classes <string>[b], completeness_error <float>[b] (0.01)
  """
  import tensorflow as tf
  names = tf.constant(CLASS_NAMES)

  def probabilities(text):
    s = tf.cast(tf.minimum(tf.strings.length(text), 10), tf.float32) / 10
    return tf.stack([1 - s, s], axis=1)

  def string_spec(name):
    return [tf.TensorSpec([None], tf.string, name=name)]

  class Synthetic(tf.Module):
    @tf.function(input_signature=string_spec("text"))
    def serve(self, text):
      p = probabilities(text)
      ids = tf.argmax(p, axis=1)
      return {"probabilities": p, "class_ids": ids, "classes": tf.gather(names, ids)}

    @tf.function(input_signature=string_spec("inputs"))
    def classify(self, inputs):
      text = tf.io.parse_example(inputs, {"text": tf.io.FixedLenFeature([], tf.string)})["text"]
      p = probabilities(text)
      return {"classes": tf.tile(names[tf.newaxis], [tf.shape(p)[0], 1]), "scores": p}

    @tf.function(input_signature=string_spec("text"))
    def explain(self, text):
      tokens = tf.strings.split(text)
      size = tf.cast(tf.strings.length(tokens), tf.float32) / 10
      sign = tf.where(tf.strings.regex_full_match(tokens, "bad.*"), -1.0, 1.0)
      p = probabilities(text)
      return {"tokens": tokens.to_tensor(""), "attributions": (size * sign).to_tensor(0.0),
              "probabilities": p, "classes": tf.gather(names, tf.argmax(p, axis=1)),
              "completeness_error": tf.fill(tf.shape(text), 0.01)}

  module = Synthetic()
  tf.saved_model.save(module, export_dir, signatures={
      "serving_default": module.serve, "classify": module.classify, "explain": module.explain})
  return export_dir


class Connection:
  """One keep-alive HTTP/1.1 connection: does the next request reuse it?"""

  def __init__(self, url: str, timeout: float = 60):
    host, port = url.removeprefix("http://").split(":")
    self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    self.conn.connect()
    self.sock = self.conn.sock

  def request(self, method: str, path: str, body=b"", headers=None) -> tuple:
    """(status, headers dict, body bytes); raises if the server dropped the connection."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    self.conn.request(method, path, data, headers or {"Content-Type": "application/json"})
    response = self.conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()

  def same_socket(self) -> bool:
    return self.conn.sock is self.sock and self.sock is not None

  def close(self) -> None:
    self.conn.close()


def metric_total(page: str, **labels) -> float:
  """Sum of tfagent_serving_requests_total over the series matching `labels`."""
  total = 0.0
  for series, value in re.findall(r"^tfagent_serving_requests_total\{(.*)\} (\S+)$", page, re.M):
    found = dict(re.findall(r'(\w+)="([^"]*)"', series))
    if all(found.get(k) == v for k, v in labels.items()):
      total += float(value)
  return total


def rss_bytes(pid: int) -> int:
  """Resident memory of a process now (Linux /proc)."""
  with open(f"/proc/{pid}/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss(pid: int) -> int:
  """Resets the process's peak resident memory to its current one (Linux clear_refs);
  returns that."""
  with open(f"/proc/{pid}/clear_refs", "w") as f:
    f.write("5")
  return peak_rss_bytes(pid)


def peak_rss_bytes(pid: int) -> int:
  """The process's peak resident memory since start or the last reset (VmHWM)."""
  with open(f"/proc/{pid}/status") as f:
    return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024
