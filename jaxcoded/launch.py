"""What the entry points share (train/train.py, eval/evaluate.py): the process layout and logs.

  process = launch.define_process_flags()     # at import, beside the script's own flags
  ...
  def main(argv):
    launch.join(process)                      # --distributed, or one process
    launch.log_to_workdir(workdir, verbose)   # process 0 logs to <workdir>/jaxcoded.log

docs/scaling.md says how to start several processes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from absl import app, flags
from absl import logging as absl_logging

from jaxcoded import distributed, logs

__all__ = ["ProcessFlags", "define_process_flags", "join", "log_to_workdir"]


class ProcessFlags(NamedTuple):
  """The flag holders of the process layout."""

  distributed: flags.FlagHolder
  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder
  local_device_count: flags.FlagHolder


def define_process_flags() -> ProcessFlags:
  """Defines --distributed, --coordinator_address, --num_processes, --process_id, --local_device_count."""
  return ProcessFlags(
      flags.DEFINE_boolean(
          "distributed", False,
          "Join a multi-process job first (jaxcoded.distributed.initialize): one job over the "
          "devices of every process; only process 0 writes metrics, logs and reports."),
      flags.DEFINE_string(
          "coordinator_address", None, "With --distributed: process 0's host:port (else "
          "$JAX_COORDINATOR_ADDRESS, or SLURM / TPU detection)."),
      flags.DEFINE_integer(
          "num_processes", None,
          "With --distributed: processes in the job (else $JAX_NUM_PROCESSES)."),
      flags.DEFINE_integer(
          "process_id", None, "With --distributed: this process's index (else $JAX_PROCESS_ID)."),
      flags.DEFINE_integer(
          "local_device_count", None, "CPU only: simulate this many devices in this process."),
  )


def join(process: ProcessFlags) -> None:
  """Starts the multi-process job (--distributed) or sets up the one process."""
  layout = (process.coordinator_address.value, process.num_processes.value,
            process.process_id.value)
  if process.distributed.value:
    distributed.initialize(*layout, local_device_count=process.local_device_count.value)
  elif any(value is not None for value in layout):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id need "
                         "--distributed.")
  elif process.local_device_count.value:
    jax.config.update("jax_num_cpu_devices", process.local_device_count.value)


def log_to_workdir(workdir: str, verbose: bool) -> None:
  """Process 0 logs to <workdir>/jaxcoded.log; the others show warnings and write nothing."""
  if distributed.is_main():
    logs.to_file(workdir, verbose)
  else:
    absl_logging.set_verbosity(absl_logging.WARNING)
