r"""A small MLP on scikit-learn's 8x8 digits: the default that trains in seconds.

Run (from the repository root):

  python train/train.py --config configs/digits.py --workdir /tmp/digits

Expected result: test accuracy about 0.99 (measured: 0.9944 of 360 test
images) after 500 steps; the whole command takes about 25 s on the project's
2-core CPU (11 CPU-seconds, most of it imports and compilation; the steps
themselves take a few seconds). See docs/training.md. ``--config configs/digits.py:smoke`` runs 4 steps, for tests.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The digits config; ``variant="smoke"`` shrinks the run to a few steps."""
  config = ml_collections.ConfigDict()

  config.dataset = "digits"
  config.num_classes = 10
  config.data_dir = None
  config.data_source = "auto"
  config.model = "digits_mlp"
  config.model_kwargs = ml_collections.ConfigDict({"hidden": (128,)})

  # 1437 train images: 22 steps of 64 per epoch, so 500 steps are 23 epochs.
  config.batch_size = 64
  config.eval_batch_size = 360
  config.num_steps = 500
  config.augment = False
  config.crop_padding = 1  # pixels, when augment

  common.optimizer(config, learning_rate=3e-3, warmup_steps=20)
  common.loop(config, log_every=50, eval_every=100, checkpoint_every=100, keep_checkpoints=3)

  if variant == "smoke":
    common.smoke(config)
  elif variant is not None:
    raise ValueError(f"Unknown variant {variant!r} of configs/digits.py; use 'smoke' or none.")
  return config
