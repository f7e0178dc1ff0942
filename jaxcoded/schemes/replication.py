"""Replication (docs/design.md section 4.2): r copies of every query.

N = r K workers; worker n serves query n % K, as copy n // K (the first K
workers hold copy 0 of the K queries, the next K copy 1, and so on). A query
is answered if any of its r replicas returns, and its value is then the output
of the first returned replica: every replica runs the same f on the same
input, so any of them is exact.

Sizes: S = r - 1 stragglers are always tolerated (a query is lost only when
all r of its replicas straggle), and R = N - r + 1 = N - S returns guarantee
that every query is answered, whichever workers straggle (the worst case: the
N - R missing ones could otherwise be all r replicas of one query). Fewer
returns may still answer every query if they fall luckily; unanswered queries
have zero values and ``answered`` False.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded.schemes import base

__all__ = ["Replication"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Replication(base.Scheme):
  """r = S + 1 copies of each of K queries on N = r K workers.

  Attributes:
    group_size: K (static).
    copies: r >= 1 (static).
  """

  group_size: int = dataclasses.field(metadata=dict(static=True))
  copies: int = dataclasses.field(metadata=dict(static=True))

  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int) -> base.SchemeSizes:
    """r = S + 1 copies: N = (S + 1) K, R = N - S."""
    base.check_group_sizes(num_queries, num_stragglers)
    num_workers = (num_stragglers + 1) * num_queries
    return base.SchemeSizes(num_queries, num_workers, num_workers - num_stragglers)

  @classmethod
  def create(cls, num_queries: int, num_stragglers: int) -> "Replication":
    """Replication of K queries tolerating S stragglers, with r = S + 1 copies.

    Args:
      num_queries: K >= 1.
      num_stragglers: S >= 0.
    """
    cls.sizes_for(num_queries, num_stragglers)
    return cls(group_size=num_queries, copies=num_stragglers + 1)

  @property
  def sizes(self) -> base.SchemeSizes:
    num_workers = self.copies * self.group_size
    return base.SchemeSizes(self.group_size, num_workers, num_workers - self.copies + 1)

  def query_of_worker(self) -> jax.Array:
    """(N,) index of the query that each worker serves (n % K)."""
    return jnp.arange(self.num_workers) % self.group_size

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) queries -> (N, ...): r stacked copies of the group."""
    self.check_queries(queries)
    queries = jnp.asarray(queries)
    return jnp.concatenate([queries] * self.copies, axis=0)

  @property
  def min_returns(self) -> int:
    return 1  # any one replica answers its query

  def home_workers(self) -> np.ndarray:
    """(K, N) bool: every replica of query k serves it."""
    k, n = self.num_queries, self.num_workers
    return np.arange(n)[None, :] % k == np.arange(k)[:, None]

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """Each query takes the output of its first returned replica.

    Args:
      outputs: (N, ...) worker outputs; rows of stragglers are never read.
      mask: (N,) bool, True where the worker returned.

    Returns:
      Decoded values (K, ...) and ``answered`` (K,), True where at least one
      replica returned.
    """
    self.check_mask(mask)
    outputs, mask = jnp.asarray(outputs), jnp.asarray(mask)
    if outputs.shape[:1] != (self.num_workers,):
      raise ValueError(
          f"Replication: outputs have shape {outputs.shape}, expected ({self.num_workers}, ...)."
      )
    replicas = outputs.reshape((self.copies, self.group_size) + outputs.shape[1:])
    returned = mask.reshape(self.copies, self.group_size)
    answered = jnp.any(returned, axis=0)
    first = jnp.argmax(returned, axis=0)  # the first True; 0 when none returned
    chosen = (jnp.arange(self.copies)[:, None] == first[None, :]) & returned  # (r, K) one-hot
    chosen = chosen.reshape(chosen.shape + (1,) * (outputs.ndim - 1))
    # A sum of `where`s: unchosen rows (stragglers' NaNs included) contribute exact zeros.
    values = jnp.sum(jnp.where(chosen, replicas, jnp.zeros((), outputs.dtype)), axis=0)
    return base.Decoded(values, answered)
