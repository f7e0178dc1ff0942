r"""Trains from a config file: a base classifier, a ParM parity model or a learned code.

  python train/train.py --config configs/digits.py --workdir /tmp/digits
  python train/train.py --config configs/digits.py:smoke --workdir /tmp/smoke \
      --config.num_steps=8

``config.task`` picks what is trained: "classifier" (the default), "parity"
(``configs/parm_*.py``, docs/parm.md) or "coder" (``configs/coder_*.py``,
docs/learned_codes.md). Fields of the config can be
overridden with ``--config.<field>=<value>``. A run in a workdir that already holds
checkpoints resumes from the latest one.
See docs/training.md.

Several processes train as one job with ``--distributed`` (docs/scaling.md); e.g. two
processes on one machine, 4 CPU devices each (the second with ``--process_id=1``):
  python train/train.py --config configs/coder_digits.py --config.num_stragglers=4 \
      --config.mesh_devices=8 --workdir /tmp/coder_2p --distributed \
      --coordinator_address=127.0.0.1:12355 --num_processes=2 --process_id=0 \
      --local_device_count=4
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from jaxcoded import distributed, launch, training

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_VERBOSE = flags.DEFINE_boolean("verbose", False, "Show library INFO logs on the terminal.")
_PROCESS = launch.define_process_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  launch.join(_PROCESS)
  config = _CONFIG.value
  task = config.get("task", "classifier")
  if task not in training.TASKS:
    raise app.UsageError(f"config.task must be 'classifier', 'parity' or 'coder', got {task!r}.")
  launch.log_to_workdir(_WORKDIR.value, _VERBOSE.value)
  result = training.train(config, _WORKDIR.value)
  if not distributed.is_main():
    return
  if result.report:  # a learned code's evaluation: the load table and accuracies by S
    report = dict(result.report)
    print(report.pop("load_table", ""))
    print(json.dumps(report, indent=2))
  elif result.completed:
    print(f"step {result.step}: " + ", ".join(
        f"{k}={v:.4f}" for k, v in result.final_metrics.items() if k.startswith("test_")
    ))


if __name__ == "__main__":
  app.run(main)
