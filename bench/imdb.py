"""Where the benchmarks find IMDB: ../shared/data/imdb (see its README).

For the project's own benchmarks only; never a runtime dependency of tfagent.
"""

import os

from tfagent import config

DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "shared", "data", "imdb"))
TRAIN = os.path.join(DIR, "train.csv.gz")
TEST = os.path.join(DIR, "test.csv.gz")
UNSUP = os.path.join(DIR, "unsup.csv.gz")  # 50,000 unlabelled reviews (--unlabeled).
CLASS_NAMES = "neg,pos"  # Label order of the files (0 negative, 1 positive), as TFDS's.


def official_split(**overrides) -> config.DataConfig:
  """The official 25k/25k split; validation is carved from train by tfagent."""
  return config.DataConfig(dataset=f"csv:{TRAIN}", test_path=TEST, class_names=CLASS_NAMES,
                           **overrides)
