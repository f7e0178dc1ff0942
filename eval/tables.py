r"""Prints the README's compact table of a comparison's results file.

  python eval/tables.py docs/results/fmnist_equal_k8.json [--stragglers=1,2,3]

The README's result tables are this script's output for the committed
results files under docs/results/, so each of their numbers traces to a
file and to the ``eval/evaluate.py`` run that wrote it (named in the
file's ``config``).
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags

from jaxcoded.comparison import report

_STRAGGLERS = flags.DEFINE_list("stragglers", [], "The S to show (default: every S > 0).")


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("Usage: python eval/tables.py RESULTS_JSON [--stragglers=1,2,3]")
  path = pathlib.Path(argv[1])
  if not path.is_file():
    raise app.UsageError(f"{path}: no such results file (eval/evaluate.py writes results.json).")
  results = json.loads(path.read_text())
  stragglers = tuple(int(s) for s in _STRAGGLERS.value) or None
  base = results["base"]
  print(f"Base classifier {base['model']}: test accuracy {base['accuracy']:.3f} "
        f"({results['num_groups']} groups of K = {results['num_queries']}).\n")
  print(report.format_compact(results, stragglers), end="")


if __name__ == "__main__":
  app.run(main)
