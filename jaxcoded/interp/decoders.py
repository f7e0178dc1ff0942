"""Interpolating values directly, without a masked matrix per group."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcoded import linalg
from jaxcoded.interp._checks import _check_inputs, _full_mask
from jaxcoded.interp.apply import _apply_unguarded
from jaxcoded.interp.matrices import _chebyshev_vandermonde, _check_fit_inputs

# ---------------------------------------------------------------------------
# Interpolating values directly: decoding without a masked matrix per group.
#
# ``apply_matrix(berrut_matrix(x, z, mask), y)`` builds a (T, N) matrix for
# every mask, element by element; batched over G groups with G masks that is
# a (G, T, N) array made in several passes, most of a decode's time at large N.
# The functions below give the same values from mask-independent matrices
# (shared by all groups, so that under vmap each product is one GEMM):
#
#   barycentric (Berrut, Lagrange): with C[t, n] = 1 / (z_t - x_n) and the
#     masked weights w (zero at unavailable nodes),
#       out_t = (C @ (w * y))_t / (C @ w)_t,
#     one GEMM of C with [w * y | w]. Lagrange's log-weights are
#     -log|x_j - x_k| summed over the available k: one GEMM of the masks
#     with the (N, N) matrix of log-distances, once per mask;
#   least squares (polyfit): Householder QR of the masked Chebyshev design,
#     applied to the values as it is made (``linalg.householder_lstsq``), then
#     the (T, d + 1) evaluation matrix of the targets, shared by all groups.

__all__ = ["berrut_interpolate", "lagrange_interpolate", "polyfit_interpolate"]


def _check_values(nodes: jax.Array, values: ArrayLike, what: str) -> jax.Array:
  values = jnp.asarray(values)
  if values.ndim < 1 or values.shape[0] != nodes.shape[0]:
    raise ValueError(
        f"{what}: values must have one row per node, shape ({nodes.shape[0]}, ...); got "
        f"{values.shape}."
    )
  return values


def _barycentric_apply(
    weights: jax.Array, nodes: jax.Array, targets: jax.Array, values: jax.Array, mask: jax.Array
) -> jax.Array:
  """sum_n (w_n / (z_t - x_n)) y_n / sum_n (w_n / (z_t - x_n)) for (N, P) values.

  ``weights`` are zero at unavailable nodes; their values are never read
  (NaN-safe). A target on an available node gets that node's value (the
  unit row of ``_barycentric_rows``), a target on an unavailable one the
  formula through the others; the double ``where`` keeps gradients finite.
  """
  dtype = values.dtype
  diff = targets[:, None] - nodes[None, :]  # (T, N), the same for every mask
  hit = diff == 0
  cauchy = 1.0 / jnp.where(hit, 1.0, diff)
  silenced = jnp.where(mask[:, None], values, jnp.zeros((), dtype))
  stacked = jnp.concatenate([weights[:, None] * silenced, weights[:, None]], axis=1)
  both = _apply_unguarded(jnp.where(hit, 0.0, cauchy), stacked)  # (T, P + 1)
  numerator, denominator = both[:, :-1], both[:, -1:]
  hit_rows = jnp.any(hit, axis=1)

  def with_hits(numerator, denominator):
    # Which targets sit on an available node, and its value: one more GEMM
    # of the (T, N) 0/1 matrix of coincidences.
    exact = _apply_unguarded(
        hit.astype(dtype), jnp.concatenate([silenced, mask[:, None].astype(dtype)], axis=1)
    )
    on_node = exact[:, -1:] > 0
    safe = jnp.where(on_node, 1.0, denominator)
    return jnp.where(on_node, exact[:, :-1], numerator / safe)

  def without_hits(numerator, denominator):
    return numerator / denominator

  return jax.lax.cond(jnp.any(hit_rows), with_hits, without_hits, numerator, denominator)


def _flatten(values: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
  return values.reshape(values.shape[0], math.prod(values.shape[1:])), values.shape[1:]


def _sorted_ranks(nodes: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(rank, count): rank of each node among the available ones in increasing order, and their number.

  A cumulative sum of the mask in the (mask-independent) order of the
  nodes: O(N) per mask, where comparing all pairs would make an (N, N)
  array per mask.
  """
  order = jnp.argsort(nodes)
  inverse = jnp.argsort(order)
  ranks = jnp.cumsum(mask[order].astype(jnp.int32)) - 1  # inclusive, so available ranks start at 0
  return ranks[inverse], jnp.sum(mask.astype(jnp.int32))


def _berrut_signs(nodes: jax.Array, mask: jax.Array) -> jax.Array:
  rank, _ = _sorted_ranks(nodes, mask)
  return jnp.where(mask, 1.0 - 2.0 * (rank % 2).astype(nodes.dtype), 0.0)


@jax.jit
def _berrut_interpolate(nodes, values, targets, mask):
  flat, trailing = _flatten(values)
  out = _barycentric_apply(_berrut_signs(nodes, mask), nodes, targets, flat, mask)
  out = jnp.where(jnp.any(mask), out, jnp.nan)
  return out.reshape(targets.shape + trailing)


def _values_dtype(nodes: jax.Array, values: jax.Array) -> tuple[jax.Array, jax.Array]:
  dtype = jnp.result_type(nodes, values)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = nodes.dtype
  return values.astype(dtype), dtype


def berrut_interpolate(
    nodes: ArrayLike, values: ArrayLike, targets: ArrayLike, mask: ArrayLike | None = None
) -> jax.Array:
  """Berrut's rational interpolant through the available (node, value) pairs, at targets.

  Equals ``apply_matrix(berrut_matrix(nodes, targets, mask), values)`` to
  rounding, without making the (T, N) matrix: one GEMM of the mask-free
  (T, N) matrix 1 / (z_t - x_n) with the signed values and signs (module
  notes above), which batched over groups is one GEMM for all of them.
  Values at unavailable nodes are never read (they may be NaN).

  Args:
    nodes: (N,) distinct finite nodes.
    values: (N, ...) values at the nodes, any trailing shape.
    targets: (T,) points to evaluate at.
    mask: optional (N,) boolean availability; None means all available.

  Returns:
    (T, ...) values; NaN under jit when no node is available.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxcoded import interp
    >>> x = interp.chebyshev_points(5, kind=2)
    >>> float(interp.berrut_interpolate(x, jnp.ones(5), jnp.array([0.3]))[0])
    1.0
  """
  nodes, targets, mask = _check_inputs(nodes, targets, mask, what="berrut_interpolate")
  values = _check_values(nodes, values, "berrut_interpolate")
  values, dtype = _values_dtype(nodes, values)
  nodes, targets = nodes.astype(dtype), targets.astype(dtype)
  return _berrut_interpolate(nodes, values, targets, _full_mask(nodes, mask))


def _lagrange_log_weights(nodes: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked barycentric weights for an (N,) mask, rescaled to a largest |w| of 1.

  log|w_j| = -sum_{k != j available} log|x_j - x_k|: one product of the mask
  with the mask-independent (N, N) matrix of log-distances, so a batch of
  masks (vmap) is a single GEMM, once per mask and not per target. The
  sign, (-1) to the number of available k with x_k > x_j, comes from the
  ranks (``_sorted_ranks``).
  """
  n = nodes.shape[0]
  diff = nodes[:, None] - nodes[None, :]
  other = ~jnp.eye(n, dtype=bool)
  log_distance = jnp.log(jnp.where(other, jnp.abs(diff), 1.0))  # 0 on the diagonal
  # (1, N) @ (N, N): sums over k (the rows of the symmetric log-distances).
  log_abs = -_apply_unguarded(mask.astype(nodes.dtype)[None, :], log_distance)[0]
  rank, count = _sorted_ranks(nodes, mask)
  above = count - 1 - rank
  sign = 1.0 - 2.0 * (above % 2).astype(nodes.dtype)
  top = jnp.max(jnp.where(mask, log_abs, -jnp.inf))
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  return jnp.where(mask, sign * jnp.exp(log_abs - top), 0.0)


@jax.jit
def _lagrange_interpolate(nodes, values, targets, mask):
  flat, trailing = _flatten(values)
  weights = _lagrange_log_weights(nodes, mask)
  out = _barycentric_apply(weights, nodes, targets, flat, mask)
  out = jnp.where(jnp.any(mask), out, jnp.nan)
  return out.reshape(targets.shape + trailing)


def lagrange_interpolate(
    nodes: ArrayLike, values: ArrayLike, targets: ArrayLike, mask: ArrayLike | None = None
) -> jax.Array:
  """The polynomial through the available (node, value) pairs, evaluated at targets.

  Equals ``apply_matrix(lagrange_matrix(nodes, targets, mask), values)`` to
  rounding (barycentric formula of the second kind), without the (T, N)
  matrix: the weights of the mask from one GEMM with the log-distances, the
  values from one GEMM with 1 / (z_t - x_n) (module notes above). Values at
  unavailable nodes are never read.

  Args:
    nodes: (N,) distinct finite nodes.
    values: (N, ...) values at the nodes.
    targets: (T,) points to evaluate at.
    mask: optional (N,) boolean availability; None means all available.

  Returns:
    (T, ...) values; NaN under jit when no node is available.
  """
  nodes, targets, mask = _check_inputs(nodes, targets, mask, what="lagrange_interpolate")
  values = _check_values(nodes, values, "lagrange_interpolate")
  values, dtype = _values_dtype(nodes, values)
  nodes, targets = nodes.astype(dtype), targets.astype(dtype)
  return _lagrange_interpolate(nodes, values, targets, _full_mask(nodes, mask))


@functools.partial(jax.jit, static_argnames="degree")
def _polyfit_interpolate(nodes, values, targets, mask, degree):
  flat, trailing = _flatten(values)
  points = jnp.concatenate([nodes, targets])
  lo = jax.lax.stop_gradient(jnp.min(points))
  hi = jax.lax.stop_gradient(jnp.max(points))
  centre, half_width = (hi + lo) / 2, jnp.maximum((hi - lo) / 2, jnp.finfo(nodes.dtype).tiny)
  design = _chebyshev_vandermonde((nodes - centre) / half_width, degree)
  design = jnp.where(mask[:, None], design, 0.0)
  silenced = jnp.where(mask[:, None], flat, jnp.zeros((), flat.dtype))
  coefficients = linalg.householder_lstsq(design, silenced)  # (d + 1, P)
  evaluate = _chebyshev_vandermonde((targets - centre) / half_width, degree)  # mask-free
  out = _apply_unguarded(evaluate, coefficients)
  enough = jnp.sum(mask) >= degree + 1
  return jnp.where(enough, out, jnp.nan).reshape(targets.shape + trailing)


def polyfit_interpolate(
    nodes: ArrayLike,
    values: ArrayLike,
    targets: ArrayLike,
    degree: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
  """Least-squares polynomial of a given degree through the available values, at targets.

  Equals ``apply_matrix(polyfit_matrix(nodes, targets, degree, mask), values)``
  to rounding, without the (T, N) matrix: a Householder QR of the masked
  (N, d + 1) Chebyshev design applied to the values as it is made
  (``linalg.householder_lstsq``: plain XLA, no LAPACK), then the mask-free
  (T, d + 1) Chebyshev matrix of the targets, one GEMM for a batch of
  groups. Values at unavailable nodes are never read.

  Args:
    nodes: (N,) distinct finite nodes.
    values: (N, ...) values at the nodes.
    targets: (T,) points to evaluate at.
    degree: polynomial degree d >= 0 (static).
    mask: optional (N,) boolean availability.

  Returns:
    (T, ...) values; NaN under jit when fewer than d + 1 nodes are available.

  Raises:
    ValueError: bad inputs, or fewer than degree + 1 available nodes.
  """
  degree, nodes, targets, mask = _check_fit_inputs(
      degree, nodes, targets, mask, "polyfit_interpolate")
  values = _check_values(nodes, values, "polyfit_interpolate")
  values, dtype = _values_dtype(nodes, values)
  nodes, targets = nodes.astype(dtype), targets.astype(dtype)
  return _polyfit_interpolate(nodes, values, targets, _full_mask(nodes, mask), int(degree))
