r"""The Fashion-MNIST comparison (the paper's setting) at CPU scale, or paper-sized.

Run everything from scratch (base LeNet-5, parity model, learned codes, then
every scheme at S = 0..3) with the reproduce script:

  bash eval/reproduce.sh /tmp/reproduce            # K = 8, CPU scale
  bash eval/reproduce.sh --full /tmp/reproduce     # K = 8, 10, 12, longer runs

or one comparison directly:

  python eval/evaluate.py --config configs/eval_fmnist.py:k8 --workdir /tmp/eval_fmnist_k8

Variants: ``k8`` (default), ``k10``, ``k12``, and ``<k>_full`` (learned codes
trained 2.5x longer again, more masks: the paper-sized run, for a GPU or a
patient CPU). The fields are those of configs/eval_digits.py. Needs
Fashion-MNIST offline (``apt-get install dataset-fashion-mnist``) or TFDS
(docs/data.md).
"""

from __future__ import annotations

import ml_collections

from configs import coder_fmnist_k8, coder_fmnist_k8_lagrange, coder_fmnist_k12, fashion_mnist_lenet, parm_fmnist
from jaxcoded.comparison import add_scheme

_CODES = {8: coder_fmnist_k8, 12: coder_fmnist_k12}


def _learned_code(k: int) -> ml_collections.ConfigDict:
  """The learned polynomial code for K queries at a 10% master budget."""
  code = (_CODES.get(k) or coder_fmnist_k8).get_config()
  if k not in _CODES:  # K = 10: de = 4 keeps R = 9 <= N = K + 3
    code.num_queries = k
    code.encoder_degree = 4
  return code


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """``variant``: "k8" (default), "k10", "k12", optionally with "_full"."""
  variant = variant or "k8"
  name, _, size = variant.partition("_")
  if name not in ("k8", "k10", "k12") or size not in ("", "full"):
    raise ValueError(
        f"Unknown variant {variant!r} of configs/eval_fmnist.py; use k8, k10 or k12, "
        "optionally with _full (e.g. k12_full)."
    )
  k = int(name[1:])
  full = size == "full"
  config = ml_collections.ConfigDict()
  config.dataset = "fashion_mnist"
  config.data_dir = None
  config.data_source = "auto"
  config.base = fashion_mnist_lenet.get_config()
  config.base.progress_bar = False
  config.base_workdir = ""
  config.num_queries = k
  config.stragglers = (0, 1, 2, 3)
  config.masks = ml_collections.ConfigDict(dict(
      num_random=200 if full else 40, exhaustive_limit=500 if full else 40,
      deadline=dict(num_masks=200 if full else 40, shift=1.0, rate=2.0, deadline=1.8,
                    design_stragglers=1),
  ))
  config.mesh_devices = 0
  config.max_groups = 0
  config.seed = 0

  parity = parm_fmnist.get_config(name)
  code = _learned_code(k)
  lagrange = coder_fmnist_k8_lagrange.get_config()
  lagrange.num_queries = k
  # The wide worker trained 4x longer: the learned code is training-limited at
  # 3000 steps (train accuracy = test accuracy; docs/learned_codes.md).
  code.worker_features = (32, 64)
  code.num_steps = 12000
  if full:
    code.num_steps = 30000
    lagrange.num_steps = 3000
  add_scheme(config, "uncoded", "uncoded")
  add_scheme(config, "uncoded + fallback", "uncoded", fallback=True)
  add_scheme(config, "replication", "replication")
  add_scheme(config, "LCC (d=1)", "lcc", degree=1)
  add_scheme(config, "Berrut", "berrut")
  # LeTCC's smoothing splines, both fitted per (K, N, S) on held-out train images (docs/spline.md).
  add_scheme(config, "spline (LeTCC)", "spline", smoothing="fit")
  add_scheme(config, "Berrut, 1 Byzantine", "byzantine_berrut", num_adversaries=1,
             adversary="random")
  add_scheme(config, "ParM", "parm", config=parity, workdir="")
  add_scheme(config, "learned polynomial", "learned", config=code, workdir="")
  add_scheme(config, "learned Lagrange", "learned", config=lagrange, workdir="")
  return config
