"""Interpolation matrices from nodes to targets: Lagrange (barycentric), Berrut, least squares."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcoded import linalg, validation

__all__ = ["berrut_matrix", "lagrange_matrix", "polyfit_matrix"]
from jaxcoded.interp._checks import _check_inputs, _full_mask

# ---------------------------------------------------------------------------
# Barycentric machinery shared by Lagrange and Berrut.


def _barycentric_rows(
    weights: jax.Array, nodes: jax.Array, targets: jax.Array, mask: jax.Array
) -> jax.Array:
  """Rows L[t, j] = (w_j / (z_t - x_j)) / sum_k (w_k / (z_t - x_k)) over available j.

  A target that coincides with an available node gets the unit row of that
  node. The double-``where`` keeps gradients finite there: the division never
  sees a zero, even in the branch that is discarded. (At such a target the
  gradient with respect to the target is that of the constant unit row, zero,
  not the derivative of the basis function.)
  """
  diff = targets[:, None] - nodes[None, :]  # (T, N)
  hit = (diff == 0) & mask[None, :]
  # Every zero is replaced, also at unavailable nodes: their discarded w / 0
  # would otherwise turn reverse-mode gradients into 0 * inf = NaN.
  safe_diff = jnp.where(diff == 0, 1.0, diff)
  terms = jnp.where(mask[None, :], weights[None, :] / safe_diff, 0.0)
  rows = terms / jnp.sum(terms, axis=1, keepdims=True)
  any_hit = jnp.any(hit, axis=1, keepdims=True)
  safe_rows = jnp.where(any_hit, 0.0, rows)
  return jnp.where(any_hit, hit.astype(rows.dtype), safe_rows)


def _lagrange_weights(nodes: jax.Array, mask: jax.Array) -> jax.Array:
  """Barycentric weights 1 / prod_{k != j, available} (x_j - x_k), rescaled.

  Computed in log space and scaled so the largest available weight has
  magnitude 1: the raw products over- or underflow float32 beyond ~100 nodes,
  and the barycentric formula is invariant to a common scale.
  """
  n = nodes.shape[0]
  diff = nodes[:, None] - nodes[None, :]
  other = mask[None, :] & ~jnp.eye(n, dtype=bool)
  safe_abs = jnp.where(other, jnp.abs(diff), 1.0)
  log_abs = -jnp.sum(jnp.log(safe_abs), axis=1)
  num_negative = jnp.sum(other & (diff < 0), axis=1)
  sign = 1.0 - 2.0 * (num_negative % 2).astype(nodes.dtype)
  top = jnp.max(jnp.where(mask, log_abs, -jnp.inf))
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  return jnp.where(mask, sign * jnp.exp(log_abs - top), 0.0)


@jax.jit
def _lagrange_matrix(nodes, targets, mask):
  weights = _lagrange_weights(nodes, mask)
  rows = _barycentric_rows(weights, nodes, targets, mask)
  enough = jnp.any(mask)
  return jnp.where(enough, rows, jnp.nan)


def lagrange_matrix(
    nodes: ArrayLike, targets: ArrayLike, mask: ArrayLike | None = None
) -> jax.Array:
  """Lagrange interpolation matrix through the available nodes.

  Row t holds the values at ``targets[t]`` of the Lagrange basis polynomials of
  the m available nodes (degree m - 1); columns of unavailable nodes are zero.
  So ``lagrange_matrix(x, z, mask) @ f(x)`` evaluates at z the unique
  polynomial of degree m - 1 through the available (x_j, f(x_j)), and never
  reads a value at an unavailable node. Uses the barycentric formula of the
  second kind, which is numerically stable for well-spread nodes (Higham 2004).

  Args:
    nodes: (N,) distinct finite nodes.
    targets: (T,) points to evaluate at.
    mask: optional (N,) boolean availability; None means all available.

  Returns:
    (T, N) matrix in the floating dtype of the inputs.

  Raises:
    ValueError: bad shapes, duplicate or non-finite nodes, no available node.
  """
  nodes, targets, mask = _check_inputs(nodes, targets, mask, what="lagrange_matrix")
  return _lagrange_matrix(nodes, targets, _full_mask(nodes, mask))


# ---------------------------------------------------------------------------
# Berrut's rational interpolant.


@jax.jit
def _berrut_matrix(nodes, targets, mask):
  rank = jnp.sum(mask[None, :] & (nodes[None, :] < nodes[:, None]), axis=1)
  signs = jnp.where(mask, 1.0 - 2.0 * (rank % 2).astype(nodes.dtype), 0.0)
  rows = _barycentric_rows(signs, nodes, targets, mask)
  return jnp.where(jnp.any(mask), rows, jnp.nan)


def berrut_matrix(
    nodes: ArrayLike, targets: ArrayLike, mask: ArrayLike | None = None
) -> jax.Array:
  """Berrut's rational interpolation matrix through the available nodes.

  r(z) = sum_j w_j(z) f_j with w_j(z) = ((-1)^i_j / (z - x_j)) / sum_k ((-1)^i_k / (z - x_k)),
  where i_j is the rank of node j among the *available* nodes in increasing
  order (Berrut 1988; used for coding by BACC and ApproxIFER). The interpolant
  has no real poles for any number of nodes, so it decodes from any non-empty
  subset; it reproduces f exactly only at the nodes (and constants anywhere).

  Args:
    nodes: (N,) distinct finite nodes.
    targets: (T,) points to evaluate at.
    mask: optional (N,) boolean availability; None means all available.

  Returns:
    (T, N) matrix; columns of unavailable nodes are zero.
  """
  nodes, targets, mask = _check_inputs(nodes, targets, mask, what="berrut_matrix")
  return _berrut_matrix(nodes, targets, _full_mask(nodes, mask))


# ---------------------------------------------------------------------------
# Least-squares polynomial fit.


def _chebyshev_vandermonde(x: jax.Array, degree: int) -> jax.Array:
  """(len(x), degree + 1) matrix of T_0(x) .. T_degree(x) by the three-term recurrence.

  The recurrence runs in a ``lax.scan``: written as a Python loop, XLA fuses
  the d steps into one expression and its compile time grows about
  quadratically with d (measured on CPU: 2.4 s at d = 31, 31 s at d = 255 for
  this function alone, about 95 s for an LCC decode at N = 512, d = 255). The
  scan compiles in constant time and computes the same values.
  """
  ones = jnp.ones_like(x)
  if degree == 0:
    return ones[..., None]

  def step(carry, _):
    previous, current = carry
    following = 2 * x * current - previous
    return (current, following), following

  _, higher = jax.lax.scan(step, (ones, x), None, length=degree - 1)  # (d - 1, len(x))
  columns = jnp.concatenate([ones[None], x[None], higher], axis=0)
  return jnp.moveaxis(columns, 0, -1)


@functools.partial(jax.jit, static_argnames="degree")
def _polyfit_matrix(nodes, targets, mask, degree):
  # Map all points affinely into [-1, 1] and use the Chebyshev basis: the same
  # polynomial space as monomials, but a well-conditioned design matrix.
  points = jnp.concatenate([nodes, targets])
  lo = jax.lax.stop_gradient(jnp.min(points))
  hi = jax.lax.stop_gradient(jnp.max(points))
  centre, half_width = (hi + lo) / 2, jnp.maximum((hi - lo) / 2, jnp.finfo(nodes.dtype).tiny)
  design = _chebyshev_vandermonde((nodes - centre) / half_width, degree)
  design = jnp.where(mask[:, None], design, 0.0)  # unavailable rows carry no information
  evaluate = _chebyshev_vandermonde((targets - centre) / half_width, degree)
  # Least squares by QR: evaluate @ pinv(design) = (evaluate @ R^-1) @ Q^T. The QR
  # and the solve are plain XLA operations, not LAPACK calls (see jaxcoded.linalg).
  q, r = linalg.householder_qr(design)
  matrix = linalg.solve_upper_triangular_right(r, evaluate) @ q.T
  matrix = jnp.where(mask[None, :], matrix, 0.0)
  enough = jnp.sum(mask) >= degree + 1
  return jnp.where(enough, matrix, jnp.nan)


def _check_fit_inputs(degree, nodes, targets, mask, what: str):
  """The degree, and the inputs of a degree-d least-squares fit, checked (ValueError)."""
  degree = validation.check_integer(degree, "degree", 0, what=what)
  nodes, targets, mask = _check_inputs(nodes, targets, mask, min_available=degree + 1, what=what)
  if nodes.shape[0] < degree + 1:
    raise ValueError(
        f"{what}: a degree-{degree} fit needs at least {degree + 1} nodes, got {nodes.shape[0]}."
    )
  return degree, nodes, targets, mask


def polyfit_matrix(
    nodes: ArrayLike,
    targets: ArrayLike,
    degree: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
  """Least-squares polynomial fit of a given degree, as a matrix.

  ``polyfit_matrix(x, z, d, mask) @ y`` fits the polynomial p of degree <= d
  minimising sum over available j of (p(x_j) - y_j)^2 and evaluates it at z.
  With exactly d + 1 available nodes the fit interpolates and the matrix equals
  ``lagrange_matrix(x, z, mask)``; with more, it averages out noise (as in LCC
  decoding when more than R workers return).

  Args:
    nodes: (N,) distinct finite nodes.
    targets: (T,) points to evaluate at.
    degree: polynomial degree d >= 0 (static: it fixes shapes).
    mask: optional (N,) boolean availability.

  Returns:
    (T, N) matrix; columns of unavailable nodes are zero. Under jit, NaN if
    fewer than d + 1 nodes are available.

  Raises:
    ValueError: bad inputs, or fewer than degree + 1 available nodes.
  """
  degree, nodes, targets, mask = _check_fit_inputs(degree, nodes, targets, mask, "polyfit_matrix")
  return _polyfit_matrix(nodes, targets, _full_mask(nodes, mask), int(degree))
