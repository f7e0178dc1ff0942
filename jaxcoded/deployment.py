"""A scheme ready to run: its encoder and decoder, and what each worker computes.

Every scheme of the common interface encodes K queries into N worker inputs
and decodes from the outputs of the workers that returned. What the workers
run differs: the base classifier f for uncoded, replication, LCC and Berrut;
f on the K systematic workers and a parity model on the last for ParM; the
learned worker network h for a polynomial code. A :class:`Deployment` holds
that as a few distinct worker *tasks* (function and parameters) and, for
each of the N workers, the index of its task (its *role*). The same object
drives the in-process simulation (``vmap`` or ``shard_map`` over workers),
the evaluation harness and the Ray service, so all three compute the same
thing:

  coded   = deployment.encode(queries)                 # (N, ...)
  y_n     = deployment.worker(n).run(coded[n])         # on worker n
  decoded = deployment.decode(outputs, mask)           # Decoded((K, C), (K,))

``decode`` treats a row holding NaN or inf as an erasure (that worker is
marked unavailable for the group), so one broken worker cannot poison a
group. ``Decoded.answered`` tells which queries were recovered. ``__call__``
refuses a group with a non-float, NaN or inf or misshapen query before it
runs (``validation.check_images``, docs/bad_input.md): in a coded group one
such query would spoil every answer.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxcoded import deployment, schemes
  >>> f = lambda w, x: w @ x
  >>> served = deployment.Deployment.homogeneous(
  ...     "Berrut", schemes.BerrutCode.create(3, 1), f, jnp.eye(2))
  >>> served(jnp.ones((3, 2)), jnp.array([True, False, True, True])).answered.tolist()
  [True, True, True]
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcoded import validation, workers
from jaxcoded.schemes import base

__all__ = ["Deployment", "WorkerTask"]


class WorkerTask(NamedTuple):
  """What one kind of worker computes: ``fn(params, x)`` on one coded input x."""

  fn: base.WorkerFn
  params: Any

  def run(self, x: ArrayLike) -> jax.Array:
    return self.fn(self.params, x)


@dataclasses.dataclass(frozen=True, eq=False)
class Deployment:
  """A named scheme with the task of each of its N workers.

  Attributes:
    name: label used in tables, plots and the service.
    scheme: the coding scheme (``encode``, ``decode``, ``sizes``).
    tasks: the distinct worker tasks.
    roles: (N,) for each worker, the index of its task in ``tasks``.
  """

  name: str
  scheme: base.Scheme
  tasks: tuple[WorkerTask, ...]
  roles: tuple[int, ...]

  def __post_init__(self):
    n = self.scheme.num_workers
    if len(self.roles) != n:
      raise ValueError(
          f"Deployment {self.name!r}: {len(self.roles)} roles for the N = {n} workers of "
          f"{type(self.scheme).__name__}."
      )
    if not self.tasks or any(not 0 <= r < len(self.tasks) for r in self.roles):
      raise ValueError(
          f"Deployment {self.name!r}: roles {self.roles} must index the {len(self.tasks)} tasks."
      )

  # -- constructors ---------------------------------------------------------------

  @classmethod
  def homogeneous(
      cls, name: str, scheme: base.Scheme, fn: base.WorkerFn, params: Any
  ) -> "Deployment":
    """Every worker runs ``fn(params, x)`` (uncoded, replication, LCC, Berrut)."""
    return cls(name, scheme, (WorkerTask(fn, params),), (0,) * scheme.num_workers)

  @classmethod
  def parity(
      cls,
      name: str,
      code: base.Scheme,
      base_fn: base.WorkerFn,
      base_params: Any,
      parity_fn: base.WorkerFn,
      parity_params: Any,
  ) -> "Deployment":
    """ParM: the K systematic workers run f, the parity worker(s) the parity model."""
    k = code.num_queries
    roles = (0,) * k + (1,) * (code.num_workers - k)
    return cls(name, code, (WorkerTask(base_fn, base_params), WorkerTask(parity_fn, parity_params)),
               roles)

  @classmethod
  def learned(cls, name: str, code: base.Scheme) -> "Deployment":
    """A learned code (design A): every worker runs the code's worker network."""
    fn, params = code.worker_fn()
    return cls.homogeneous(name, code, fn, params)

  # -- the pipeline ---------------------------------------------------------------

  @property
  def num_workers(self) -> int:
    return self.scheme.num_workers

  @property
  def num_queries(self) -> int:
    return self.scheme.num_queries

  def worker(self, n: int) -> WorkerTask:
    """The task of worker ``n`` (0 <= n < N)."""
    if not 0 <= n < self.num_workers:
      raise ValueError(f"Deployment {self.name!r}: worker {n} is not in 0..{self.num_workers - 1}.")
    return self.tasks[self.roles[n]]

  def encode(self, queries: ArrayLike) -> jax.Array:
    """(K, ...) queries -> (N, ...) worker inputs."""
    return self.scheme.encode(queries)

  def run_workers(
      self,
      coded: ArrayLike,
      mask: ArrayLike | None = None,
      *,
      mesh: jax.sharding.Mesh | None = None,
  ) -> jax.Array:
    """(N, ...) worker inputs -> (N, ...) outputs, stragglers' rows zero.

    Workers of one role run together (``workers.run_workers``: ``vmap``, or
    ``shard_map`` over ``mesh`` when its "workers" axis divides their number;
    a smaller role, like ParM's single parity worker, runs on the default
    device).
    """
    n = self.num_workers
    mask = jnp.ones((n,), bool) if mask is None else jnp.asarray(mask)
    self.scheme.check_mask(mask)
    coded = jnp.asarray(coded)
    if len(self.tasks) == 1:
      fn, params = self.tasks[0]
      return workers.run_workers(fn, params, coded, mask, mesh=mesh)
    pieces = []
    for role, (fn, params) in enumerate(self.tasks):
      rows = jnp.asarray([i for i, r in enumerate(self.roles) if r == role], jnp.int32)
      role_mesh = mesh
      if mesh is not None and len(rows) % mesh.shape.get("workers", 1):
        role_mesh = None
      pieces.append((rows, workers.run_workers(fn, params, coded[rows], mask[rows], mesh=role_mesh)))
    first = pieces[0][1]
    outputs = jnp.zeros((n,) + first.shape[1:], first.dtype)
    for rows, out in pieces:
      outputs = outputs.at[rows].set(out.astype(first.dtype))
    return outputs

  def decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """(N, ...) outputs and (N,) availability -> Decoded((K, ...), (K,)).

    Rows with NaN or inf are erased first (that worker counts as a straggler).
    """
    outputs, mask = workers.erase_nonfinite(jnp.asarray(outputs), mask)
    return self.scheme.decode(outputs, mask)

  def __call__(
      self,
      queries: ArrayLike,
      mask: ArrayLike,
      *,
      mesh: jax.sharding.Mesh | None = None,
  ) -> base.Decoded:
    """Encode, run the workers, decode: one group of K queries.

    Args:
      queries: (K, ...) one group.
      mask: (N,) bool, True where the worker returned.
      mesh: optional device mesh with a "workers" axis.

    Returns:
      Decoded values (K, ...) and (K,) answered flags.

    Raises:
      ValueError: queries that are not K finite float images, or whose
        shape the encoder or the worker tasks cannot take (docs/bad_input.md);
        a bad mask.
    """
    validation.check_images(queries, (self.num_queries, ...), f"Deployment {self.name!r}")
    self.scheme.check_queries(queries)
    self.scheme.check_mask(mask)
    try:
      outputs = self.run_workers(self.encode(queries), mask, mesh=mesh)
    except TypeError as error:  # JAX's shape errors: say which input did not fit
      raise ValueError(
          f"Deployment {self.name!r}: queries of shape {jnp.shape(queries)} do not fit its "
          f"encoder or worker tasks; pass K = {self.num_queries} images of the shape they were "
          f"built for. ({type(error).__name__}: {error})"
      ) from error
    return self.decode(outputs, mask)
