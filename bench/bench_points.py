r"""Which worker points for Berrut coding: second, first or fourth Chebyshev kind.

  python bench/bench_points.py --base_workdir /tmp/fmnist
  python bench/bench_points.py --base_workdir /tmp/fmnist --group_sizes=8 --num_masks=8

Data points are first-kind Chebyshev points (K); the worker points (N = K + S)
are second-kind (BACC's choice), first-kind, or fourth-kind
(``points.chebyshev_fourth_kind``). Prints a Markdown table of top-1 accuracy
(mean ± std over random masks with exactly S stragglers, on the whole test
set) around the base classifier in ``--base_workdir``. A family that puts a
worker on a data point is skipped (shown as "meets a data point").

This is the measurement behind ``points.default_points``'s N = K + 1 rule:
there, second-kind worker points lie halfway (in angle) between the data
points, the worst place for an interpolant.
"""

from __future__ import annotations

import environment  # bench/environment.py (bench/ is on sys.path when run as a script)
import jax
import numpy as np
from absl import app, flags

from jaxcoded import comparison, data, deployment, interp, schemes, stragglers, training
from jaxcoded.schemes import points

_BASE = flags.DEFINE_string("base_workdir", None, "Workdir of a trained base classifier.")
_SIZES = flags.DEFINE_list("group_sizes", ["8", "12"], "K values.")
_STRAGGLERS = flags.DEFINE_list("stragglers", ["1", "2", "3"], "S values.")
_MASKS = flags.DEFINE_integer("num_masks", 16, "Random straggler masks per (K, S).")
flags.mark_flag_as_required("base_workdir")

FAMILIES = {
    "second kind": lambda n: interp.chebyshev_points(n, kind=2),
    "first kind": lambda n: interp.chebyshev_points(n, kind=1),
    "fourth kind": points.chebyshev_fourth_kind,
}


def main(argv):
  del argv
  print(environment.markdown(), flush=True)
  model, config = training.load_model(_BASE.value)
  test = data.load(config.dataset, "test", seed=None)
  classify, params = training.classifier.as_worker_fn(model)
  task = deployment.WorkerTask(classify, params)
  rows = []
  for k in (int(v) for v in _SIZES.value):
    data_points = interp.chebyshev_points(k, kind=1)
    for s in (int(v) for v in _STRAGGLERS.value):
      n = k + s
      masks = stragglers.random_masks(jax.random.key(1000 * k + s), _MASKS.value, n, s)
      default = np.asarray(points.default_points(k, n)[1])
      row = [k, s, n]
      for family in FAMILIES.values():
        worker_points = family(n)
        if np.intersect1d(np.asarray(data_points), np.asarray(worker_points)).size:
          row.append("meets a data point")
          continue
        code = schemes.BerrutCode.create(
            k, s, data_points=data_points, worker_points=worker_points
        )
        result = comparison.evaluate_dataset(
            deployment.Deployment.of("Berrut", code, task), task, test.images, test.labels, masks)
        chosen = " (default)" if np.allclose(np.asarray(worker_points), default) else ""
        row.append(f"{result.accuracy.mean():.3f} ± {result.accuracy.std():.3f}{chosen}")
      rows.append(row)
      print(f"K = {k}, S = {s} done", flush=True)
  print()
  print(comparison.markdown_table(["K", "S", "N", *FAMILIES], rows))


if __name__ == "__main__":
  app.run(main)
