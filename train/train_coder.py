"""Trains and evaluates a learned code.

Run from the repository root:

  python train/train_coder.py --config=configs/coder_fmnist_k8.py \
      --workdir=/tmp/coder_k8 --config.base_workdir=/tmp/fmnist_lenet
  python train/train_coder.py --config=configs/coder_digits.py \
      --workdir=/tmp/coder_digits --config.num_steps=300
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcoded import coder_training

# Config variants import their defaults (``from configs import ...``).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/coder_*.py file.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  config = _CONFIG.value
  results = coder_training.train_and_evaluate(config, _WORKDIR.value)
  table = results.pop("load_table")
  print(json.dumps(results, indent=2))
  print(table)


if __name__ == "__main__":
  app.run(main)
