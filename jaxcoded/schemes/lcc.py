"""Lagrange Coded Computing (Yu et al., AISTATS 2019; docs/design.md section 4.3).

Encode with the Lagrange polynomial u(z) of degree K - 1 through the K
(data point, query) pairs; worker n computes f(u(b_n)). If f is a polynomial of
degree d, z -> f(u(z)) is a polynomial of degree (K - 1) d, so any
R = (K - 1) d + 1 worker outputs determine it, and evaluating it at a_k gives
f(x_k) exactly. More than R outputs are combined by least squares (the same
answer for exact f, noise averaged otherwise). For a neural network f the
scheme is only an approximation: ``degree`` is then the degree assumed.

Byzantine workers (``num_adversaries`` E >= 1): with N = R0 + S + 2E workers,
R0 = (K - 1) d + 1, the master locates up to E arbitrary wrong outputs among
any R0 + 2E returned ones, drops them and fits the rest
(``jaxcoded.robust``; docs/reliability.md). The recovery threshold R is then
R0 + 2E (outputs needed, the adversaries' included), so S = N - R as usual.
Beyond E wrong outputs it answers nothing, rather than something wrong,
wherever that is detectable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp, robust, validation
from jaxcoded.schemes import base, points


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LagrangeCode(base.Scheme):
  """LCC for a worker function of (assumed) polynomial degree ``degree``.

  Attributes:
    data_points: (K,) a_k, one per query.
    worker_points: (N,) b_n, one per worker; N >= R = (K - 1) * degree + 1 + 2E.
    degree: polynomial degree d of the worker function (static).
    num_adversaries: E >= 0 wrong outputs located and dropped before
      decoding (static); 0 decodes plainly.
    rtol: the locator's consistency tolerance (static); None for
      ``robust.default_rtol`` of the outputs' dtype.
  """

  joint_decoding = True  # wrong outputs are located over all leaves together

  data_points: jax.Array
  worker_points: jax.Array
  degree: int = dataclasses.field(default=1, metadata=dict(static=True))
  num_adversaries: int = dataclasses.field(default=0, metadata=dict(static=True))
  rtol: float | None = dataclasses.field(default=None, metadata=dict(static=True))


  @staticmethod
  def sizes_for(
      num_queries: int, num_stragglers: int, degree: int = 1, num_adversaries: int = 0
  ) -> base.SchemeSizes:
    """K, N, R of LCC tolerating S stragglers and E adversaries for f of degree d.

    R = (K - 1) d + 1 + 2E outputs are needed and N = R + S.
    """
    num_queries, num_stragglers = base.check_group_sizes(num_queries, num_stragglers)
    degree = validation.check_integer(  # bools refused: True is not degree 1
        degree, "d", 1, message=f"LCC needs a worker function of degree d >= 1, got d = {degree!r}."
    )
    robust.check_num_errors(num_adversaries, "LCC")
    threshold = (num_queries - 1) * degree + 1 + 2 * num_adversaries
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
      num_adversaries: int = 0,
      rtol: float | None = None,
  ) -> "LagrangeCode":
    """LCC with N = (K - 1) d + 1 + S + 2E workers at default Chebyshev points.

    Args:
      num_queries: K >= 1.
      num_stragglers: S >= 0.
      degree: d >= 1.
      data_points: optional (K,) a_k.
      worker_points: optional worker points; their number sets N, which must
        be at least R (then S = N - R, whatever num_stragglers says).
      dtype: floating dtype of the points.
      num_adversaries: E >= 0 Byzantine workers to tolerate (module docstring).
      rtol: the locator's consistency tolerance; None for the dtype's default.
    """
    sizes = cls.sizes_for(num_queries, num_stragglers, degree, num_adversaries)
    num_queries, degree = sizes.num_queries, int(degree)
    a, b = points.resolve_points(
        sizes, data_points, worker_points, dtype, "LagrangeCode", "R = (K - 1) d + 1 + 2E"
    )
    robust.check_config(
        b.shape[0], (num_queries - 1) * degree, num_adversaries, rtol, "LagrangeCode"
    )
    return cls(
        data_points=a, worker_points=b, degree=degree, num_adversaries=num_adversaries,
        rtol=None if rtol is None else float(rtol),
    )

  @property
  def sizes(self) -> base.SchemeSizes:
    num_queries = self.data_points.shape[0]
    threshold = (num_queries - 1) * self.degree + 1 + 2 * self.num_adversaries
    return base.SchemeSizes(num_queries, self.worker_points.shape[0], threshold)

  @property
  def interpolation_threshold(self) -> int:
    """R0 = (K - 1) d + 1: the outputs that determine f(u(z)) when none is wrong."""
    return (self.num_queries - 1) * self.degree + 1

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) queries -> (N, ...) coded inputs u(b_n)."""
    self.check_queries(queries)
    matrix = interp.lagrange_matrix(self.data_points, self.worker_points)
    return interp.apply_matrix(matrix, queries)

  def decoding_matrix(self, mask: ArrayLike) -> jax.Array:
    """(K, N) least-squares fit of degree R0 - 1 through the available workers, at a_k.

    NaN when fewer than R0 workers are available (under jit). No adversary is
    located: this is the plain decode (E = 0: R0 = R).
    """
    return interp.polyfit_matrix(
        self.worker_points, self.data_points, self.interpolation_threshold - 1, mask
    )

  @property
  def locates_errors(self) -> bool:
    return self.num_adversaries > 0

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """(N, ...) outputs of the available workers -> f(x_k) for all K queries.

    Below the recovery threshold nothing is answered (values are zero). With
    E >= 1 adversaries this is ``decode_and_locate(outputs, mask)[0]``.
    """
    if self.num_adversaries:
      return self._decode_and_locate(outputs, mask)[0]
    self.check_mask(mask)
    mask = jnp.asarray(mask)
    enough = jnp.sum(mask) >= self.recovery_threshold
    # Decode through a full mask when too few returned: keeps NaNs out of the
    # arithmetic; the result is then discarded by `answered`.
    safe_mask = jnp.where(enough, mask, True)
    # = apply_matrix(decoding_matrix(safe_mask), outputs), without the matrix.
    values = interp.polyfit_interpolate(
        self.worker_points, outputs, self.data_points, self.interpolation_threshold - 1, safe_mask
    )
    values = jnp.where(enough, values, jnp.zeros((), values.dtype))
    answered = jnp.full((self.num_queries,), enough)
    return base.Decoded(values, answered)

  def robust_decode(self, outputs: ArrayLike, mask: ArrayLike) -> robust.RobustDecoded:
    """Locates up to E wrong outputs among the available ones, then fits the rest.

    ``robust.robust_polyfit`` of degree R0 - 1 from the worker points to the
    data points, with E = ``num_adversaries`` (E = 0: a consistency check only).
    With at most E wrong outputs among A >= R0 + 2E returned, the values
    equal the plain decode with the wrong workers absent; beyond, nothing is
    answered where the inconsistency is detectable (docs/reliability.md).

    Args:
      outputs: (N, ...) worker outputs; stragglers' rows are never read.
      mask: (N,) bool, True where the worker returned.

    Returns:
      ``robust.RobustDecoded``: values (K, ...), answered (), rejected (N,),
      enough (), consistent (), relative_residual ().
    """
    self.check_mask(mask)
    return robust.robust_polyfit(
        self.worker_points, outputs, self.data_points, self.interpolation_threshold - 1,
        self.num_adversaries, mask, rtol=self.rtol,
    )

  def _decode_and_locate(
      self, outputs: ArrayLike, mask: ArrayLike
  ) -> tuple[base.Decoded, jax.Array]:
    """``robust_decode`` as (Decoded((K, ...), (K,) answered), (N,) bool rejected outputs)."""
    result = self.robust_decode(outputs, mask)
    answered = jnp.full((self.num_queries,), result.answered)
    return base.Decoded(result.values, answered), result.rejected
