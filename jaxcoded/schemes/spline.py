"""Smoothing-spline codes (LeTCC, Moradi, Tahmasebi & Maddah-Ali, NeurIPS 2024;
NeRCC, Moradi & Maddah-Ali 2024; docs/design.md section 4.7), stragglers only.

Encode with a cubic smoothing spline fitted to the K (data point, query)
pairs and evaluated at the N worker points; every worker runs the unchanged
model f; decode with a cubic smoothing spline fitted to the available (worker
point, output) pairs and evaluated at the data points. Both are linear maps
along the worker axis (``interp.smoothing_spline_matrix``), so the scheme is a
pair of matrices like Berrut coding (schemes/berrut.py), with two knobs: the
encoder's and the decoder's smoothing parameters.

What the papers prescribe: LeTCC bounds the decoded mean squared error by the
decoder's generalisation error plus the encoder's training error, shows that
both optimal maps in the second-order Sobolev space are smoothing splines,
and takes the smoothing parameters as functions of the number of stragglers
S (and N), which gives an error decaying like S^3 N^-3 without computation
noise; NeRCC couples the two regressions through the same two regularisation
weights and tunes them jointly. Their constants depend on f (its Sobolev
norm), which is unknown for a trained network, so this project *fits* both
values for each (K, S) on held-out data (``jaxcoded.comparison.spline_fit``:
a log grid, minimising the RMSE of decoded outputs against f(x_k) over random
masks of S stragglers) and stores them with the results.

N = K + S as in ApproxIFER, nominal R = K, but decoding works from any
non-empty subset of workers: one returned worker gives the constant through
its output, none gives zeros and ``answered = False``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp
from jaxcoded.schemes import base, points

__all__ = ["SplineCode"]



@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SplineCode(base.Scheme):
  """Smoothing-spline coding (LeTCC) with N = K + S workers.

  Attributes:
    data_points: (K,) a_k.
    worker_points: (N,) b_n.
    encoder_smoothing: scalar lam_e >= 0 of the encoder spline (through the
      queries at a_k, evaluated at b_n); 0 interpolates the queries.
    decoder_smoothing: scalar lam_d >= 0 of the decoder spline (through the
      available outputs at b_n, evaluated at a_k).

    chosen_by: how the smoothings were chosen, as (key, value) pairs
      (static, not a leaf): empty when given; ``fitted_code`` records the fit
      (held-out images, masks, RMSE). Reported by ``settings()``.

  Both smoothings are pytree leaves: one compiled pipeline serves every value,
  and they can be vmapped over or differentiated.

  The comparison's config entries (kind "spline") give both smoothings or
  fit them on held-out data (``jaxcoded.comparison.spline_fit``).
  """

  data_points: jax.Array
  worker_points: jax.Array
  encoder_smoothing: jax.Array
  decoder_smoothing: jax.Array
  chosen_by: tuple[tuple[str, Any], ...] = dataclasses.field(
      default=(), metadata=dict(static=True)
  )


  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int) -> base.SchemeSizes:
    """ApproxIFER's sizes: N = K + S, R = K (it decodes from fewer, approximately)."""
    return base.k_plus_s_sizes(num_queries, num_stragglers)

  @classmethod
  def create(
      cls,
      num_queries: int,
      num_stragglers: int,
      *,
      encoder_smoothing: ArrayLike = 0.0,
      decoder_smoothing: ArrayLike = 0.0,
      data_points: ArrayLike | None = None,
      worker_points: ArrayLike | None = None,
      dtype: DTypeLike | None = None,
  ) -> "SplineCode":
    """A spline code at the default Chebyshev points (those of BerrutCode).

    Args:
      num_queries: K >= 1.
      num_stragglers: S >= 0; N = K + S.
      encoder_smoothing: lam_e >= 0 (``comparison.spline_fit`` fits it on data).
      decoder_smoothing: lam_d >= 0.
      data_points: optional (K,) a_k.
      worker_points: optional worker points; their number sets N (>= K).
      dtype: floating dtype of the points and smoothings.

    Raises:
      ValueError: bad sizes, points or smoothing values.
    """
    sizes = cls.sizes_for(num_queries, num_stragglers)
    a, b = points.resolve_points(sizes, data_points, worker_points, dtype, "SplineCode", "R = K")
    interp.check_smoothing(encoder_smoothing, "SplineCode", "encoder_smoothing")
    interp.check_smoothing(decoder_smoothing, "SplineCode", "decoder_smoothing")
    return cls(
        data_points=a,
        worker_points=b,
        encoder_smoothing=jnp.asarray(encoder_smoothing, dtype=a.dtype),
        decoder_smoothing=jnp.asarray(decoder_smoothing, dtype=a.dtype),
    )

  def settings(self) -> dict[str, Any]:
    """The two smoothings (and, when fitted, how): stored with the results."""
    chosen = dict(encoder_smoothing=float(self.encoder_smoothing),
                  decoder_smoothing=float(self.decoder_smoothing))
    chosen.update(dict(self.chosen_by) or dict(smoothing="given"))
    return chosen

  @property
  def sizes(self) -> base.SchemeSizes:
    num_queries = self.data_points.shape[0]
    return base.SchemeSizes(num_queries, self.worker_points.shape[0], num_queries)

  def encoding_matrix(self) -> jax.Array:
    """(N, K) smoothing spline through (a_k, x_k), at b_n."""
    return interp.smoothing_spline_matrix(
        self.data_points, self.worker_points, self.encoder_smoothing
    )

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) queries -> (N, ...) coded inputs u(b_n)."""
    self.check_queries(queries)
    return interp.apply_matrix(self.encoding_matrix(), queries)

  def decoding_matrix(self, mask: ArrayLike) -> jax.Array:
    """(K, N) smoothing spline through the available workers, at a_k (zero columns elsewhere)."""
    return interp.smoothing_spline_matrix(
        self.worker_points, self.data_points, self.decoder_smoothing, mask
    )

  def _decode(self, outputs: jax.Array, mask: jax.Array) -> base.Decoded:
    """Approximate f(x_k) from any non-empty set of returned workers (non-finite rows erased)."""
    # No worker returned: the matrix is zero and apply_matrix never reads a row.
    values = interp.apply_matrix(self.decoding_matrix(mask), outputs)
    return base.Decoded(values, jnp.full((self.num_queries,), jnp.any(mask)))
