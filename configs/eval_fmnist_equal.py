r"""The equal-resource comparison (issue #17): every coded scheme at N = K + S, f's cost.

For each S in 1, 2, 3 every coded scheme is deployed at N = K + S workers;
the learned codes are trained once and redeployed at each N
(``deploy_at = "k_plus_s"``), with the worker at most 1.1x f's FLOPs and the
master at most 10% of f per query (design A): the harness refuses a
deployment above either budget. Replication runs at its own, higher, cost,
shown in the "compute / query" column like every other row. Variants: ``k8``
(default) and ``k12``.

Run from the repository root (trains what is not yet in the workdir: the base
LeNet-5, ParM's parity model, the learned codes; "learned systematic +
sketch" is the f-frozen systematic code whose decoder also reads a learned
sketch of the queries, configs/coder_fmnist_k8_sketch.py; "uncoded + sketch
fallback" is its control: no parities, the master runs the sketch and a small
head alone on a straggler's query, configs/fashion_mnist_sketch.py; the
outputs-only "learned systematic" code is in the K = 8 table only):

  python eval/evaluate.py --config configs/eval_fmnist_equal.py:k8 --workdir /tmp/equal_k8

or everything, as the README's tables were made: ``bash eval/reproduce.sh --equal``.
"""

from __future__ import annotations

import ml_collections

from configs import (
  coder_fmnist_k8_equal,
  coder_fmnist_k8_sketch,
  coder_fmnist_k8_systematic,
  coder_fmnist_k12_equal,
  fashion_mnist_lenet,
  fashion_mnist_sketch,
  parm_fmnist,
)
from jaxcoded.comparison import add_scheme

_POLYNOMIAL = {8: coder_fmnist_k8_equal, 12: coder_fmnist_k12_equal}
WORKER_BUDGET = 1.1
MASTER_BUDGET = 0.10


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """``variant``: "k8" (default) or "k12"."""
  variant = variant or "k8"
  if variant not in ("k8", "k12"):
    raise ValueError(f"Unknown variant {variant!r} of configs/eval_fmnist_equal.py; use k8 or k12.")
  k = int(variant[1:])
  config = ml_collections.ConfigDict()
  config.dataset = "fashion_mnist"
  config.data_dir = None
  config.data_source = "auto"
  config.base = fashion_mnist_lenet.get_config()
  config.base.progress_bar = False
  config.base_workdir = ""
  config.num_queries = k
  config.stragglers = (1, 2, 3)
  config.masks = ml_collections.ConfigDict(dict(
      num_random=40, exhaustive_limit=40,
      deadline=dict(num_masks=40, shift=1.0, rate=2.0, deadline=1.8, design_stragglers=1),
  ))
  config.mesh_devices = 0
  config.max_groups = 0
  config.seed = 0

  polynomial = _POLYNOMIAL[k].get_config()
  systematic = coder_fmnist_k8_systematic.get_config()
  systematic.num_queries = k
  sketch = coder_fmnist_k8_sketch.get_config()
  sketch.num_queries = k
  if k == 12:  # each step holds 1.5x K = 8's queries; 3000 steps for time on the 2-core CPU
    sketch.num_steps = 3000
  budgets = dict(worker_budget=WORKER_BUDGET, master_budget=MASTER_BUDGET)
  add_scheme(config, "uncoded + fallback", "uncoded", fallback=True)
  add_scheme(config, "uncoded + sketch fallback", "uncoded_model_fallback",
             config=fashion_mnist_sketch.get_config(), workdir="", **budgets)
  add_scheme(config, "replication", "replication")
  add_scheme(config, "LCC (d=1)", "lcc", degree=1, **budgets)
  add_scheme(config, "Berrut", "berrut", **budgets)
  add_scheme(config, "spline (LeTCC)", "spline", smoothing="fit",
             **budgets)
  add_scheme(config, "ParM", "parm", config=parm_fmnist.get_config(variant), workdir="", **budgets)
  add_scheme(config, "learned polynomial", "learned", config=polynomial, workdir="",
             deploy_at="k_plus_s", **budgets)
  if k == 8:  # at K = 12 superseded by the sketch code below (docs/learned_codes.md has its runs)
    add_scheme(config, "learned systematic", "learned_systematic", config=systematic, workdir="",
               deploy_at="k_plus_s", **budgets)
  add_scheme(config, "learned systematic + sketch", "learned_systematic", config=sketch, workdir="",
             deploy_at="k_plus_s", **budgets)
  return config
