"""Berrut approximate coded computing (BACC, Jahani-Nezhad & Maddah-Ali 2021;
ApproxIFER, Soleymani et al. 2022; docs/design.md section 4.4), stragglers only.

Encode with Berrut's rational interpolant through the K (data point, query)
pairs, evaluated at the N worker points; every worker runs the unchanged model
f; decode with Berrut's interpolant through the available (worker point,
output) pairs, evaluated at the data points. The interpolant has no poles on
the real line for any number of nodes, so decoding works from any non-empty
subset of workers; the answer is approximate, and degrades gracefully as
workers straggle. ApproxIFER uses N = K + S, so the nominal threshold is R = K.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp
from jaxcoded.schemes import base, points


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BerrutCode(base.Scheme):
  """Berrut coding with N = K + S workers.

  Attributes:
    data_points: (K,) a_k.
    worker_points: (N,) b_n.
  """

  data_points: jax.Array
  worker_points: jax.Array

  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int) -> base.SchemeSizes:
    """ApproxIFER's sizes: N = K + S, R = K."""
    return base.k_plus_s_sizes(num_queries, num_stragglers)

  @classmethod
  def create(
      cls,
      num_queries: int,
      num_stragglers: int,
      *,
      data_points: ArrayLike | None = None,
      worker_points: ArrayLike | None = None,
      dtype: DTypeLike | None = None,
  ) -> "BerrutCode":
    """Berrut coding at default Chebyshev points (first kind data, second kind workers).

    Args:
      num_queries: K >= 1.
      num_stragglers: S >= 0; N = K + S.
      data_points: optional (K,) a_k.
      worker_points: optional worker points; their number sets N (>= K).
      dtype: floating dtype of the points.
    """
    sizes = cls.sizes_for(num_queries, num_stragglers)
    a, b = points.resolve_points(sizes, data_points, worker_points, dtype, "BerrutCode", "R = K")
    return cls(data_points=a, worker_points=b)

  @property
  def sizes(self) -> base.SchemeSizes:
    num_queries = self.data_points.shape[0]
    return base.SchemeSizes(num_queries, self.worker_points.shape[0], num_queries)

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) queries -> (N, ...) coded inputs r(b_n)."""
    self.check_queries(queries)
    matrix = interp.berrut_matrix(self.data_points, self.worker_points)
    return interp.apply_matrix(matrix, queries)

  def decoding_matrix(self, mask: ArrayLike) -> jax.Array:
    """(K, N) Berrut interpolation through the available workers, at a_k."""
    return interp.berrut_matrix(self.worker_points, self.data_points, mask)

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """Approximate f(x_k) from any non-empty set of returned workers."""
    self.check_mask(mask)
    mask = jnp.asarray(mask)
    any_returned = jnp.any(mask)
    safe_mask = jnp.where(any_returned, mask, True)
    # = apply_matrix(decoding_matrix(safe_mask), outputs), without the matrix.
    values = interp.berrut_interpolate(self.worker_points, outputs, self.data_points, safe_mask)
    values = jnp.where(any_returned, values, jnp.zeros((), values.dtype))
    return base.Decoded(values, jnp.full((self.num_queries,), any_returned))
