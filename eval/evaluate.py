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

With ``--distributed`` several processes run one comparison (process count and id from
``--num_processes`` / ``--process_id`` / ``--coordinator_address``, or the ``JAX_*``
variables, or SLURM / a TPU pod); process 0 writes the results (docs/scaling.md).
"""

from __future__ import annotations

import pathlib

from absl import app, flags
from ml_collections import config_flags

from jaxcoded import comparison, distributed, launch

_CONFIG = config_flags.DEFINE_config_file("config", None, "Comparison config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar over the sweep.")
_VERBOSE = flags.DEFINE_boolean("verbose", False, "Show library INFO logs on the terminal.")
_PROCESS = launch.define_process_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  launch.join(_PROCESS)
  comparison.check_config(_CONFIG.value)  # before anything is written
  launch.log_to_workdir(_WORKDIR.value, _VERBOSE.value)
  main_process = distributed.is_main()
  comparison.run_comparison(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value and main_process,
                            log=print if main_process else lambda line: None)
  if main_process:
    print((pathlib.Path(_WORKDIR.value) / "results.md").read_text())


if __name__ == "__main__":
  app.run(main)
