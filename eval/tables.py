r"""Prints the README's compact table of a comparison's results file.

  python eval/tables.py docs/results/fmnist_equal_k8.json [--stragglers=1,2,3]
  python eval/tables.py --frontier docs/results/fmnist_frontier_k8.json [--stragglers=0,1,2,3]

``--frontier`` prints instead the Pareto front of (compute per query,
accuracy) at each S (``jaxcoded.comparison.frontier``: the points no other
scheme at that S beats on both), the README's frontier table.

The README's result tables are this script's output for the committed
results files under docs/results/, so each of their numbers traces to a
file and to the ``eval/evaluate.py`` run that wrote it (named in the
file's ``config``).
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags

from jaxcoded.comparison import frontier, report

_STRAGGLERS = flags.DEFINE_list(
    "stragglers", [], "The S to show (default: every S > 0; with --frontier every S).")
_FRONTIER = flags.DEFINE_boolean(
    "frontier", False, "Print the Pareto front of (compute per query, accuracy) at each S.")


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError(
        "Usage: python eval/tables.py [--frontier] RESULTS_JSON [--stragglers=1,2,3]")
  path = pathlib.Path(argv[1])
  if not path.is_file():
    raise app.UsageError(f"{path}: no such results file (eval/evaluate.py writes results.json).")
  results = json.loads(path.read_text())
  stragglers = tuple(int(s) for s in _STRAGGLERS.value) or None
  base = results["base"]
  print(f"Base classifier {base['model']}: test accuracy {base['accuracy']:.3f} "
        f"({results['num_groups']} groups of K = {results['num_queries']}).\n")
  if _FRONTIER.value:
    print("Pareto front of (compute per query, accuracy) at each S: no other scheme at that S "
          "has\nlower or equal compute and higher or equal accuracy, one of them strictly.\n")
    print(frontier.format_front_table(results, stragglers), end="")
  else:
    print(report.format_compact(results, stragglers), end="")


if __name__ == "__main__":
  app.run(main)
