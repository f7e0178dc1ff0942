r"""The accuracy-against-cost frontier (issue #25): Fashion-MNIST, K = 8, S = 0..3, every R.

configs/eval_fmnist_equal.py:k8 (every scheme at N = K + S, worker at most 1.1x
f's FLOPs, master at most 10% of f per query) at S = 0, 1, 2, 3, plus the
learned polynomial code's R sweep, each R trained once (N = 11) and deployed
twice at every S:

* at N = K + S (``deploy_at = "k_plus_s"``), beside the fixed schemes;
* at N = R + S (``deploy_at = "r_plus_s"``): R < K tolerates S stragglers with
  fewer workers than any fixed scheme needs, so less compute per query.

| R | training config | de | dh |
|---|---|---|---|
| 3 | configs/coder_fmnist_k8_r3.py | 1 | 2 |
| 5 | configs/coder_fmnist_k8_r5.py | 2 | 2 |
| 7 | configs/coder_fmnist_k8_equal.py (the equal tables' "learned polynomial") | 3 | 2 |

The R codes train into ``<coders_dir>/coder_k8_r<R>`` (reloaded when finished;
both deployments of an R share it). Run from the repository root:

  python eval/evaluate.py --config configs/eval_fmnist_frontier.py \
      --workdir /tmp/frontier_k8 --config.base_workdir=/tmp/frontier_k8/base \
      --config.coders_dir=/tmp/frontier_k8/coders

or ``bash eval/reproduce.sh --frontier [WORKDIR]``; the front at each S:
``python eval/tables.py --frontier WORKDIR/eval_fmnist_frontier_k8/results.json``.
The issue's sweep trained the codes into /work/runs (``--config.coders_dir=/work/runs
--config.base_workdir=/work/runs/base``; commands in /work/runs/COMMANDS.md).
"""

from __future__ import annotations

import ml_collections

from configs import (
  coder_fmnist_k8_equal,
  coder_fmnist_k8_r3,
  coder_fmnist_k8_r5,
  eval_fmnist_equal,
)
from jaxcoded.comparison import add_scheme, scheme_names

# R -> the training config of the learned polynomial code with that threshold (K = 8).
SWEEP = {3: coder_fmnist_k8_r3, 5: coder_fmnist_k8_r5, 7: coder_fmnist_k8_equal}
DEPLOYMENTS = (("K + S", "k_plus_s"), ("R + S", "r_plus_s"))


def scheme_name(threshold: int, where: str) -> str:
  """The table name of the R-threshold code deployed at N = ``where`` ("K + S" or "R + S")."""
  return f"learned polynomial R={threshold} (N = {where})"


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """``variant``: "k8" (the default) or "smoke" (every part trained a few steps, 20 groups)."""
  if variant not in (None, "k8", "smoke"):
    raise ValueError(
        f"Unknown variant {variant!r} of configs/eval_fmnist_frontier.py; use k8 or smoke.")
  config = eval_fmnist_equal.get_config("k8")
  config.stragglers = (0, 1, 2, 3)
  config.coders_dir = "/tmp/jaxcoded-frontier/coders"  # <coders_dir>/coder_k8_r<R>
  coders_dir = config.get_ref("coders_dir")
  budgets = dict(worker_budget=eval_fmnist_equal.WORKER_BUDGET,
                 master_budget=eval_fmnist_equal.MASTER_BUDGET)
  # The equal tables' R = 7 entry is the sweep's R = 7 at N = K + S: one entry, renamed.
  del config.schemes["learned polynomial"]
  for position, name in enumerate(scheme_names(config)):  # keeps the positions 0, 1, 2, ...
    config.schemes[name].position = position
  for threshold, module in SWEEP.items():
    for where, deploy_at in DEPLOYMENTS:
      add_scheme(config, scheme_name(threshold, where), "learned", config=module.get_config(),
                 workdir=coders_dir + f"/coder_k8_r{threshold}", deploy_at=deploy_at, **budgets)
  if variant == "smoke":
    _smoke(config)
  return config


def _smoke(config: ml_collections.ConfigDict) -> None:
  """Shrinks the run to minutes: the wiring, not the numbers."""
  config.coders_dir = "/tmp/jaxcoded-frontier-smoke/coders"
  config.base.num_steps = 60
  config.base.warmup_steps = 5
  config.base.eval_every = 0
  config.masks.num_random = 3
  config.masks.exhaustive_limit = 3
  config.masks.deadline.num_masks = 4
  config.max_groups = 20
  config.held_out_images = 64
  config.schemes["spline (LeTCC)"].fit_masks = 2
  for entry in config.schemes.values():
    if "config" in entry:
      entry.config.num_steps = 4
      entry.config.warmup_steps = 1
      entry.config.checkpoint_every = 4
      entry.config.eval_every = 0
      if "eval_num_masks" in entry.config:
        entry.config.eval_num_masks = 2
