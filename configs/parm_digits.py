r"""ParM on the 8x8 digits: a parity model for K = 4 queries that trains in seconds.

Run (from the repository root; train/train.py routes ``config.task = "parity"``
to ``jaxcoded.training.parity.train``):

  python train/train.py --config configs/parm_digits.py --workdir /tmp/parm_digits

The base classifier (configs/digits.py, 200 steps, about 0.97) is trained
first into ``<workdir>/base`` (or read from ``--config.base_workdir``). The
parity model, the same MLP family, regresses the sum of the base logits of 4
random training digits from their summed image (an MLP with 256 hidden units
rather than the base's 128). Expected result (measured, about 30 s): parity
MSE 0.44, degraded-mode accuracy 0.956, one-straggler accuracy 0.980 (base
0.986 on the same queries). ``get_config("smoke")`` shrinks both runs to a few
steps, for tests.
"""

from __future__ import annotations

import ml_collections

from configs import common, digits


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """ParM on digits; ``variant="smoke"`` runs a few steps only."""
  config = ml_collections.ConfigDict()
  config.task = "parity"

  config.dataset = "digits"
  config.num_classes = 10
  config.data_dir = None
  config.data_source = "auto"

  config.base = digits.get_config()
  config.base.num_steps = 200
  config.base.progress_bar = False
  config.base_workdir = ""  # "": <workdir>/base

  config.num_queries = 4  # K
  config.num_parities = 1  # r (only 1 is implemented)
  config.target = "logits"  # or "softmax": what f_P regresses the sum of
  config.model = config.base.model  # the parity model: same family as the base
  config.model_kwargs = ml_collections.ConfigDict({"hidden": (256,)})

  config.groups_per_batch = 64
  config.eval_batch_size = 360
  config.num_steps = 600

  common.optimizer(config, learning_rate=3e-3, warmup_steps=20)
  common.loop(config, log_every=50, eval_every=200, checkpoint_every=200)

  if variant == "smoke":
    config.base.num_steps = 8
    config.base.warmup_steps = 1
    common.smoke(config)
  elif variant is not None:
    raise ValueError(f"Unknown variant {variant!r} of configs/parm_digits.py; use 'smoke' or none.")
  return config
