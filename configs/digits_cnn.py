r"""A small CNN on scikit-learn's 8x8 digits: the quickstart's base classifier f.

Run (from the repository root):

  python train/train.py --config configs/digits_cnn.py --workdir /tmp/digits_cnn

``digits_cnn``: two 3x3 convolutions (16, 32 channels), a 2x2 max-pool, dense
64, logits; about 0.59 MFLOPs per image against the MLP's 0.02 (configs/digits.py).
The quickstart uses it because a coded scheme's master (encoding, decoding, a
learned decoder head) costs a fixed few thousand FLOPs per query: next to the
MLP even Lagrange decoding is 5-8% of f and no learned head fits a 10% master
budget, so "master / f" and "compute / query" would measure the toy, not the
code. Measured: see docs/results/digits_quickstart.md (base accuracy line).
``get_config("smoke")`` runs a few steps, for tests.
"""

from __future__ import annotations

import ml_collections

from configs import digits


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The digits CNN config; ``variant="smoke"`` shrinks the run to a few steps."""
  if variant not in (None, "smoke"):
    raise ValueError(f"Unknown variant {variant!r} of configs/digits_cnn.py; use 'smoke' or none.")
  config = digits.get_config(variant)
  config.model = "digits_cnn"
  config.model_kwargs = ml_collections.ConfigDict({"features": (16, 32), "hidden": 64})
  return config
