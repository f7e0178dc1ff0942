"""Lagrange Coded Computing (Yu et al., AISTATS 2019; DESIGN.md section 4.3).

Encode with the Lagrange polynomial u(z) of degree K - 1 through the K
(data point, query) pairs; worker n computes f(u(b_n)). If f is a polynomial of
degree d, z -> f(u(z)) is a polynomial of degree (K - 1) d, so any
R = (K - 1) d + 1 worker outputs determine it, and evaluating it at a_k gives
f(x_k) exactly. More than R outputs are combined by least squares (the same
answer for exact f, noise averaged otherwise). For a neural network f the
scheme is only an approximation: ``degree`` is then the degree assumed.
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
class LagrangeCode(base.Scheme):
  """LCC for a worker function of (assumed) polynomial degree ``degree``.

  Attributes:
    data_points: (K,) a_k, one per query.
    worker_points: (N,) b_n, one per worker; N >= R = (K - 1) * degree + 1.
    degree: polynomial degree d of the worker function (static).
  """

  data_points: jax.Array
  worker_points: jax.Array
  degree: int = dataclasses.field(default=1, metadata=dict(static=True))

  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int, degree: int = 1) -> base.SchemeSizes:
    """K, N, R of LCC tolerating S stragglers for f of degree d."""
    base.check_group_sizes(num_queries, num_stragglers)
    if not isinstance(degree, int) or degree < 1:
      raise ValueError(f"LCC needs a worker function of degree d >= 1, got d = {degree!r}.")
    threshold = (num_queries - 1) * degree + 1
    return base.SchemeSizes(num_queries, threshold + num_stragglers, threshold)

  @classmethod
  def create(
      cls,
      num_queries: int,
      num_stragglers: int,
      degree: int = 1,
      *,
      data_points: ArrayLike | None = None,
      worker_points: ArrayLike | None = None,
      dtype: DTypeLike | None = None,
  ) -> "LagrangeCode":
    """LCC with N = (K - 1) d + 1 + S workers at default Chebyshev points.

    Args:
      num_queries: K >= 1.
      num_stragglers: S >= 0.
      degree: d >= 1.
      data_points: optional (K,) a_k.
      worker_points: optional worker points; their number sets N, which must
        be at least R (then S = N - R, whatever num_stragglers says).
      dtype: floating dtype of the points.
    """
    sizes = cls.sizes_for(num_queries, num_stragglers, degree)
    a, b = points.resolve_points(
        sizes, data_points, worker_points, dtype, "LagrangeCode", "R = (K - 1) d + 1"
    )
    return cls(data_points=a, worker_points=b, degree=degree)

  @property
  def sizes(self) -> base.SchemeSizes:
    num_queries = self.data_points.shape[0]
    threshold = (num_queries - 1) * self.degree + 1
    return base.SchemeSizes(num_queries, self.worker_points.shape[0], threshold)

  def encode(self, queries: ArrayLike) -> jax.Array:
    """(K, ...) queries -> (N, ...) coded inputs u(b_n)."""
    self.check_queries(queries)
    matrix = interp.lagrange_matrix(self.data_points, self.worker_points)
    return interp.apply_matrix(matrix, queries)

  def decoding_matrix(self, mask: ArrayLike) -> jax.Array:
    """(K, N) least-squares fit of degree R - 1 through the available workers, at a_k.

    NaN when fewer than R workers are available (under jit).
    """
    return interp.polyfit_matrix(
        self.worker_points, self.data_points, self.recovery_threshold - 1, mask
    )

  def decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """(N, ...) outputs of the available workers -> f(x_k) for all K queries.

    Below the recovery threshold nothing is answered (values are zero).
    """
    self.check_mask(mask)
    mask = jnp.asarray(mask)
    enough = jnp.sum(mask) >= self.recovery_threshold
    # Decode through a full mask when too few returned: keeps NaNs out of the
    # arithmetic; the result is then discarded by `answered`.
    safe_mask = jnp.where(enough, mask, True)
    values = interp.apply_matrix(self.decoding_matrix(safe_mask), outputs)
    values = jnp.where(enough, values, jnp.zeros((), values.dtype))
    answered = jnp.full((self.num_queries,), enough)
    return base.Decoded(values, answered)
