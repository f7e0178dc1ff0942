r"""Compares coding schemes under masked stragglers, from a config file.

  python eval/evaluate.py --config configs/eval_digits.py --workdir /tmp/eval_digits
  python eval/evaluate.py --config configs/eval_fmnist.py --workdir /tmp/eval_fmnist

Trains what is missing (base classifier, parity models, learned codes) into
the workdir, evaluates every scheme of ``config.schemes`` at each S of
``config.stragglers`` on the same test groups and masks, prints the Markdown
table and writes ``results.json``, ``results.md``, ``masks.npz`` and the PNG
plots there (``jaxcoded.harness``, docs/evaluation.md). Fields can be
overridden with ``--config.<field>=<value>``, e.g. ``--config.mesh_devices=8``.
"""

from __future__ import annotations

import pathlib
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

# Configs import their defaults (``from configs import digits``).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from jaxcoded import harness  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "Comparison config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar over the sweep.")
_DISTRIBUTED = flags.DEFINE_boolean(
    "distributed", False, "Call jax.distributed.initialize() first (one process per host)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # coordinator from the environment (SLURM, TPU, JAX_*)
  harness.run_comparison(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
  print((pathlib.Path(_WORKDIR.value) / "results.md").read_text())


if __name__ == "__main__":
  sys.exit(app.run(main))
