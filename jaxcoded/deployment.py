"""The one pipeline: a scheme, what each worker computes, and the checks around them.

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

``decode`` treats a row holding NaN or inf as an erasure (``Scheme.decode``:
that worker is marked unavailable for the group), so one broken worker cannot
poison a group. ``Decoded.answered`` tells which queries were recovered.
Queries, coded inputs and outputs may be pytrees whose leaves share the
leading axis.

``__call__`` refuses a misshapen group, or one of other than real numbers,
before it runs; with a ``query_range`` (a ``queries.QuerySpec``, which the
data layer supplies per dataset: ``data.query_spec(name)``) it also refuses
NaN, inf, out-of-range and, for images, integer queries (``jaxcoded.queries``,
docs/bad_input.md): in a coded group one such query would spoil every answer.
By default (``query_range=None``) any real-valued data pass.

Learned codes run in either system design (``design="A"``: the master
encodes; ``"B"``: each worker reads the K queries and encodes its own input,
the master sends only b_n). ParM's parity worker is one more task.

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
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcoded import queries as queries_lib
from jaxcoded import workers

if TYPE_CHECKING:  # annotations only: jaxcoded.schemes.base imports this module
  from jaxcoded.schemes import base

__all__ = ["DESIGNS", "Deployment", "WorkerTask"]

WorkerTask = workers.WorkerTask
DESIGNS = ("A", "B")
QueryRange = queries_lib.QuerySpec | tuple[float, float] | None
PyTree = Any


@dataclasses.dataclass(frozen=True, eq=False)
class Deployment:
  """A named scheme with the task of each of its N workers.

  Attributes:
    name: label used in tables, plots and the service.
    scheme: the coding scheme (``encode``, ``decode``, ``sizes``, capabilities).
    tasks: the distinct worker tasks.
    roles: (N,) for each worker, the index of its task in ``tasks``.
    design: "A" (the master encodes) or "B" (workers encode; learned codes).
    query_range: the value checks of the data (a ``queries.QuerySpec``, e.g.
      ``data.query_spec("digits")``, or a (low, high) pair), or None (the
      default: static checks only); see ``jaxcoded.queries``.
  """

  name: str
  scheme: base.Scheme
  tasks: tuple[WorkerTask, ...]
  roles: tuple[int, ...]
  design: str = "A"
  query_range: QueryRange = None

  def __post_init__(self):
    object.__setattr__(self, "query_range", queries_lib.as_spec(self.query_range))
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
    if self.design not in DESIGNS:
      raise ValueError(
          f"Deployment {self.name!r}: unknown system design {self.design!r}; use 'A' (master "
          "encodes) or 'B' (workers encode)."
      )

  # -- constructors ---------------------------------------------------------------

  @classmethod
  def of(
      cls,
      name: str,
      scheme: base.Scheme,
      base_task: WorkerTask | None = None,
      trained_task: WorkerTask | None = None,
      *,
      design: str = "A",
      query_range: QueryRange = None,
  ) -> "Deployment":
    """The deployment the scheme describes (``Scheme.worker_tasks``) around f.

    Args:
      name: its label.
      scheme: any scheme.
      base_task: the base classifier f (not needed by learned codes).
      trained_task: a trained worker of the scheme's own (ParM's parity model).
      design: "A" or "B" (design B: learned codes only).
      query_range: value checks of the queries (None: static checks only),
        see ``jaxcoded.queries``.
    """
    if design == "B":
      if not hasattr(scheme, "worker_side_task"):
        raise ValueError(
            f"Deployment {name!r}: {type(scheme).__name__} has no worker-side encoding "
            "(design 'B' is for learned codes); use design 'A'."
        )
      return cls(name, scheme, (scheme.worker_side_task(),), (0,) * scheme.num_workers,
                 design="B", query_range=query_range)
    tasks, roles = scheme.worker_tasks(base_task, trained_task)
    return cls(name, scheme, tasks, roles, design=design, query_range=query_range)

  @classmethod
  def homogeneous(
      cls, name: str, scheme: base.Scheme, fn: workers.WorkerFn, params: Any, **options
  ) -> "Deployment":
    """Every worker runs ``fn(params, x)`` (uncoded, replication, LCC, Berrut)."""
    return cls(name, scheme, (WorkerTask(fn, params),), (0,) * scheme.num_workers, **options)

  @classmethod
  def parity(
      cls,
      name: str,
      code: base.Scheme,
      base_fn: workers.WorkerFn,
      base_params: Any,
      parity_fn: workers.WorkerFn,
      parity_params: Any,
      **options,
  ) -> "Deployment":
    """ParM: the K systematic workers run f, the parity worker(s) the parity model."""
    return cls.of(name, code, WorkerTask(base_fn, base_params),
                  WorkerTask(parity_fn, parity_params), **options)

  @classmethod
  def learned(cls, name: str, code: base.Scheme, *, design: str = "A", **options) -> "Deployment":
    """A learned code: every worker runs the code's worker network (design A or B)."""
    return cls.of(name, code, design=design, **options)

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

  def encode(self, queries: PyTree) -> PyTree:
    """(K, ...) queries -> (N, ...) what the master sends: coded inputs, or b_n in design B."""
    if self.design == "B":
      self.scheme.check_queries(queries)
      return self.scheme.worker_points[...]
    return self.scheme.encode(queries)

  def run_workers(
      self,
      coded: PyTree,
      mask: ArrayLike | None = None,
      *,
      queries: PyTree | None = None,
      mesh: jax.sharding.Mesh | None = None,
  ) -> PyTree:
    """(N, ...) worker inputs -> (N, ...) outputs; stragglers' rows masked out.

    Workers of one role run together (``workers.run_workers``: ``vmap``, or
    ``shard_map`` over ``mesh`` when its "workers" axis divides their number;
    a smaller role, like ParM's single parity worker, runs on the default
    device). Design-B workers also read ``queries``. Inputs and outputs may
    be pytrees; every role must answer with the same structure and shapes.
    """
    n = self.num_workers
    mask = jnp.ones((n,), bool) if mask is None else self.scheme.check_mask(mask)
    coded = jax.tree.map(jnp.asarray, coded)
    pieces = []
    for role, task in enumerate(self.tasks):
      fn, params = task.fn, task.params
      if task.reads_queries:
        if queries is None:
          raise ValueError(f"Deployment {self.name!r}: design-B workers read the queries; pass them.")
        fn, params = (lambda p, x, f=task.fn: f(p[0], x, p[1])), (task.params, queries)
      if len(self.tasks) == 1:
        return workers.run_workers(fn, params, coded, mask, mesh=mesh)
      rows = jnp.asarray([i for i, r in enumerate(self.roles) if r == role], jnp.int32)
      role_mesh = mesh
      if mesh is not None and len(rows) % mesh.shape.get("workers", 1):
        role_mesh = None
      role_inputs = jax.tree.map(lambda leaf, rows=rows: leaf[rows], coded)
      pieces.append((rows, workers.run_workers(fn, params, role_inputs, mask[rows], mesh=role_mesh)))
    first = pieces[0][1]
    shapes = lambda tree: jax.tree.map(lambda leaf: leaf.shape[1:], tree)
    for _, out in pieces[1:]:
      if jax.tree.structure(out) != jax.tree.structure(first) or shapes(out) != shapes(first):
        raise ValueError(
            f"Deployment {self.name!r}: worker tasks give outputs of shapes {shapes(first)} and "
            f"{shapes(out)}; every worker must answer in the same shape (and pytree structure)."
        )

    def assemble(*leaves):
      outputs = jnp.zeros((n,) + leaves[0].shape[1:], leaves[0].dtype)
      for (rows, _), leaf in zip(pieces, leaves):
        outputs = outputs.at[rows].set(leaf.astype(outputs.dtype))
      return outputs

    return jax.tree.map(assemble, *(out for _, out in pieces))

  def decode(
      self, outputs: PyTree, mask: ArrayLike, queries: PyTree | None = None
  ) -> base.Decoded:
    """(N, ...) outputs (or a pytree of them) and (N,) availability -> Decoded((K, ...), (K,)).

    Workers with NaN or inf in any leaf are erased first (``Scheme.decode``).
    ``queries``: the group, for a scheme whose decoder reads it
    (``scheme.decode_reads_queries``); ignored otherwise.
    """
    return self.scheme.decode(outputs, mask, queries)

  def check_queries(self, queries: PyTree) -> None:
    """Raises ValueError for a group this deployment must refuse (``jaxcoded.queries``).

    Static checks always; the value checks of ``query_range`` when it is set
    (they need concrete queries: traced ones raise, docs/bad_input.md).
    """
    self.scheme.check_queries(queries)
    queries_lib.check(queries, (self.num_queries, ...), self.query_range, f"Deployment {self.name!r}")

  def outputs(
      self, queries: PyTree, mask: ArrayLike | None = None, *,
      mesh: jax.sharding.Mesh | None = None,
  ) -> PyTree:
    """(K, ...) one group -> (N, ...) worker outputs: encode, then run the workers."""
    try:
      return self.run_workers(self.encode(queries), mask, queries=queries, mesh=mesh)
    except TypeError as error:  # JAX's shape errors: say which input did not fit
      raise ValueError(
          f"Deployment {self.name!r}: queries of shape {jax.tree.map(jnp.shape, queries)} do not fit its "
          f"encoder or worker tasks; pass K = {self.num_queries} images of the shape they were "
          f"built for. ({type(error).__name__}: {error})"
      ) from error

  def __call__(
      self,
      queries: PyTree,
      mask: ArrayLike,
      *,
      mesh: jax.sharding.Mesh | None = None,
  ) -> base.Decoded:
    """Check, encode, run the workers, decode: one group of K queries.

    Args:
      queries: (K, ...) one group, or a pytree of such arrays.
      mask: (N,) bool, True where the worker returned.
      mesh: optional device mesh with a "workers" axis.

    Returns:
      Decoded values (K, ...) and (K,) answered flags.

    Raises:
      ValueError: queries that are not K real-valued rows (and, with a
        ``query_range``, not finite or in range), or whose shape the encoder
        or the worker tasks cannot take (docs/bad_input.md); a bad mask.
    """
    self.check_queries(queries)
    mask = self.scheme.check_mask(mask)
    return self.decode(self.outputs(queries, mask, mesh=mesh), mask, queries)
