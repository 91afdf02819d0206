"""Where users see explanations: the Python API's rows, `tfagent predict --explain` on a
terminal and in plain text, the --explain_html page, and the error for an older export.

Against a synthetic export whose `explain` signature follows the contract (serving_util's
write_explain_model), until the real one lands.
"""

import html.parser
import json

import pytest

from conftest import run_command
from serving_util import expected_attributions, write_explain_model, write_synthetic_model
import tfagent
from tfagent import explain_view
from tfagent.errors import ConfigError

TEXTS = ["good", "bad acting and a badly told story", "<script>alert(1)</script> 差"]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
  return write_explain_model(str(tmp_path_factory.mktemp("explain") / "1"))


@pytest.fixture(scope="module")
def rows(export_dir):
  return tfagent.load(export_dir).explain(TEXTS)


def test_python_api_gives_one_dict_a_text_padding_dropped(rows):
  assert [set(r) for r in rows] == [{"text", "class", "probabilities", "tokens",
                                     "attributions", "completeness_error"}] * 3
  assert [r["text"] for r in rows] == TEXTS
  for row, text in zip(rows, TEXTS):
    assert row["tokens"] == text.split()  # The first text's row is padded to 7 in the graph.
    assert row["attributions"] == pytest.approx([expected_attributions(t) for t in row["tokens"]])
    assert row["completeness_error"] == pytest.approx(0.01)
  assert [r["class"] for r in rows] == ["negative", "positive", "positive"]
  assert rows[0]["probabilities"] == pytest.approx([0.6, 0.4])


def test_terminal_view_plain_and_coloured(rows):
  plain = explain_view.terminal(rows[1], colour=False)
  head, body = plain.splitlines()
  assert head.startswith("positive 1.000 (completeness error 0.01): bad acting")
  assert body.split() == ["bad(-0.30)", "acting(+0.60)", "and(+0.30)", "a(+0.10)",
                          "badly(-0.50)", "told(+0.40)", "story(+0.50)"]
  assert "\x1b" not in plain
  coloured = explain_view.terminal(rows[1], colour=True)
  # |-0.5| is 5/6 of the largest score, 0.6: strong red; 0.1 is faint green.
  assert "\x1b[48;5;160;38;5;15mbadly\x1b[0m" in coloured
  assert "\x1b[48;5;194;38;5;16ma\x1b[0m" in coloured
  assert "\x1b[48;5;28;38;5;15macting\x1b[0m" in coloured
  assert "(+0." not in coloured


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
  class Tty:
    def isatty(self):
      return True
  monkeypatch.delenv("NO_COLOR", raising=False)
  assert explain_view.use_colour(Tty())
  monkeypatch.setenv("NO_COLOR", "1")
  assert not explain_view.use_colour(Tty())


def test_predict_explain_prints_plain_text_off_a_terminal(export_dir, monkeypatch, capfd):
  assert run_command(monkeypatch, "predict", f"--saved_model={export_dir}", "--explain",
                     "good movie", "bad day") == 0
  out = capfd.readouterr().out
  assert "\x1b" not in out
  assert out.splitlines() == [
      "positive 1.000 (completeness error 0.01): good movie", "  good(+0.40) movie(+0.50)",
      "positive 0.700 (completeness error 0.01): bad day", "  bad(-0.30) day(+0.30)"]
  assert run_command(monkeypatch, "predict", f"--saved_model={export_dir}", "--explain",
                     "--format=jsonl", stdin="good movie\n") == 0
  row = json.loads(capfd.readouterr().out)
  assert row["tokens"] == ["good", "movie"] and row["attributions"] == pytest.approx([.4, .5])


class Page(html.parser.HTMLParser):
  """Each section's text and its tokens with their data-score; every start tag seen."""

  def __init__(self):
    super().__init__()
    self.texts, self.tokens, self.tags, self._in = [], [], [], None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.tags.append(tag)
    if tag == "section":
      self.tokens.append([])
    elif tag == "p" and attrs.get("class") == "text":
      self._in = "text"
      self.texts.append("")
    elif tag == "span" and "data-score" in attrs:
      self._in = "token"
      self.tokens[-1].append(["", float(attrs["data-score"]), float(attrs["title"])])

  def handle_endtag(self, tag):
    if tag in ("p", "span"):
      self._in = None

  def handle_data(self, data):
    if self._in == "text":
      self.texts[-1] += data
    elif self._in == "token":
      self.tokens[-1][-1][0] += data


def test_explain_html_writes_one_page_with_each_text_token_and_score(export_dir, tmp_path,
                                                                      monkeypatch, capfd):
  page_path = tmp_path / "why.html"
  (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
  assert run_command(monkeypatch, "predict", f"--saved_model={export_dir}",
                     f"--input={tmp_path / 'in.jsonl'}", f"--explain_html={page_path}",
                     "--batch_size=2") == 0
  assert "bad(-0.30)" in capfd.readouterr().out  # --explain_html implies --explain.
  page = Page()
  content = page_path.read_text(encoding="utf-8")
  page.feed(content)
  assert page.texts == TEXTS
  assert "script" not in page.tags and "<script>" not in content  # Shown as text, escaped.
  assert not any(marker in content for marker in ("http://", "https://", "<link", "src="))
  for text, tokens in zip(TEXTS, page.tokens):
    assert [t for t, _, _ in tokens] == text.split()
    for token, score, title in tokens:
      assert score == pytest.approx(expected_attributions(token), abs=1e-5)
      assert title == pytest.approx(score, abs=1e-4)
  assert not list(tmp_path.glob("*.tmp-*"))


def test_an_export_without_explain_is_one_clear_error(tmp_path, monkeypatch, capfd):
  old = write_synthetic_model(str(tmp_path / "old" / "1"))
  with pytest.raises(ConfigError, match="exported before explanations existed") as e:
    tfagent.load(old).explain(["x"])
  assert old in str(e.value) and "Re-export" in str(e.value)
  page = tmp_path / "why.html"
  assert run_command(monkeypatch, "predict", f"--saved_model={old}",
                     f"--explain_html={page}", "some text") == 1
  assert capfd.readouterr().out == "" and not page.exists()
  assert tfagent.load(old).predict(["x"])[0]["class"] == "negative"  # Predictions still work.
  # Its card says --explain_steps=0: re-running the same flagfile would not help (it said to).
  (tmp_path / "old" / "1" / "model_card.json").write_text(
      json.dumps({"config": {"export": {"explain_steps": 0}}}), encoding="utf-8")
  with pytest.raises(ConfigError, match=r"exported with --explain_steps=0.*Re-export it with "
                     r"--explain_steps above 0"):
    tfagent.load(old).explain(["x"])


def test_explain_refuses_csv_and_top_k(export_dir, monkeypatch):
  for flag in ("--format=csv", "--top_k=1"):
    assert run_command(monkeypatch, "predict", f"--saved_model={export_dir}", "--explain",
                       flag, "x") == 1


def test_an_export_without_explain_class_is_one_clear_error(export_dir, monkeypatch, capfd):
  """The synthetic export has `explain` but not `explain_class`, as one exported before it."""
  model = tfagent.load(export_dir)
  with pytest.raises(ConfigError, match="no 'explain_class' signature.*before explanations "
                     "toward a named class existed.*Re-export"):
    model.explain(["x"], class_name="positive")
  with pytest.raises(ConfigError, match="--explain_class='neutral': not a class of .*; "
                     "valid: negative, positive"):
    model.explain(["x"], class_name="neutral")
  assert run_command(monkeypatch, "predict", f"--saved_model={export_dir}",
                     "--explain_class=positive", "x") == 1
  assert capfd.readouterr().out == ""
  assert model.explain(["good"])[0]["class"] == "negative"  # explain itself still works.


def test_the_views_show_the_probability_of_the_rows_class():
  """An explain_class row may be toward a class that was not predicted: its probability is
  shown, not the largest."""
  row = {"text": "meh", "class": "negative", "probabilities": [0.3, 0.7], "tokens": ["meh"],
         "attributions": [-0.2], "completeness_error": 0.001}
  names = ["negative", "positive"]
  assert explain_view.terminal(row, False, names).startswith(
      "toward negative 0.300 (predicted positive 0.700) (completeness")
  assert ("toward negative 0.300 (predicted positive 0.700) · completeness"
          in explain_view.html_section(row, names))
  predicted = dict(row, **{"class": "positive"})
  assert explain_view.terminal(predicted, False, names).startswith("positive 0.700 (completeness")


def test_the_pages_head_says_toward_which_class():
  """A page of --explain_class=negative does not say "toward the predicted class"."""
  assert "toward the predicted class" in explain_view.html_head()
  head = explain_view.html_head("neg<b>")
  assert "toward the predicted class" not in head
  assert "toward the class neg&lt;b&gt; (--explain_class)" in head


def test_predict_and_explain_load_the_export_once(export_dir, monkeypatch):
  """Scoring, the class names and the explanations share one tf.saved_model.load."""
  import tensorflow as tf
  loads, load = [], tf.saved_model.load
  monkeypatch.setattr(tf.saved_model, "load", lambda *a, **k: loads.append(a) or load(*a, **k))
  model = tfagent.load(export_dir)
  assert model.predict(["good"])[0]["class"] == "negative"
  assert model.explain(["good"])[0]["tokens"] == ["good"]
  assert len(loads) == 1
