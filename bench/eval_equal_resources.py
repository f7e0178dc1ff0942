r"""A trained learned polynomial code at equal resources (DESIGN.md section 6a).

The code of a coder workdir (trained once, with its own R) is redeployed at
N = K + S workers for each S through ``code.with_worker_points`` with the
default worker points for that N (second-kind Chebyshev, as
``learned._default_points`` picks them), and evaluated on the Fashion-MNIST
test set over random masks of S stragglers. Per S it reports N, R, the
accuracy (mean +- std and min over masks), the worker's and the master's
(design A) FLOPs over the base classifier's, and the compute per query
(N x worker FLOPs + master FLOPs) / (K x f's FLOPs).

Run from the repository root:

  PYTHONPATH=. python bench/eval_equal_resources.py --workdir /work/runs/k8_base \
      --stragglers 1,2,3 --num_masks 20

Writes ``<workdir>/eval_equal_resources.json`` and prints a Markdown table.
"""

from __future__ import annotations

import json
import os

import environment  # bench/environment.py (bench/ is on sys.path when run as a script)
import jax
from absl import app, flags

from jaxcoded import data, load, models, training
from jaxcoded.schemes import points

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished coder workdir.")
_STRAGGLERS = flags.DEFINE_list("stragglers", ["1", "2", "3"], "The S to deploy at N = K + S.")
_MASKS = flags.DEFINE_integer("num_masks", 20, "Random straggler masks per S.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the masks.")
_OUT = flags.DEFINE_string("out", "", "JSON output ('' : <workdir>/eval_equal_resources.json).")
flags.mark_flags_as_required(["workdir"])


def evaluate(workdir: str, stragglers, num_masks: int, seed: int = 0) -> dict:
  """Accuracy and load of the workdir's code at N = K + S for each S."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  base_model = config["base"]["model"]
  code = training.coder.load(workdir)[0]
  test_ds = data.load("fashion_mnist", "test", seed=None)
  base_flops = models.flops_per_example(base_model, test_ds.input_shape,
                                        model_kwargs=config["base"].get("model_kwargs"))
  k, r = code.num_queries, code.recovery_threshold
  rows = []
  for s in stragglers:
    n = k + s
    if n < r:
      rows.append(dict(S=s, N=n, R=r, skipped=f"N = {n} < R = {r}"))
      continue
    _, worker_points = points.default_points(k, n, avoid_midpoints=False)
    deployed = code.with_worker_points(worker_points)
    accuracies = training.coder.evaluate_code(
        deployed, test_ds, s, num_masks=num_masks, key=jax.random.fold_in(jax.random.key(seed), s)
    )
    loads = load.code_load(deployed, "A", base_flops)
    compute = (n * loads.worker.flops + loads.master.flops) / (k * base_flops)
    rows.append(dict(
        S=s, N=n, R=r, mean=float(accuracies.mean()), std=float(accuracies.std()),
        min=float(accuracies.min()), max=float(accuracies.max()), num_masks=num_masks,
        worker_over_f=loads.worker_fraction, master_over_f=loads.master_fraction,
        compute_per_query=compute,
    ))
  return dict(workdir=os.path.abspath(workdir), K=k, R=r, base_flops=base_flops, rows=rows)


def format_table(result: dict) -> str:
  lines = [
      "| S | N | R | accuracy (mean +- std over masks) | min | worker / f | master / f "
      "| compute / query |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for row in result["rows"]:
    if "skipped" in row:
      lines.append(f"| {row['S']} | {row['N']} | {row['R']} | {row['skipped']} | | | | |")
      continue
    lines.append(
        f"| {row['S']} | {row['N']} | {row['R']} | {row['mean']:.4f} +- {row['std']:.4f} | "
        f"{row['min']:.4f} | {row['worker_over_f']:.3f} | {100 * row['master_over_f']:.1f}% | "
        f"{row['compute_per_query']:.3f} |"
    )
  return "\n".join(lines)


def main(argv):
  del argv
  print(environment.markdown(), flush=True)
  result = evaluate(_WORKDIR.value, [int(s) for s in _STRAGGLERS.value], _MASKS.value, _SEED.value)
  out = _OUT.value or os.path.join(_WORKDIR.value, "eval_equal_resources.json")
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(format_table(result))


if __name__ == "__main__":
  app.run(main)
