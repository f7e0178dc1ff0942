r"""Compares coding schemes under masked stragglers, from a config file.

  python eval/evaluate.py --config configs/eval_digits.py --workdir /tmp/eval_digits
  python eval/evaluate.py --config configs/eval_fmnist.py --workdir /tmp/eval_fmnist

Trains what is missing (base classifier, parity models, learned codes) into
the workdir, evaluates every scheme of ``config.schemes`` at each S of
``config.stragglers`` on the same test groups and masks, prints the Markdown
table and writes ``results.json``, ``results.md``, ``masks.npz`` and the PNG
plots there (``jaxcoded.comparison``, docs/evaluation.md). Fields can be
overridden with ``--config.<field>=<value>``, e.g. ``--config.mesh_devices=8``.
Library logs go to ``<workdir>/jaxcoded.log`` (``--verbose`` shows them).
"""

from __future__ import annotations

import pathlib

import jax
from absl import app, flags
from ml_collections import config_flags

from jaxcoded import comparison, logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Comparison config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar over the sweep.")
_VERBOSE = flags.DEFINE_boolean("verbose", False, "Show library INFO logs on the terminal.")
_DISTRIBUTED = flags.DEFINE_boolean(
    "distributed", False, "Call jax.distributed.initialize() first (one process per host)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # coordinator from the environment (SLURM, TPU, JAX_*)
  comparison.check_config(_CONFIG.value)  # before anything is written
  logs.to_file(_WORKDIR.value, _VERBOSE.value)
  comparison.run_comparison(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
  print((pathlib.Path(_WORKDIR.value) / "results.md").read_text())


if __name__ == "__main__":
  app.run(main)
