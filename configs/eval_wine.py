r"""The comparison on data that are not images: scikit-learn's wine set, as in-memory arrays.

Run (from the repository root; about a minute on a 2-core CPU, training included):
  python eval/evaluate.py --config configs/eval_wine.py --workdir /tmp/eval_wine

The 178 wines (13 chemical measurements, 3 cultivars; shipped inside
scikit-learn) are registered as a dataset from in-memory arrays
(``data.from_arrays``: 130 train, 48 test, standardised per feature), so the
whole toolkit runs on them as on images: a base MLP (model "mlp" with
``input_shape=(13,)``), ParM's parity MLP, a learned polynomial code on
feature vectors (``coders.poly_mlp`` workers) and every fixed scheme, on
shared masks, K = 4, S = 0..2. It is an end-to-end check of the non-image
path (tests/test_tabular.py runs ``:smoke``), not an equal-resource claim: no
budgets are set.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from configs import coder_digits, common, parm_digits
from jaxcoded import data
from jaxcoded.comparison import add_scheme as _add

DATASET = "wine"
NUM_TRAIN = 130


def register_wine() -> data.DatasetSpec:
  """The wine set as a registered in-memory dataset (a fixed 130 / 48 split)."""
  from sklearn.datasets import load_wine  # slow; only here

  features, labels = load_wine(return_X_y=True)
  order = np.random.default_rng(0).permutation(len(labels))
  train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
  return data.from_arrays(DATASET, (features[train], labels[train]),
                          (features[test], labels[test]), replace=True)


def base_config(input_shape: tuple[int, ...]) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = DATASET
  config.num_classes = 3
  config.data_dir = None
  config.data_source = "auto"
  config.model = "mlp"
  config.model_kwargs = ml_collections.ConfigDict({"input_shape": input_shape, "hidden": (64,)})
  config.batch_size = 32
  config.eval_batch_size = 48
  config.num_steps = 300
  config.augment = False
  config.crop_padding = 0
  common.optimizer(config, learning_rate=3e-3, warmup_steps=10)
  common.loop(config, log_every=100, eval_every=100, checkpoint_every=100, keep_checkpoints=2,
              progress_bar=False)
  return config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The wine comparison; ``variant="smoke"`` shrinks every run (tests)."""
  spec = register_wine()
  config = ml_collections.ConfigDict()
  config.dataset = DATASET
  config.data_dir = None
  config.data_source = "auto"
  config.base = base_config(spec.input_shape)
  config.base_workdir = ""
  config.num_queries = 4
  config.stragglers = (0, 1, 2)
  config.masks = ml_collections.ConfigDict(dict(
      num_random=32, exhaustive_limit=64,
      deadline=dict(num_masks=0, shift=1.0, rate=2.0, deadline=1.8, design_stragglers=1),
  ))
  config.mesh_devices = 0
  config.max_groups = 0
  config.held_out_images = 32
  config.seed = 0

  parity = parm_digits.get_config()
  parity.dataset = DATASET
  parity.num_classes = 3
  parity.base = config.base
  parity.model = "mlp"
  parity.model_kwargs = ml_collections.ConfigDict({"input_shape": spec.input_shape,
                                                   "hidden": (64,)})
  parity.eval_batch_size = 48
  parity.groups_per_batch = 16
  parity.num_steps = 300

  code = coder_digits.get_config()  # de = 1, dh = 2: R = 3, on feature vectors
  code.dataset = DATASET
  code.base = config.base
  code.worker_features = (32,)
  code.worker_out = 16
  code.head_hidden = 16
  code.num_steps = 400

  config.schemes = ml_collections.ConfigDict()
  _add(config, "uncoded", "uncoded")
  _add(config, "replication", "replication")
  _add(config, "LCC (d=1)", "lcc", degree=1)
  _add(config, "Berrut", "berrut")
  _add(config, "spline (LeTCC)", "spline", smoothing="fit", fit_masks=4)
  _add(config, "ParM", "parm", config=parity, workdir="")
  _add(config, "learned (R=3)", "learned", config=code, workdir="", deploy_at="k_plus_s")

  if variant == "smoke":
    config.base.num_steps = 60
    config.masks.num_random = 4
    config.masks.exhaustive_limit = 4
    config.schemes["spline (LeTCC)"].fit_masks = 2
    config.schemes["ParM"].config.num_steps = 40
    config.schemes["ParM"].config.warmup_steps = 2
    config.schemes["ParM"].config.eval_every = 0
    config.schemes["learned (R=3)"].config.num_steps = 60
    config.schemes["learned (R=3)"].config.checkpoint_every = 60
    config.schemes["learned (R=3)"].config.eval_num_masks = 2
  elif variant is not None:
    raise ValueError(f"Unknown variant {variant!r} of configs/eval_wine.py; use 'smoke' or none.")
  return config
