"""Parity models, ParM (Kosaian, Rashmi, Venkataraman, SOSP 2019; docs/design.md section 4.5).

A group of K queries x_1 .. x_K goes to N = K + 1 workers:

  workers 0 .. K-1   (systematic) run the base classifier f on the raw queries;
  worker K           (parity) runs a *parity model* f_P on the parity query
                     P = x_1 + ... + x_K (ParM's addition encoder).

f_P is a network trained so that f_P(P) ~ f(x_1) + ... + f(x_K)
(``jaxcoded.training.parity``). The decoder passes every returned systematic
output through unchanged; when exactly one systematic worker j straggled and
the parity worker returned, it reconstructs

  f(x_j) ~ f_P(P) - sum_{k != j} f(x_k)      (the subtraction decoder).

The reconstruction is exact when f_P(P) is exactly the sum (e.g. a linear f
without bias and f_P = f). With two or more systematic stragglers, r = 1
parity cannot recover them: those queries are unanswered.

Sizes: any K of the K + 1 outputs recover all K answers, so R = K, S = 1 and
the redundancy is (K + 1) / K. Only r = 1 parity worker is implemented (the
setting of ParM's evaluation); ``create`` rejects r != 1.

The workers are heterogeneous (two tasks: f, and f_P on the parity worker),
which ``worker_tasks`` states; ``Deployment.parity`` runs them in the one
pipeline. ``decode`` needs only the (N, ...) outputs and the mask, as for
every other scheme.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxcoded import deployment
  >>> from jaxcoded.schemes.parm import ParityCode
  >>> f = lambda w, x: w @ x                    # linear: f(sum x) = sum f(x)
  >>> w, queries = jnp.eye(2), jnp.arange(6.0).reshape(3, 2)
  >>> served = deployment.Deployment.parity("ParM", ParityCode.create(3), f, w, f, w)
  >>> served(queries, jnp.array([True, False, True, True])).values
  Array([[0., 1.],
         [2., 3.],
         [4., 5.]], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcoded import deployment, validation
from jaxcoded import queries as queries_lib
from jaxcoded.schemes import base

__all__ = ["ParityCode"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ParityCode(base.Scheme):
  """ParM with the addition encoder: K systematic workers and one parity worker.

  Attributes:
    group_size: K (static).
    num_parities: r, the number of parity workers (static; only 1 is
      implemented).
  """

  group_size: int = dataclasses.field(metadata=dict(static=True))
  num_parities: int = dataclasses.field(default=1, metadata=dict(static=True))

  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int = 1) -> base.SchemeSizes:
    """N = K + r, R = K, S = r for ParM with r = S parity workers.

    Args:
      num_queries: K >= 1.
      num_stragglers: S, the number of parity workers r; must be 1.

    Returns:
      SchemeSizes(K, K + 1, K).
    """
    num_queries, num_stragglers = base.check_group_sizes(num_queries, num_stragglers)
    if num_stragglers != 1:
      raise ValueError(
          f"ParityCode implements r = 1 parity worker, which tolerates exactly S = 1 straggler; "
          f"got S = r = {num_stragglers}. (With r = 1 a second straggler's query goes unanswered; "
          "more parity workers would need a weighted encoder and one parity model per worker.)"
      )
    return base.SchemeSizes(num_queries, num_queries + num_stragglers, num_queries)

  @classmethod
  def create(cls, num_queries: int, num_parities: int = 1) -> "ParityCode":
    """ParM for groups of K queries with r parity workers.

    Args:
      num_queries: K >= 1.
      num_parities: r; must be 1 (the only setting implemented).
    """
    num_parities = validation.check_integer(
        num_parities, "r", 1,
        message=f"ParityCode needs r >= 1 parity workers, got r = {num_parities!r}.",
    )
    sizes = cls.sizes_for(num_queries, num_parities)
    return cls(group_size=int(sizes.num_queries), num_parities=num_parities)

  @property
  def sizes(self) -> base.SchemeSizes:
    return base.SchemeSizes(self.group_size, self.group_size + self.num_parities, self.group_size)

  def parity_queries(self, queries: ArrayLike) -> jax.Array:
    """(K, ...) queries -> (r, ...) parity queries P = sum_k x_k."""
    self.check_queries(queries)
    return jnp.sum(jnp.asarray(queries), axis=0, keepdims=True)

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) queries -> (N, ...) worker inputs: the K queries, then P = sum_k x_k.

    Worker n < K runs the base classifier on row n; worker K runs the parity
    model on row K.
    """
    queries = jnp.asarray(queries)
    return jnp.concatenate([queries, self.parity_queries(queries).astype(queries.dtype)])

  @property
  def min_returns(self) -> int:
    return 1  # systematic outputs pass through as soon as they arrive

  def worker_tasks(
      self, base_task: base.WorkerTask | None, trained_task: base.WorkerTask | None = None
  ) -> tuple[tuple[base.WorkerTask, ...], tuple[int, ...]]:
    """f on the K systematic workers, the parity model (``trained_task``) on the parity worker."""
    if base_task is None or trained_task is None:
      raise ValueError(
          "ParityCode runs two functions: the base classifier and the trained parity model "
          "(jaxcoded.training.parity); build it with Deployment.parity(name, code, f, f_params, "
          "f_P, f_P_params)."
      )
    k = self.num_queries
    return (base_task, trained_task), (0,) * k + (1,) * (self.num_workers - k)

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """Systematic outputs pass through; one missing output is f_P(P) - sum of the others.

    Rows of workers that did not return are never read (``jnp.where``), so a
    NaN in a straggler's row cannot reach the result.

    Args:
      outputs: (N, ...) worker outputs: K base outputs f(x_k), then f_P(P).
      mask: (N,) bool, True where the worker returned.

    Returns:
      Decoded values (K, ...), zeros where unanswered, and (K,) answered:
      True for returned systematic workers, and for the one missing query
      when it is the only systematic straggler and the parity returned.
    """
    self.check_mask(mask)
    outputs, mask = jnp.asarray(outputs), jnp.asarray(mask)
    if outputs.shape[:1] != (self.num_workers,):
      raise ValueError(
          f"ParityCode: outputs have shape {outputs.shape}, expected ({self.num_workers}, ...) "
          f"(K = {self.num_queries} base outputs, then the parity output)."
      )
    k = self.num_queries
    zero = jnp.zeros((), outputs.dtype)
    rows = lambda m: m.reshape(m.shape + (1,) * (outputs.ndim - 1))
    systematic_ok, parity_ok = mask[:k], mask[k]
    systematic = jnp.where(rows(systematic_ok), outputs[:k], zero)
    parity = jnp.where(parity_ok, outputs[k], zero)
    recovered = parity - jnp.sum(systematic, axis=0)
    recoverable = parity_ok & (jnp.sum(~systematic_ok) == 1)
    values = jnp.where(rows(systematic_ok), systematic, jnp.where(recoverable, recovered, zero))
    return base.Decoded(values, systematic_ok | recoverable)

  def __call__(
      self,
      worker_fn: base.WorkerFn,
      params: Any,
      queries: ArrayLike,
      mask: ArrayLike,
      *,
      mesh: jax.sharding.Mesh | None = None,
      parity_fn: base.WorkerFn | None = None,
      parity_params: Any = None,
      query_range: queries_lib.QuerySpec | tuple[float, float] | None = None,
  ) -> base.Decoded:
    """``Deployment.parity`` around f and the parity model, on one group (the one pipeline)."""
    trained = None if parity_fn is None else base.WorkerTask(parity_fn, parity_params)
    served = deployment.Deployment.of("ParM", self, base.WorkerTask(worker_fn, params), trained,
                                      query_range=query_range)
    return served(queries, mask, mesh=mesh)
