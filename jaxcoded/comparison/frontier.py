"""The accuracy-against-cost Pareto front of a comparison, at each number of stragglers S.

A scheme deployed at some S is a point (compute per query, accuracy): the
compute is ``compute_per_query`` = (N x worker FLOPs + master FLOPs) / (K x f's
FLOPs), the cost of one query in evaluations of the base classifier f, and the
accuracy is ``accuracy_mean`` over the shared masks. Lower compute and higher
accuracy are better, so a point p is *dominated* when another point q has

  compute(q) <= compute(p) and accuracy(q) >= accuracy(p), one of them strictly.

The front at S is the set of points at S that nothing at S dominates. Ties are
explicit: two points with equal compute and equal accuracy do not dominate
each other, so both are on the front or neither is; a point with the same
compute as another but lower accuracy is dominated, and so is a point with the
same accuracy but higher compute. Comparisons are exact (no tolerance): the
inputs are the results file's floats.

  front = frontier.pareto_front(costs, accuracies)        # indices, by rising compute
  fronts = frontier.fronts_by_stragglers(results["results"])  # {S: [record, ...]}
  print(frontier.format_front_table(results))             # the README's table

``eval/tables.py --frontier FILE`` prints the table of a results file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxcoded.comparison import report

__all__ = [
    "dominates", "format_front_table", "fronts_by_stragglers", "on_front", "pareto_front",
]

COST_KEY = "compute_per_query"
ACCURACY_KEY = "accuracy_mean"


def dominates(p: tuple[float, float], q: tuple[float, float]) -> bool:
  """Whether point p = (cost, accuracy) dominates q: no worse in both, better in one.

  Equal points do not dominate each other.
  """
  return p[0] <= q[0] and p[1] >= q[1] and (p[0] < q[0] or p[1] > q[1])


def _check_points(costs: Sequence[float], accuracies: Sequence[float]) -> list[tuple[float, float]]:
  costs, accuracies = list(costs), list(accuracies)
  if len(costs) != len(accuracies):
    raise ValueError(
        f"pareto_front: {len(costs)} costs but {len(accuracies)} accuracies; give one of each "
        "per point."
    )
  points = []
  for i, (c, a) in enumerate(zip(costs, accuracies)):
    c, a = float(c), float(a)
    if not (math.isfinite(c) and math.isfinite(a)):
      raise ValueError(f"pareto_front: point {i} is not finite: cost {c!r}, accuracy {a!r}.")
    points.append((c, a))
  return points


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
  """Indices of the non-dominated points, ordered by rising cost (then input order).

  O(n log n): sorted by cost, a point is on the front when its accuracy is the
  highest among the points of its own cost and strictly higher than every
  point of strictly lower cost. Equal points are kept together (see the module
  docstring).

  Args:
    costs: (n,) finite compute per query (lower is better).
    accuracies: (n,) finite accuracies (higher is better).

  Returns:
    The indices into the inputs of the front's points; [] for no points.

  Raises:
    ValueError: inputs of different lengths or a non-finite value.

  Example:
    >>> pareto_front([1.0, 2.0, 1.5, 1.0], [0.80, 0.90, 0.80, 0.70])
    [0, 1]
  """
  points = _check_points(costs, accuracies)
  order = sorted(range(len(points)), key=lambda i: (points[i][0], i))
  front = []
  best_below = -math.inf  # highest accuracy among the points of strictly lower cost
  start = 0
  while start < len(order):
    cost = points[order[start]][0]
    stop = start
    while stop < len(order) and points[order[stop]][0] == cost:
      stop += 1
    group = order[start:stop]  # every point of this cost, in input order
    best_here = max(points[i][1] for i in group)
    if best_here > best_below:
      front += [i for i in group if points[i][1] == best_here]
    best_below = max(best_below, best_here)
    start = stop
  return front


def fronts_by_stragglers(
    records: Iterable[Mapping[str, Any]],
    *,
    cost_key: str = COST_KEY,
    accuracy_key: str = ACCURACY_KEY,
) -> dict[int, list[Mapping[str, Any]]]:
  """The Pareto front of a comparison's records at each S.

  Args:
    records: the results file's ``results`` (each with "S", ``cost_key``
      and ``accuracy_key``).
    cost_key, accuracy_key: the record fields compared.

  Returns:
    {S: the records on the front at S, by rising cost}, S ascending.
  """
  by_s: dict[int, list[Mapping[str, Any]]] = {}
  for r in records:
    by_s.setdefault(int(r["S"]), []).append(r)
  fronts = {}
  for s in sorted(by_s):
    rs = by_s[s]
    front = pareto_front([r[cost_key] for r in rs], [r[accuracy_key] for r in rs])
    fronts[s] = [rs[i] for i in front]
  return fronts


def on_front(records: Sequence[Mapping[str, Any]], **keys) -> list[bool]:
  """For each record, whether it is on the front of its S (same order as ``records``)."""
  fronts = fronts_by_stragglers(records, **keys)
  ids = {id(r) for front in fronts.values() for r in front}
  return [id(r) in ids for r in records]



def format_front_table(
    results: Mapping[str, Any], stragglers: Sequence[int] | None = None
) -> str:
  """The Markdown table of the front at each S of a results file.

  One row per front point, grouped by S (ascending) and by rising compute per
  query; "dominates" counts the other points at that S the row dominates.

  Args:
    results: a comparison's results (``results["results"]``: the records).
    stragglers: the S to show (default: every S in the results).

  Returns:
    The table, ending with a newline.
  """
  records = results["results"]
  fronts = fronts_by_stragglers(records)
  rows = []
  for s, front in fronts.items():
    if stragglers is not None and s not in stragglers:
      continue
    at_s = [r for r in records if int(r["S"]) == s]
    for r in front:
      point = (r[COST_KEY], r[ACCURACY_KEY])
      beaten = sum(dominates(point, (q[COST_KEY], q[ACCURACY_KEY])) for q in at_s)
      name = r["scheme"] + ("" if r.get("guaranteed", True) else " (beyond S_max)")
      rows.append([
          s, name, r["N"], r["R"], f"**{r[COST_KEY]:.2f}**",
          f"{r[ACCURACY_KEY]:.3f} ± {r.get('accuracy_std', 0.0):.3f}",
          f"{100 * r['master_fraction']:.1f}%", f"{r['worker_fraction']:.2f}",
          f"{beaten} of {len(at_s) - 1}",
      ])
  return report.markdown_table(
      ["S", "scheme", "N", "R", "compute / query", "accuracy (mean ± std)", "master / f",
       "worker / f", "dominates"], rows) + "\n"
