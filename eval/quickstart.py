r"""The main job on the embedded default: train, then compare every scheme under stragglers.

  python eval/quickstart.py --workdir /tmp/jaxcoded-quickstart

On scikit-learn's 8x8 digits (shipped with the package, nothing to download):

1. trains the base classifier f (an MLP), ParM's parity model and two
   learned polynomial codes (R = 3 and R = 5) into ``WORKDIR`` (a finished
   run there is reused, an interrupted one resumed);
2. serves the test set in groups of K = 4 with every scheme (uncoded,
   replication, LCC, Berrut, Byzantine Berrut, ParM, the learned codes) and
   evaluates S = 0..3 stragglers over shared masks (all of them when few,
   else a random sample; plus latency-driven deadline masks);
3. prints the Markdown table and writes ``results.json``, ``results.md`` and
   the plots (``accuracy_vs_stragglers.png``, ...) to ``WORKDIR``.

It is ``eval/evaluate.py --config configs/eval_digits.py`` with a default
workdir; ``--config`` takes any comparison config (``configs/eval_*.py``).
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))  # configs/ import their defaults

from jaxcoded import harness  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(_ROOT / "configs" / "eval_digits.py"), "Comparison config."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxcoded-quickstart", "Output directory.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar over the sweep.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  workdir = pathlib.Path(_WORKDIR.value)
  results = harness.run_comparison(_CONFIG.value, workdir, progress=_PROGRESS.value)
  print()
  print((workdir / "results.md").read_text())
  print("plots:", ", ".join(str(workdir / name) for name in results["plots"]))


if __name__ == "__main__":
  sys.exit(app.run(main))
