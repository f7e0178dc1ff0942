r"""The main job on the embedded default: train, then compare every scheme under stragglers.

  python eval/quickstart.py --workdir /tmp/jaxcoded-quickstart

On scikit-learn's 8x8 digits (shipped with the package, nothing to download):

1. trains the base classifier f (a small CNN), ParM's parity model and a
   learned polynomial code (R = 3) into ``WORKDIR`` (a finished run there is
   reused, an interrupted one resumed);
2. serves the test set in groups of K = 4 with every scheme (uncoded,
   replication, LCC, Berrut, the spline code, Byzantine Berrut, ParM, the
   learned code; coded schemes at N = K + S) and
   evaluates S = 0..3 stragglers over shared masks (all of them when few,
   else a random sample; plus latency-driven deadline masks);
3. prints the Markdown table and writes ``results.json``, ``results.md`` and
   the plots (``accuracy_vs_stragglers.png``, ...) to ``WORKDIR``; library logs
   go to ``WORKDIR/jaxcoded.log`` (``--verbose`` shows them).

It is ``eval/evaluate.py --config configs/eval_digits.py`` with a default
workdir; ``--config`` takes any comparison config (``configs/eval_*.py``).
"""

from __future__ import annotations

import pathlib

from absl import app, flags
from ml_collections import config_flags

import configs
from jaxcoded import comparison, logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(configs.__file__).parent / "eval_digits.py"), "Comparison config."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxcoded-quickstart", "Output directory.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar over the sweep.")
_VERBOSE = flags.DEFINE_boolean("verbose", False, "Show library INFO logs on the terminal.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  workdir = pathlib.Path(_WORKDIR.value)
  comparison.check_config(_CONFIG.value)  # before anything is written
  log_file = logs.to_file(workdir, _VERBOSE.value)
  results = comparison.run_comparison(_CONFIG.value, workdir, progress=_PROGRESS.value)
  print()
  print((workdir / "results.md").read_text())
  print("plots:", ", ".join(str(workdir / name) for name in results["plots"]))
  print("library logs:", log_file)


if __name__ == "__main__":
  app.run(main)
