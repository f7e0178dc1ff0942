r"""ParM on Fashion-MNIST with the LeNet-5 base: one config, K as the variant.

Run (from the repository root; ``:k8`` picks K = 8, and k2, k4, k10, k12 the
other group sizes; train/train.py routes ``config.task = "parity"`` to
``jaxcoded.training.parity.train``):

  python train/train.py --config configs/parm_fmnist.py:k8 --workdir /tmp/parm_fmnist_k8 \
      --config.base_workdir=/tmp/fmnist_lenet

The base classifier is configs/fashion_mnist_lenet.py (LeNet-5, about 0.90),
read from ``base_workdir`` when a finished run is there, else trained into it
(``""``: ``<workdir>/base``, about 5 CPU-minutes). The parity model is a fresh
LeNet-5 of the same size; it regresses the sum of the base logits of K random
training images from their summed image (MSE), 64 groups per step.
Expected result (measured on the shared 2-core CPU, 5-8 minutes each, with a
base at 0.8976; docs/parm.md): degraded-mode accuracy (the reconstructed
output of the missing query) 0.513 / 0.468 / 0.427 and one-straggler accuracy
over all N masks 0.855 / 0.859 / 0.861 at K = 8 / 10 / 12; ApproxIFER reports
ParM at .671 / .59 / .552 for K = 8 / 10 / 12 (with a stronger ResNet-18 base).
"""

from __future__ import annotations

import ml_collections

from configs import common, fashion_mnist_lenet

GROUP_SIZES = {"k2": 2, "k4": 4, "k8": 8, "k10": 10, "k12": 12}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """ParM on Fashion-MNIST; ``variant`` is one of ``GROUP_SIZES`` (default "k8")."""
  variant = variant or "k8"
  if variant not in GROUP_SIZES:
    raise ValueError(
        f"Unknown variant {variant!r} of configs/parm_fmnist.py; "
        f"use one of {', '.join(GROUP_SIZES)}."
    )
  config = ml_collections.ConfigDict()
  config.task = "parity"

  config.dataset = "fashion_mnist"
  config.num_classes = 10
  config.data_dir = None
  config.data_source = "auto"

  config.base = fashion_mnist_lenet.get_config()
  config.base.progress_bar = False
  config.base_workdir = ""  # "": <workdir>/base

  config.num_queries = GROUP_SIZES[variant]  # K
  config.num_parities = 1  # r (only 1 is implemented)
  config.target = "logits"  # or "softmax": what f_P regresses the sum of
  config.model = config.base.model  # the parity model: same architecture as the base
  config.model_kwargs = ml_collections.ConfigDict(config.base.model_kwargs.to_dict())

  # 60000 / (64 K) steps per epoch of groups: 117 at K = 8, so 6000 steps are
  # about 51 passes over the images, each time in new random groups.
  config.groups_per_batch = 64
  config.eval_batch_size = 1000
  config.num_steps = 6000

  common.optimizer(config, learning_rate=1e-3, warmup_steps=200)
  common.loop(config, log_every=200, eval_every=1000, checkpoint_every=1000)
  return config
