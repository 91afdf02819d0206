"""tfagent: labelled text in, a TF Serving text-classification model out.

The small Python API (the command line is `tfagent COMMAND`):

  import tfagent
  result = tfagent.train("configs/quickstart.flags", epochs=1)   # metrics + export path
  model = tfagent.load(result["saved_model"])
  model.predict(["物流很快", "质量太差了"])  # [{"class": ..., "probabilities": [...]}, ...]

`tfagent.train` is the training module, callable as above (tfagent/train.py);
imports are deferred so that `import tfagent` stays cheap.
"""

import importlib

__version__ = "0.1.0"


def load(path: str):
  """An export (a version dir, or saved_models/NAME for its latest) with `.predict(texts)`
  and `.explain(texts, class_name=None)`."""
  from tfagent.predict import Predictor
  return Predictor(path)


def __getattr__(name: str):
  """`tfagent.train` (and other submodules) on first use, not at `import tfagent`."""
  if name in ("train", "client", "evaluate", "predict", "serve", "cross_validate"):
    return importlib.import_module(f"tfagent.{name}")
  raise AttributeError(f"module 'tfagent' has no attribute {name!r}")
