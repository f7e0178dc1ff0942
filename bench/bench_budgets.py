r"""Budgets of the equal-resource comparison with every loop iteration counted: before and after.

For every scheme of ``configs/eval_fmnist_equal.py`` (K = 8 and 12) at each S,
built as the harness deploys it but with untrained networks of the trained
shapes (FLOPs do not depend on weights; ``bench_overhead.deployments``),
prints the master's FLOPs per query and one worker's FLOPs per coded input
as fractions of f's (``comparison.metrics.node_load``, the figures the
harness's budget check reads), counted two ways:

* reported: XLA's cost analysis alone (``load.xla_flops(count_loops=False)``),
  which counts a while loop's body once: the count before issue #23;
* full: every loop by its trip count (``load.xla_flops``, the count now).

A deployment is over budget when the master exceeds 10% of f per query or a
worker 1.1x f. For the learned polynomial code it also prints the master
with the (K, N) matrix decode of ``jaxcoded.schemes.learned_decode``.

  python bench/bench_budgets.py                 # K = 8 and 12, S = 1, 2, 3 (a few minutes)
  python bench/bench_budgets.py --variants=k12 --schemes="learned polynomial"

No timing: the counts do not depend on the machine.
"""

from __future__ import annotations

import bench_overhead  # bench/bench_overhead.py
import environment  # bench/environment.py (bench/ is on sys.path when run as a script)
from absl import app, flags

from configs import eval_fmnist_equal
from jaxcoded import comparison, load, models
from jaxcoded.schemes import learned, learned_decode

_VARIANTS = flags.DEFINE_list("variants", ["k8", "k12"], "configs/eval_fmnist_equal.py variants.")
# --schemes and --stragglers are bench_overhead's flags (default: every coded scheme; 1, 2, 3).
_SCHEMES = bench_overhead._SCHEMES  # pylint: disable=protected-access
_STRAGGLERS = bench_overhead._STRAGGLERS  # pylint: disable=protected-access
_UNCODED = ("uncoded + fallback", "replication")


def node_loads(served, shape, base_flops, count_loops: bool):
  """``metrics.node_load`` with loops counted (the harness's figure) or not (the old one)."""
  full = load.xla_flops
  load.xla_flops = lambda *args, **kw: full(*args, count_loops=count_loops, **kw)
  try:
    return comparison.metrics.node_load(served, shape, base_flops)
  finally:
    load.xla_flops = full


def matrix_decode_load(served, shape, base_flops):
  """node_load of a learned polynomial code decoding through learned_decode's matrix."""
  fit = learned._masked_fit_decode
  learned._masked_fit_decode = learned_decode.masked_matrix_decode
  try:
    return comparison.metrics.node_load(served, shape, base_flops)
  finally:
    learned._masked_fit_decode = fit


def main(argv):
  del argv
  print(environment.markdown(), flush=True)
  print("| K | scheme | S | N | master reported | master full | worker reported | worker full "
        "| budgets (master <= 10%, worker <= 1.1x) | master, (K, N) matrix decode |")
  print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
  for variant in _VARIANTS.value:
    config = eval_fmnist_equal.get_config(variant)
    names = _SCHEMES.value or [n for n in comparison.plan.scheme_names(config)
                               if n not in _UNCODED]
    base_flops = models.flops_per_example(config.base.model,
                                          model_kwargs=config.base.get("model_kwargs"))
    shape = models.INPUT_SHAPES[config.base.model]
    straggler_counts = [int(s) for s in _STRAGGLERS.value]
    for name, s, served in bench_overhead.deployments(config, names, straggler_counts):
      entry = config.schemes[name]
      before = node_loads(served, shape, base_flops, count_loops=False)
      after = node_loads(served, shape, base_flops, count_loops=True)
      master_budget, worker_budget = entry.get("master_budget"), entry.get("worker_budget")
      over = [what for what, value, budget in (
          ("master", after["master_fraction"], master_budget),
          ("worker", after["worker_fraction"], worker_budget),
      ) if budget is not None and value > budget]
      verdict = f"**over ({', '.join(over)})**" if over else "inside"
      proposed = ""
      if isinstance(served.scheme, learned.PolynomialCode):
        proposed = f"{100 * matrix_decode_load(served, shape, base_flops)['master_fraction']:.2f}%"
      print(f"| {config.num_queries} | {name} | {s} | {served.num_workers} | "
            f"{100 * before['master_fraction']:.2f}% | {100 * after['master_fraction']:.2f}% | "
            f"{before['worker_fraction']:.3f} | {after['worker_fraction']:.3f} | {verdict} | "
            f"{proposed} |", flush=True)


if __name__ == "__main__":
  app.run(main)
