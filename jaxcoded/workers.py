"""Running one worker's computation over the worker axis (docs/design.md section 5).

A worker's computation is written for ONE coded input, ``worker_fn(params, x)``,
and mapped over a leading worker axis of length N:

  on one device     ``jax.vmap`` over the N workers;
  on a device mesh  ``jax.shard_map`` over the mesh axis ``"workers"``, each
                    device ``vmap``-ing over its N / devices local workers.

The straggler mask is a boolean array of shape (N,). Rows of stragglers are
replaced by zeros with ``jnp.where`` (never by multiplying with the mask: a
straggler's NaN or inf times zero is still NaN), so a straggler's output can
never reach a decoded result.

Gradients need more than that (the double-``where`` pattern): ``where`` sends
a zero cotangent to a straggler's row, but reverse mode multiplies it by
``worker_fn``'s derivative at that row's input, and 0 * inf or 0 * NaN is
NaN. So by default each straggler's *input* is first replaced by a real
coded input, the first available worker's: ``worker_fn`` is then evaluated
there only at a point where it is evaluated anyway, and a straggler's row
contributes exactly zero to values and gradients, whether its own input was
NaN-poisoned or ``worker_fn`` is singular where the straggler's input is
(``x / ||x||`` and ``log ||x||`` at 0, normalisation layers on a constant
input: zeroing the inputs, as this module did before, gave NaN gradients
there). If every worker straggles, there is no real input to take and the
rows are zeroed instead (nothing is decoded from such a group).

Gradients of a loss computed outside ``run_workers`` are the same on both
paths: the replicated parameters enter ``shard_map`` with ``in_specs=P()``, and
the transpose of that replication sums the per-device cotangents, which is
exactly the sum over workers that ``vmap`` gives. (``jax.lax.pcast`` is only
needed when ``jax.grad`` is taken *inside* the mapped function.)

Example:
  >>> import jax.numpy as jnp
  >>> from jaxcoded import workers
  >>> x = jnp.arange(8.0).reshape(4, 2)
  >>> mask = jnp.array([True, False, True, True])
  >>> workers.run_workers(lambda w, x: w * x.sum(), 2.0, x, mask)
  Array([ 2.,  0., 18., 26.], dtype=float32)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxcoded import validation

__all__ = [
    "WorkerFn",
    "WorkerTask",
    "erase_nonfinite",
    "make_worker_mesh",
    "mask_outputs",
    "run_workers",
]

PyTree = Any
WorkerFn = Callable[..., PyTree]


class WorkerTask(NamedTuple):
  """What one kind of worker computes: ``fn(params, x)`` on one coded input x.

  ``reads_queries`` marks a design-B worker (docs/learned_codes.md): it also
  reads the group's K queries from shared storage and is called as
  ``fn(params, x, queries)``, x being its evaluation point b_n.
  """

  fn: WorkerFn
  params: Any
  reads_queries: bool = False

  def run(self, x: PyTree, queries: PyTree | None = None) -> PyTree:
    """This task's output for one worker input x (and the group, in design B)."""
    if self.reads_queries:
      return self.fn(self.params, x, queries)
    return self.fn(self.params, x)


def make_worker_mesh(
    num_devices: int | None = None,
    axis_name: str = "workers",
    *,
    devices: list[jax.Device] | None = None,
) -> Mesh:
  """A 1-D mesh over the first ``num_devices`` devices, ready for ``run_workers``.

  The axis is of type ``Auto``, so plain (unsharded) arrays can be passed to
  ``run_workers`` directly. (``jax.make_mesh`` builds ``Explicit`` axes;
  ``run_workers`` accepts those too, by placing its inputs on the mesh first.)

  Args:
    num_devices: how many devices to use; default all of ``devices``.
    axis_name: name of the worker axis.
    devices: the devices to draw from; default ``jax.devices()``.

  Returns:
    A ``jax.sharding.Mesh`` of shape (num_devices,) with axis ``axis_name``.
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_devices is None:
    num_devices = len(devices)
  if not isinstance(num_devices, (int, np.integer)) or not 1 <= num_devices <= len(devices):
    raise ValueError(
        f"make_worker_mesh: num_devices must be an integer in [1, {len(devices)}] "
        f"(the devices available), got {num_devices!r}."
    )
  return Mesh(np.array(devices[:num_devices]), (axis_name,), axis_types=(AxisType.Auto,))


def mask_outputs(outputs: PyTree, mask: ArrayLike) -> PyTree:
  """Replaces the rows of stragglers by zeros, leaf by leaf.

  Uses ``jnp.where``, so NaN or inf in a straggler's row does not survive
  (``0 * nan`` would), and the gradient with respect to those rows is zero.

  Args:
    outputs: an array of shape (N, ...), or a pytree of such arrays.
    mask: boolean array of shape (N,), True where the worker returned.

  Returns:
    The same structure as ``outputs``, straggler rows set to zero.
  """
  mask = validation.as_mask(mask, None, "mask_outputs")

  def zero_rows(leaf):
    leaf = jnp.asarray(leaf)
    if leaf.ndim < 1 or leaf.shape[0] != mask.shape[0]:
      raise ValueError(
          f"mask_outputs: each leaf needs a leading axis of length {mask.shape[0]} "
          f"(one row per worker), got shape {leaf.shape}."
      )
    row_mask = mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))
    return jnp.where(row_mask, leaf, jnp.zeros((), leaf.dtype))

  return jax.tree.map(zero_rows, outputs)


def erase_nonfinite(outputs: PyTree, mask: ArrayLike) -> tuple[PyTree, jax.Array]:
  """Treats a worker whose output holds NaN or inf as a straggler (an erasure).

  A worker that returns garbage it can detect itself (NaN, inf) is as good as
  absent; decoding with it would poison every answer of its group.

  Args:
    outputs: (N, ...) worker outputs, or a pytree of such arrays.
    mask: (N,) bool, True where the worker returned.

  Returns:
    (outputs with the erased and straggling rows zeroed, (N,) mask & finite).
  """
  mask = validation.as_mask(mask, None, "erase_nonfinite")
  finite = mask
  for leaf in jax.tree.leaves(outputs):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
      finite = finite & jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
  return mask_outputs(outputs, finite), finite


def _num_workers(coded_inputs: PyTree) -> int:
  leaves = jax.tree.leaves(coded_inputs)
  if not leaves:
    raise ValueError("run_workers: coded_inputs has no arrays.")
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  if None in sizes or len(sizes) != 1:
    shapes = [np.shape(leaf) for leaf in leaves]
    raise ValueError(
        "run_workers: every coded input needs the same leading (worker) axis length N, "
        f"got shapes {shapes}."
    )
  return sizes.pop()


def _rows(mask: jax.Array, leaf: jax.Array) -> jax.Array:
  """The (N,) mask reshaped to broadcast against an (N, ...) leaf."""
  return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def _first_row(values: PyTree, mask: jax.Array) -> PyTree:
  """Row ``values[n]`` of the first n with ``mask[n]``, leaf by leaf (zeros if none).

  A one-hot ``where`` and a sum rather than a gather: no NaN of another row
  can enter (``where``, not a product), and no dynamic index is needed.
  """
  first = mask & (jnp.cumsum(mask) == 1)

  def pick(leaf):
    leaf = jnp.asarray(leaf)
    return jnp.sum(jnp.where(_rows(first, leaf), leaf, jnp.zeros((), leaf.dtype)), axis=0)

  return jax.tree.map(pick, values)


def _donor_inputs(coded_inputs: PyTree, mask: jax.Array, axis_name: str | None) -> PyTree:
  """The first available worker's coded input (zeros if every worker straggles).

  Inside ``shard_map`` (``axis_name`` given) each device holds N / devices
  workers; the first available one over all devices is found by gathering
  one candidate row per device, so a device whose local workers all
  straggle still gets a real coded input.
  """
  donors = _first_row(coded_inputs, mask)
  if axis_name is None:
    return donors
  gathered = jax.lax.all_gather(donors, axis_name)
  has_available = jax.lax.all_gather(jnp.any(mask), axis_name)
  return _first_row(gathered, has_available)


def _substitute_inputs(coded_inputs: PyTree, mask: jax.Array, donors: PyTree) -> PyTree:
  """Stragglers' rows replaced by the donor input (available rows kept as they are)."""
  return jax.tree.map(
      lambda leaf, donor: jnp.where(_rows(mask, jnp.asarray(leaf)), leaf, donor[None]),
      coded_inputs, donors,
  )


def _run_local(
    worker_fn: Callable[[PyTree, PyTree], PyTree],
    params: PyTree,
    coded_inputs: PyTree,
    mask: jax.Array,
    *,
    replace_straggler_inputs: bool,
    axis_name: str | None,
) -> PyTree:
  if replace_straggler_inputs:
    donors = _donor_inputs(coded_inputs, mask, axis_name)
    coded_inputs = _substitute_inputs(coded_inputs, mask, donors)
  outputs = jax.vmap(worker_fn, in_axes=(None, 0))(params, coded_inputs)
  return mask_outputs(outputs, mask)


def _place_on_mesh(tree: PyTree, mesh: Mesh, spec: P) -> PyTree:
  sharding = NamedSharding(mesh, spec)
  return jax.tree.map(lambda leaf: jax.device_put(leaf, sharding), tree)


def run_workers(
    worker_fn: Callable[[PyTree, PyTree], PyTree],
    params: PyTree,
    coded_inputs: PyTree,
    mask: ArrayLike,
    *,
    mesh: Mesh | None = None,
    axis_name: str = "workers",
    replace_straggler_inputs: bool = True,
) -> PyTree:
  """Runs ``worker_fn`` for every worker and zeroes the stragglers' outputs.

  ``outputs[n] = worker_fn(params, coded_inputs[n]) if mask[n] else 0``.

  Jittable (the mask is an array, so one compiled function serves every
  straggler pattern) and differentiable with respect to ``params`` and
  ``coded_inputs``; a straggler's row contributes exactly zero to the
  outputs and to the gradients, and gets zero gradient itself (module
  docstring: its input is replaced by an available worker's before
  ``worker_fn`` runs).

  Args:
    worker_fn: ``worker_fn(params, x) -> y``, one worker's output from one coded
      input ``x`` (of shape ``coded_inputs.shape[1:]``).
    params: any pytree (or None), the same for every worker (replicated).
    coded_inputs: array of shape (N, ...), or a pytree of arrays that share
      the leading axis N.
    mask: boolean array of shape (N,), True where the worker returned in time
      (a bool array, or a list of True / False).
    mesh: None to ``vmap`` on the default device; or a ``jax.sharding.Mesh``
      with an axis ``axis_name`` whose size divides N, to ``shard_map`` the
      workers over it (``make_worker_mesh`` builds one).
    axis_name: the mesh axis that holds the workers.
    replace_straggler_inputs: run ``worker_fn`` on the first available
      worker's coded input in place of each straggler's (default), so that
      neither a non-finite straggler input nor a singularity of ``worker_fn``
      at it can make gradients NaN. False runs it on the stragglers' own
      inputs. Outputs are the same either way.

  Returns:
    The outputs, shape (N, ...) (or a pytree of such), straggler rows zero.
  """
  num_workers = _num_workers(coded_inputs)
  mask = validation.as_mask(mask, num_workers, "run_workers")
  run = functools.partial(
      _run_local, worker_fn, replace_straggler_inputs=replace_straggler_inputs
  )
  if mesh is None:
    return run(params, coded_inputs, mask, axis_name=None)

  if axis_name not in mesh.axis_names:
    raise ValueError(
        f"run_workers: the mesh has no axis {axis_name!r}; its axes are {mesh.axis_names}."
    )
  num_devices = mesh.shape[axis_name]
  if num_workers % num_devices:
    raise ValueError(
        f"run_workers: N = {num_workers} workers cannot be split evenly over the "
        f"{num_devices} devices of mesh axis {axis_name!r}; N must be a multiple of "
        f"{num_devices} (pad the workers or use a mesh with fewer devices)."
    )
  worker_spec = P(axis_name)
  if any(axis_type == AxisType.Explicit for axis_type in mesh.axis_types):
    # Explicit axes require the inputs' shardings to match in_specs already.
    params = _place_on_mesh(params, mesh, P())
    coded_inputs = _place_on_mesh(coded_inputs, mesh, worker_spec)
    mask = _place_on_mesh(mask, mesh, worker_spec)
  sharded_run = jax.shard_map(
      functools.partial(run, axis_name=axis_name),
      mesh=mesh,
      in_specs=(P(), worker_spec, worker_spec),
      out_specs=worker_spec,
  )
  return sharded_run(params, coded_inputs, mask)
