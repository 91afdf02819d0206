"""The server subprocess helper the serving tests share."""

from tfagent.serving.launch import serve_in_subprocess as run_server  # noqa: F401
