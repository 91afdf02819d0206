"""The README and docs/ say only what the code does: commands, flags, the generated CLI page.

Every `tfagent ...` and `python -m tfagent....` command in a shell code block or inline code
span of README.md and docs/*.md is parsed with the real flag definitions of its entry point
(`tfagent.cli.command_flags`, in-process): an unknown command, flag or enum value, a bad number
or a missing flagfile named in the repository fails here. The README's own-data commands run
for real on a tiny csv (slow).
"""

import contextlib
import csv
import glob
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

from absl import flags
import pytest

from tfagent import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
README_MAX_CHARS = 8000
MODULE_MAX_LINES = 350
GENERATED = {"cli.md"}  # Checked against its generator instead.
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
MODULES = {module: command for command, module in cli.COMMANDS.items()}
HELP = {"--help", "-help", "-h", "--helpshort", "--helpfull", "-?"}
SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "(", ")"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


def doc_paths() -> list:
  docs = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
  return [README] + [p for p in docs if os.path.basename(p) not in GENERATED]


def snippets(text: str) -> list:
  """Shell lines of fenced blocks (continuations joined, `$ ` prompts cut) and inline spans."""
  out = []
  for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
    if lang in SHELL_LANGS:
      body = re.sub(r"\\\n\s*", " ", body)
      out += [re.sub(r"^\$ ", "", line) for line in body.splitlines()]
  prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  out += re.findall(r"`((?:tfagent|python -m tfagent)[ .][^`]*)`", prose)
  return out


def split_commands(line: str) -> list:
  """`(command, args)` for each tfagent command on a shell line; placeholders are skipped."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  try:
    tokens = list(lexer)
  except ValueError:  # An unclosed quote: not shell.
    return []
  found = []
  for i, token in enumerate(tokens):
    if token == "tfagent" or token.endswith("/tfagent"):
      command, start = (tokens[i + 1] if i + 1 < len(tokens) else None), i + 2
    elif token == "-m" and i + 1 < len(tokens) and tokens[i + 1].startswith("tfagent."):
      module, start = tokens[i + 1], i + 2
      if module == "tfagent.cli":
        found.append(("cli", tokens[start:]))
        continue
      command = MODULES.get(module, module)
    else:
      continue
    if command is None or re.search(r"(^|\.)([A-Z]+|…|\.\.\.)$", command):
      continue  # `tfagent COMMAND`, `python -m tfagent.X`, `tfagent …`: placeholders.
    args = []
    for arg in tokens[start:]:
      if arg in SEPARATORS:
        break
      args.append(arg)
    found.append((command, args))
  return found


def doc_commands() -> list:
  """`(where, line, command, args)` of every tfagent command in the docs."""
  out = []
  for path in doc_paths():
    with open(path, encoding="utf-8") as f:
      for line in snippets(f.read()):
        for command, args in split_commands(line):
          out.append((os.path.relpath(path, ROOT), line.strip(), command, args))
  return out


def parse(command: str, args: list) -> None:
  """Parses `args` with the command's real flags, as `tfagent COMMAND` would; raises on error."""
  if command == "cli":
    assert args in ([], ["--markdown"]), args
    return
  assert command in cli.COMMANDS, f"no command {command!r}; commands: {', '.join(cli.COMMANDS)}"
  if not args or HELP & set(args):
    return  # A bare mention of the command, or its help.
  _, values = cli.command_flags(command)
  kept = []
  for arg in args:
    name, _, value = arg.lstrip("-").partition("=")
    if not arg.startswith("-"):
      kept.append(arg)  # A text to classify.
    elif name == "flagfile":
      if os.path.exists(os.path.join(ROOT, value)):  # my.flags is the user's own file.
        kept.append(arg)
    elif re.fullmatch(r"[A-Z_,]+|.*(\.\.\.|…).*", value):  # --strategy=NAME, --dataset=...
      boolean = name.startswith("no") and name[2:] in values and values[name[2:]].boolean
      assert name in values or boolean, f"{command} has no flag --{name}"
    else:
      kept.append(arg)
  values([f"tfagent {command}", *kept])


COMMANDS_IN_DOCS = doc_commands()


def test_docs_name_commands():
  """The extraction finds the commands the docs are about (it cannot silently find none)."""
  found = {(where, command) for where, _, command, _ in COMMANDS_IN_DOCS}
  for where, command in [("README.md", "train"), ("README.md", "predict"),
                         ("README.md", "evaluate"), ("README.md", "serve"),
                         ("docs/serving.md", "serve"), ("docs/serving.md", "client"),
                         ("docs/data.md", "convert"), ("docs/training.md", "cross_validate")]:
    assert (where, command) in found, (where, command)


@pytest.mark.parametrize("where,line,command,args", COMMANDS_IN_DOCS,
                         ids=[f"{w}:{c}:{i}" for i, (w, _, c, _) in enumerate(COMMANDS_IN_DOCS)])
def test_doc_command_parses(where, line, command, args, monkeypatch):
  monkeypatch.chdir(ROOT)  # Flagfiles are named relative to the repository root.
  try:
    parse(command, args)
  except (flags.Error, AssertionError) as e:
    pytest.fail(f"{where}: `{line}`: {e}")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags"))),
                         ids=os.path.basename)
def test_config_parses_with_train_flags(path, monkeypatch):
  monkeypatch.chdir(ROOT)
  parse("train", [f"--flagfile={os.path.relpath(path, ROOT)}"])


def test_no_config_or_package_file_reads_shared():
  """../shared is the developers' data, never a user's: no config or package file names it."""
  paths = glob.glob(os.path.join(ROOT, "configs", "**", "*"), recursive=True) + glob.glob(
      os.path.join(ROOT, "tfagent", "**", "*.py"), recursive=True)
  for path in filter(os.path.isfile, paths):  # configs/search/ holds the search spaces.
    with open(path, encoding="utf-8") as f:
      assert "../shared" not in f.read(), path


def test_every_module_reads_as_one_stage():
  """No module of the package over MODULE_MAX_LINES lines (issue 33's bound)."""
  for path in glob.glob(os.path.join(ROOT, "tfagent", "**", "*.py"), recursive=True):
    with open(path, encoding="utf-8") as f:
      lines = f.read().count("\n")
    name = os.path.relpath(path, ROOT)
    assert lines <= MODULE_MAX_LINES, f"{name} has {lines} lines; split it by responsibility"


def test_wrong_flag_in_a_doc_is_caught():
  """The check itself: a misspelt flag and an unknown command fail."""
  [(command, args)] = split_commands("tfagent train --flagfile=configs/lstm.flags --epoch=3")
  with pytest.raises(flags.Error, match="epoch"):
    parse(command, args)
  [(command, args)] = split_commands("python -m tfagent.trian --epochs=3")
  with pytest.raises(AssertionError, match="trian"):
    parse(command, args)


def test_cli_md_is_generated_from_the_flags():
  with open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8") as f:
    committed = f.read()
  assert committed == cli.markdown(), (
      "docs/cli.md differs from the flags: python -m tfagent.cli --markdown > docs/cli.md")


def test_readme_is_short_and_is_the_long_description(monkeypatch):
  with open(README, encoding="utf-8") as f:
    readme = f.read()
  assert len(readme) <= README_MAX_CHARS, f"README.md has {len(readme)} characters"
  assert "target" not in readme.lower()
  import setuptools  # pylint: disable=unused-import,import-outside-toplevel # noqa: F401
  from distutils.core import run_setup  # pylint: disable=import-outside-toplevel # setuptools' copy
  monkeypatch.chdir(ROOT)
  dist = run_setup("setup.py", stop_after="init")
  assert dist.get_long_description() == readme


def run_cli(*args, cwd):
  """`tfagent ARGS` as the console script runs it, in its own process."""
  return subprocess.run([sys.executable, "-m", "tfagent.cli", *args], capture_output=True,
                        text=True, env=ENV, timeout=300, cwd=cwd)


@pytest.mark.parametrize("command", ["client", pytest.param("predict", marks=pytest.mark.slow)])
def test_help_is_what_cli_md_shows(command, tmp_path):
  proc = run_cli(command, "--help", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == cli.command_help(command).strip()


def readme_command(command: str, containing: str = "") -> list:
  """The arguments of the README's first `tfagent COMMAND` line holding `containing`."""
  with open(README, encoding="utf-8") as f:
    found = [args for line in snippets(f.read()) for c, args in split_commands(line)
             if c == command and containing in line]
  assert found, (command, containing)
  return found[0]


def tiny_csv(path, n: int) -> str:
  words = {"positive": ["great movie loved it", "wonderful acting", "a joy to watch"],
           "negative": ["terrible film hated it", "boring and too long", "a waste of time"]}
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    for i in range(n):
      label = ("negative", "positive")[i % 2]
      writer.writerow([f"{words[label][i % 3]} number {i}", label])
  return str(path)


def free_port() -> int:
  with contextlib.closing(socket.socket()) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_readme_own_data_commands_run(tmp_path):
  """The README's own-data path as a user runs it: template, train, predict, evaluate, serve."""
  tiny_csv(tmp_path / "train.csv", 60)
  tiny_csv(tmp_path / "test.csv", 20)
  tiny_csv(tmp_path / "labelled.csv", 12)
  tiny_csv(tmp_path / "new.csv", 8)
  with open(os.path.join(ROOT, "configs", "csv_template.flags"), encoding="utf-8") as f:
    template = f.read()
  (tmp_path / "my.flags").write_text(
      template.replace("csv:data/train.csv", "csv:train.csv").replace("data/test.csv", "test.csv")
      + "--epochs=1\n--explain_steps=0\n", encoding="utf-8")  # No explain: not read here.

  train = run_cli("train", *readme_command("train", "my.flags"), cwd=tmp_path)
  assert train.returncode == 0, train.stderr[-3000:]
  version = os.path.join(tmp_path, "saved_models", "my_model", "1")
  assert os.path.exists(os.path.join(version, "model_card.md"))
  summary = closing_summary(train.stderr)
  assert summary["SavedModel"] == "saved_models/my_model/1"
  assert summary["Model card"] == "saved_models/my_model/1/model_card.md"

  predict = run_cli("predict", *readme_command("predict"), cwd=tmp_path)
  assert predict.returncode == 0, predict.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / "predictions.csv", encoding="utf-8")))
  assert len(rows) == 8 and {r["class"] for r in rows} <= {"negative", "positive"}
  # The summary's own predict command, as a user pastes it.
  command, args = shlex.split(summary["predict"])[1], shlex.split(summary["predict"])[2:]
  predicted = run_cli(command, *args, cwd=tmp_path)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  [row] = [json.loads(line) for line in predicted.stdout.splitlines()]  # JSON lines.
  assert row["class"] in ("negative", "positive")

  evaluate = run_cli("evaluate", *readme_command("evaluate"), cwd=tmp_path)
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
  assert metrics["examples"] == 12

  rest, grpc = free_port(), free_port()
  # The summary's serve command (the README's, for this run) and both curl bodies.
  serve_args = shlex.split(summary["serve"])[2:]
  assert serve_args == readme_command("serve")
  server = subprocess.Popen([sys.executable, "-m", "tfagent.cli", "serve", *serve_args,
                             f"--rest_api_port={rest}", f"--port={grpc}"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
  try:
    answer = post_curl(rest, readme_curl())
    [row] = post_curl(rest, summary["curl"])["predictions"]
    assert row["classes"] in ("negative", "positive")
  finally:
    server.terminate()
    server.wait(timeout=30)
  with open(README, encoding="utf-8") as f:
    shown = json.loads(re.search(r"```json\n(.*?)```", f.read(), re.S).group(1))
  assert answer.keys() == shown.keys() == {"predictions"}
  assert [row.keys() for row in answer["predictions"]] == [
      row.keys() for row in shown["predictions"]]


def closing_summary(log: str) -> dict:
  """The lines of the run's closing summary (after "Done."), by what they name."""
  lines = log[log.rindex("Done.\n"):].splitlines()
  found = {}
  for line in lines[1:]:
    key, _, value = line.strip().partition(": ")
    if key in ("SavedModel", "Model card"):
      found[key] = value
    elif line.startswith("  tfagent ") or line.startswith("  curl "):
      found[line.split()[1] if "tfagent" in line else "curl"] = line.strip()
  return found


def readme_curl() -> str:
  with open(README, encoding="utf-8") as f:
    return next(line for line in snippets(f.read()) if line.startswith("curl -d"))


def post_curl(port: int, curl: str) -> dict:
  """Sends a `curl -d BODY localhost:8501/...` line's body to its path on `port` once the
  model is up."""
  body, url = shlex.split(curl)[2:4]
  url = "http://" + url.replace("localhost:8501", f"127.0.0.1:{port}")
  deadline = time.time() + 120
  while True:
    try:
      request = urllib.request.Request(url, data=body.encode(), method="POST")
      with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
    except OSError:
      if time.time() > deadline:
        raise
      time.sleep(1)
