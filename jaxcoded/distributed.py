"""One job over several processes: setup, the global mesh, global arrays, process-0 writes.

A multi-process JAX run (one process per host, or several on one host) is one
job: every process runs the same program, jit-compiled computations span the
devices of every process, and arrays are *global* (``jax.Array`` s whose
shards live on several processes). This module holds what the entry points
and the training loop need for that (docs/scaling.md, "JAX across processes
and devices"):

  :func:`initialize`     ``jax.distributed.initialize`` from flags or the
                         ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
                         ``JAX_PROCESS_ID`` variables (jax 0.10.2 reads only
                         the first itself), or SLURM / TPU auto-detection; on
                         CPU it selects gloo for cross-process collectives.
  :func:`global_mesh`    a 1-D mesh over an equal share of every process's
                         devices (``mesh_for_config`` checks a config's
                         ``mesh_devices`` against it).
  :func:`replicate`,     host data -> global arrays: the same value on every
  :func:`global_batch`   device, or each process's own rows of a batch
                         (``jax.make_array_from_process_local_data``).
  :func:`local`          a replicated global array -> this process's copy, so
                         code outside the training step sees plain arrays.
  :func:`is_main`,       only process 0 writes metrics, logs and reports;
  :func:`barrier`        the others wait for it where they read them.

In a single process every function is the identity or its one-process
equivalent, so callers need no branches.

Example (two processes on one machine, 4 CPU devices each; the second
command with ``--process_id=1``)::

  python train/train.py --config configs/coder_digits.py:smoke_mesh8 \
      --workdir /tmp/run --distributed --coordinator_address=127.0.0.1:12355 \
      --num_processes=2 --process_id=0 --local_device_count=4
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "AXIS",
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "barrier",
    "global_batch",
    "global_mesh",
    "initialize",
    "is_main",
    "is_multiprocess",
    "local",
    "mesh_for_config",
    "process_rows",
    "replicate",
]

PyTree = Any

AXIS = "workers"  # the one mesh axis: the workers' shard_map and the batch split share it
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _int_from(value: int | str | None, name: str) -> int | None:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be an integer, got {value!r}.") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_count: int | None = None,
    initialization_timeout: int = 300,
    heartbeat_timeout_seconds: int = 100,
) -> None:
  """Joins this process to a multi-process job (call before any JAX computation).

  Each argument left None is read from its environment variable
  (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).
  When none is set anywhere, ``jax.distributed.initialize()`` detects the
  cluster itself (a SLURM step, a Cloud TPU pod, Open MPI). On CPU,
  cross-process collectives use gloo (``jax_cpu_collectives_implementation``;
  already the default in jax 0.10.2, set here so that an older default or a
  user's "none" cannot leave them out). A second call is a no-op.

  Args:
    coordinator_address: "host:port" of process 0's coordinator service.
    num_processes: processes in the job.
    process_id: this process's index, 0 .. num_processes - 1.
    local_device_count: CPU only: simulate this many devices in this process
      (``jax_num_cpu_devices``); None leaves the platform's count.
    initialization_timeout: seconds to wait for every process to join.
    heartbeat_timeout_seconds: seconds after which a silent process counts as
      dead and the others abort (so a killed process stops the job).

  Raises:
    ValueError: some but not all of address, count and id are given, or they
      are inconsistent.
    RuntimeError: JAX's backends were initialised before this call.
  """
  if jax.distributed.is_initialized():
    return
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = _int_from(
      num_processes if num_processes is not None else os.environ.get(ENV_NUM_PROCESSES),
      f"num_processes ({ENV_NUM_PROCESSES})",
  )
  process_id = _int_from(
      process_id if process_id is not None else os.environ.get(ENV_PROCESS_ID),
      f"process_id ({ENV_PROCESS_ID})",
  )
  given = {"coordinator address": coordinator_address, "number of processes": num_processes,
           "process id": process_id}
  if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
    missing = [name for name, v in given.items() if v is None]
    raise ValueError(
        f"A multi-process run needs the coordinator address, the number of processes and this "
        f"process's id; missing: {', '.join(missing)}. Pass --coordinator_address, "
        f"--num_processes and --process_id, or set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and "
        f"{ENV_PROCESS_ID} (or leave all three unset on SLURM or a TPU pod)."
    )
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if local_device_count:
    jax.config.update("jax_num_cpu_devices", int(local_device_count))
  jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=initialization_timeout,
      heartbeat_timeout_seconds=heartbeat_timeout_seconds,
  )


def is_multiprocess() -> bool:
  """Whether this job has more than one process."""
  return jax.process_count() > 1


def is_main() -> bool:
  """Whether this is process 0, the one that writes metrics, logs and reports."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (nothing in one process)."""
  if is_multiprocess():
    multihost_utils.sync_global_devices(name)


# ---------------------------------------------------------------------------
# Meshes.


def global_mesh(num_devices: int | None = None, axis_name: str = AXIS) -> Mesh:
  """A 1-D mesh over ``num_devices`` devices, the same share of every process's.

  The devices are taken in ``jax.devices()`` order (process 0's first), the
  first ``num_devices / process_count`` of each process, so that the workers
  of a shard_map (and the rows of a batch) are spread evenly over the
  processes. The axis is of type ``Auto`` (plain arrays may enter
  ``shard_map``), like ``workers.make_worker_mesh``'s; in one process the
  two build the same mesh.

  Args:
    num_devices: devices in the mesh; default all of every process.
    axis_name: the mesh axis.

  Raises:
    ValueError: ``num_devices`` is not a multiple of the process count, or
      more than a process has.
  """
  processes = jax.process_count()
  by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(processes)]
  total = sum(len(devices) for devices in by_process)
  num_devices = total if num_devices is None else int(num_devices)
  per_process, remainder = divmod(num_devices, processes)
  if num_devices < 1 or remainder or per_process > min(len(d) for d in by_process):
    raise ValueError(
        f"A mesh of {num_devices} devices cannot take the same number from each of the "
        f"{processes} processes ({[len(d) for d in by_process]} devices each): use a multiple "
        f"of {processes} up to {total}."
    )
  devices = [device for share in by_process for device in share[:per_process]]
  return Mesh(np.array(devices), (axis_name,), axis_types=(AxisType.Auto,))


def mesh_for_config(mesh_devices: int | None, num_workers: int | None = None) -> Mesh | None:
  """The mesh a config's ``mesh_devices`` asks for, process-aware.

  None for 0 or 1 (``vmap`` on one device of each process), else
  :func:`global_mesh` of that many devices: in a multi-process job the same
  share of every process's devices (``workers.make_worker_mesh`` takes the
  first devices, which are process 0's). In one process the two agree.

  Args:
    mesh_devices: the config's value.
    num_workers: when given, N must be a multiple of the mesh's size.

  Raises:
    ValueError: not an integer >= 0, more devices than visible, a size the
      processes cannot share evenly, or one that does not divide N.
  """
  devices = mesh_devices or 0
  if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 0:
    raise ValueError(f"config.mesh_devices must be an integer >= 0, got {mesh_devices!r}.")
  if devices <= 1:
    return None
  if devices > jax.device_count():
    raise ValueError(
        f"config.mesh_devices = {devices}, but only {jax.device_count()} devices are visible."
    )
  if num_workers is not None and num_workers % devices:
    raise ValueError(
        f"config.mesh_devices = {devices} must divide the N = {num_workers} workers "
        "(each device runs N / devices workers)."
    )
  return global_mesh(int(devices))


# ---------------------------------------------------------------------------
# Global arrays.


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Every array leaf as a global array holding the same value on every device of ``mesh``.

  Each process passes its own copy of the value (the same in every process:
  the caller's responsibility, as for any multi-process JAX program).
  """
  sharding = NamedSharding(mesh, P())

  def put(leaf):
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
      return leaf
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.device_put(leaf, sharding)  # keys: through JAX (numpy has no key dtype)
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree.map(put, tree)


def process_rows(batch_size: int, mesh: Mesh) -> slice:
  """The rows of a batch of ``batch_size`` that this process supplies under :func:`global_batch`.

  The batch axis is split over the mesh axis in device order; this process's
  devices in the mesh are contiguous (``global_mesh``), so its rows are one
  slice. The whole batch when the batch does not split evenly (then every
  process supplies all of it and it is replicated).
  """
  devices = list(mesh.devices.flat)
  if batch_size % len(devices):
    return slice(0, batch_size)
  per_device = batch_size // len(devices)
  mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
  return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)


def global_batch(local_batch: PyTree, mesh: Mesh, batch_size: int) -> PyTree:
  """This process's rows of a batch -> global arrays split over the mesh along axis 0.

  Args:
    local_batch: a pytree of host arrays holding rows ``process_rows(batch_size,
      mesh)`` of the global batch (the whole batch in one process).
    mesh: the 1-D mesh.
    batch_size: the global batch size (axis 0 of the global arrays).

  Returns:
    The global batch: split over the mesh axis along axis 0 when
    ``batch_size`` divides evenly over its devices, else replicated.
  """
  spec = P(mesh.axis_names[0]) if batch_size % mesh.devices.size == 0 else P()
  sharding = NamedSharding(mesh, spec)

  def put(leaf):
    leaf = np.asarray(leaf)
    return jax.make_array_from_process_local_data(sharding, leaf, (batch_size, *leaf.shape[1:]))

  return jax.tree.map(put, local_batch)


def local(tree: PyTree) -> PyTree:
  """Replicated global arrays -> this process's copy (on its first device of the array).

  A replicated array (on one process or several) becomes the copy on one
  device; arrays sharded over this process's devices alone are returned as
  they are; a sharded global array is first gathered (``process_allgather``), so any
  array can be brought to every process (what ``np.asarray`` refuses for an
  array that "spans non-addressable devices").
  """

  def one(leaf):
    if not isinstance(leaf, jax.Array) or len(leaf.sharding.device_set) == 1:
      return leaf
    if leaf.is_fully_replicated:
      return leaf.addressable_data(0)
    if leaf.is_fully_addressable:  # sharded over this process's devices: usable as it is
      return leaf
    return jax.device_put(multihost_utils.process_allgather(leaf, tiled=True),
                          jax.local_devices()[0])

  return jax.tree.map(one, tree)
