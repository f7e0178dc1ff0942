"""Cubic smoothing splines (LeTCC, NeRCC): the smoother matrix from nodes to targets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import linalg
from jaxcoded.interp._checks import _check_inputs, _full_mask

# ---------------------------------------------------------------------------
# Cubic smoothing splines (LeTCC, NeRCC).

__all__ = ["check_smoothing", "smoothing_spline_matrix"]


def check_smoothing(smoothing: ArrayLike, what: str, name: str = "smoothing") -> None:
  """Raises ValueError unless ``smoothing`` is a real scalar in [0, inf].

  Under jit only the static checks (shape, dtype) run; a negative traced
  value yields NaN. ``what`` and ``name`` say whose argument it is in the
  message ("SplineCode: decoder_smoothing must be ...").
  """
  if isinstance(smoothing, jax.core.Tracer):
    shape, dtype, value = smoothing.shape, smoothing.dtype, None
  else:
    try:
      value = np.asarray(smoothing)
    except (TypeError, ValueError) as error:
      raise ValueError(f"{what}: {name} must be a real number, got {smoothing!r}.") from error
    shape, dtype = value.shape, value.dtype
  if shape != ():
    raise ValueError(f"{what}: {name} must be a scalar, got shape {shape}.")
  if dtype == np.bool_ or not (
      jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
  ):
    raise ValueError(f"{what}: {name} must be a real number, got dtype {dtype}.")
  if value is None:
    return
  number = float(value)
  if np.isnan(number) or number < 0:
    raise ValueError(
        f"{what}: {name} must be >= 0 (0 interpolates, inf fits a straight line), got {number}."
    )


def _spline_rows(
    knots: jax.Array, targets: jax.Array, smoothing: jax.Array, count: jax.Array
) -> jax.Array:
  """The smoothing-spline matrix through the first ``count`` >= 2 of N >= 2 knots.

  ``knots[:count]`` are the available nodes in increasing order; the other
  N - count are padding (increasing, beyond the last available one) and get
  identity rows, so one shape serves every count. Unknowns: the values g (N)
  at the knots and u (N - 2), the second derivatives at the interior knots
  times 1 + lam (lam the rescaled smoothing). With alpha = 1 / (1 + lam) and
  beta = lam / (1 + lam), the optimality conditions of the Reinsch
  formulation (Green & Silverman 1994, sections 2.1-2.3) read

    g + beta Q u = y        (fit against curvature; unit weights),
    Q^T g - alpha R u = 0   (g is the natural cubic spline with these values),

  with Q (N, N - 2) the second-difference matrix and R (N - 2, N - 2) the
  tridiagonal Gram matrix of the active knots. This bordered system is
  nonsingular for every lam in [0, inf] (lam = 0: interpolation; lam = inf:
  the least-squares line), and, unlike a Reinsch system with zero weights
  for unavailable nodes, it never involves them: only the available nodes
  are knots, so masking costs no accuracy.
  """
  n = knots.shape[0]
  dtype = knots.dtype
  h = jnp.diff(knots)  # (N - 1,) > 0
  inner = jnp.arange(n - 2)
  active = inner < count - 2  # interior knot j + 1 is an available one
  # Q[i, j] for interior knot j + 1: 1/h_j, -1/h_j - 1/h_{j+1}, 1/h_{j+1} at rows j, j+1, j+2.
  rows = jnp.arange(n)[:, None]
  cols = inner[None, :]
  inv_left, inv_right = 1.0 / h[:-1], 1.0 / h[1:]
  q = (
      jnp.where(rows == cols, inv_left, 0.0)
      + jnp.where(rows == cols + 1, -inv_left - inv_right, 0.0)
      + jnp.where(rows == cols + 2, inv_right, 0.0)
  )
  q = jnp.where(active[None, :], q, 0.0)
  same = inner[:, None] == inner[None, :]
  r = (
      jnp.where(same, (h[:-1] + h[1:])[:, None] / 3, 0.0)
      + jnp.where(inner[:, None] + 1 == inner[None, :], h[1:, None] / 6, 0.0)
      + jnp.where(inner[:, None] == inner[None, :] + 1, h[None, 1:] / 6, 0.0)
  )
  r = jnp.where(active[:, None] & active[None, :], r, 0.0)
  alpha = 1.0 / (1.0 + smoothing)  # inf -> 0
  # Not 1 - alpha, which loses all digits of a small lam; inf -> 1 (double where).
  finite = jnp.isfinite(smoothing)
  safe = jnp.where(finite, smoothing, 0.0)
  beta = jnp.where(finite, safe / (1.0 + safe), 1.0)
  top = jnp.concatenate([jnp.eye(n, dtype=dtype), beta * q], axis=1)
  padding = jnp.diag((~active).astype(dtype))  # u_j = 0 for padded interior knots
  bottom = jnp.concatenate([q.T, padding - alpha * r], axis=1)
  system = jnp.concatenate([top, bottom], axis=0)  # (2N - 2, 2N - 2)

  # Evaluation rows: the spline at z from knot values and second derivatives
  # (second derivatives 0 at both end knots), linear beyond them.
  index = jnp.clip(jnp.searchsorted(knots, targets, side="right") - 1, 0, count - 2)
  left, width = knots[index], h[index]
  b = (targets - left) / width
  a = 1.0 - b
  inside = (b >= 0) & (b <= 1)
  curve_lo = jnp.where(inside, a**3 - a, jnp.where(b < 0, 0.0, -a)) * width**2 / 6
  curve_hi = jnp.where(inside, b**3 - b, jnp.where(b < 0, -b, 0.0)) * width**2 / 6
  lo = jax.nn.one_hot(index, n, dtype=dtype)
  hi = jax.nn.one_hot(index + 1, n, dtype=dtype)
  value_coeffs = a[:, None] * lo + b[:, None] * hi
  curve_coeffs = curve_lo[:, None] * lo + curve_hi[:, None] * hi  # on M_0 .. M_{N-1}
  evaluate = jnp.concatenate([value_coeffs, alpha * curve_coeffs[:, 1:-1]], axis=1)
  # An end knot's second derivative is 0: drop the coefficient on M_{count - 1}.
  end = jnp.concatenate([jnp.zeros(n, bool), inner == count - 2])
  evaluate = jnp.where(end[None, :], 0.0, evaluate)

  # evaluate @ inv(system) @ [I; 0], by QR in plain XLA (jaxcoded.linalg), after
  # equilibrating rows and columns (entries range over 1, 1/h and h).
  row_scale = 1.0 / jnp.max(jnp.abs(system), axis=1)
  col_scale = 1.0 / jnp.max(jnp.abs(system * row_scale[:, None]), axis=0)
  row_scale, col_scale = jax.lax.stop_gradient((row_scale, col_scale))
  system = system * row_scale[:, None] * col_scale[None, :]
  solved = _solve_transposed(system, (evaluate * col_scale[None, :]).T)  # system^-T evaluate^T
  matrix = solved[:n].T * row_scale[None, :n]
  return jnp.where(jnp.arange(n)[None, :] < count, matrix, 0.0)


def _solve_transposed(system: jax.Array, rhs: jax.Array) -> jax.Array:
  """system^-T @ rhs by one Householder QR of system, differentiated implicitly.

  ``lax.custom_linear_solve`` differentiates through the linear system
  (d x = -A^-T dA^T x, solved with the same factors), not through the QR's
  loop, which keeps gradients cheap to compile and run.
  """
  q, r = linalg.householder_qr(jax.lax.stop_gradient(system))
  flip = jnp.flip(jnp.eye(r.shape[0], dtype=r.dtype), axis=0)
  r_flipped = flip @ r.T @ flip  # upper triangular

  def solve_transposed(_, b):  # A^T x = b: x = Q R^-T b
    return q @ linalg.solve_upper_triangular_right(r, b.T).T

  def solve(_, b):  # A x = b: R x = Q^T b, via the flipped (upper) system
    c = q.T @ b
    return (linalg.solve_upper_triangular_right(r_flipped, c.T @ flip) @ flip).T

  return jax.lax.custom_linear_solve(
      lambda x: system.T @ x, rhs, solve_transposed, transpose_solve=solve
  )


@jax.jit
def _smoothing_spline_matrix(nodes, targets, smoothing, mask):
  n = nodes.shape[0]
  count = jnp.sum(mask)
  # Fewer than two available nodes: the constant through the one value (the
  # one-hot row of that node), or zeros when none is available.
  fallback = jnp.broadcast_to(mask.astype(nodes.dtype), (targets.shape[0], n))
  if n < 2:
    return fallback
  # Compact: the available nodes first, in increasing order (any input order is
  # accepted), then the others; the permutation carries no gradient.
  enough = count >= 2
  safe_mask = jnp.where(enough, mask, True)  # the discarded branch stays finite
  safe_count = jnp.where(enough, count, n)
  order = jnp.argsort(jnp.where(safe_mask, nodes, jnp.inf), stable=True)
  compact = nodes[order]
  # Affine map onto [-1, 1] for conditioning; g(x) = G((x - c) / s) turns the
  # penalty lam * int g''^2 dx into (lam / s^3) * int G''^2 dt. The result does
  # not depend on (c, s), so they carry no gradient either.
  lo, hi = jnp.min(nodes), jnp.max(nodes)
  centre = jax.lax.stop_gradient((hi + lo) / 2)
  scale = jax.lax.stop_gradient((hi - lo) / 2)
  knots = (compact - centre) / scale
  # Padding knots 1, 2, ... beyond the last available one keep every interval positive.
  position = jnp.arange(n)
  last = knots[safe_count - 1]
  knots = jnp.where(position < safe_count, knots, last + (position - safe_count + 1))
  rows = _spline_rows(knots, (targets - centre) / scale, smoothing / scale**3, safe_count)
  rows = jnp.zeros_like(rows).at[:, order].set(rows)  # back to the caller's node order
  rows = jnp.where(enough, rows, fallback)
  return jnp.where(smoothing >= 0, rows, jnp.nan)


def smoothing_spline_matrix(
    nodes: ArrayLike,
    targets: ArrayLike,
    smoothing: ArrayLike,
    mask: ArrayLike | None = None,
) -> jax.Array:
  r"""Cubic smoothing-spline matrix through the available nodes.

  ``smoothing_spline_matrix(x, z, lam, mask) @ y`` evaluates at z the function
  g minimising

    sum over available j of (y_j - g(x_j))^2  +  lam * integral g''(t)^2 dt,

  which is the natural cubic spline with knots at the available nodes (cubic
  between them, linear beyond the outermost ones; Reinsch 1967, Green &
  Silverman 1994). ``lam`` is exactly the ``lam`` of
  ``scipy.interpolate.make_smoothing_spline`` with unit weights, so the two
  agree on [min, max] of the available nodes; outside it scipy's B-spline
  continues the end cubic pieces while this matrix extends linearly (the
  minimiser over all functions, and what keeps masking exact there).

  - ``lam = 0``: the natural cubic interpolating spline through the available
    (x_j, y_j) (``scipy.interpolate.CubicSpline(bc_type="natural")`` inside
    the nodes' range); ``lam -> 0`` tends to it.
  - ``lam = inf``: the least-squares straight line through the available values.
  - Straight lines (``y = c0 + c1 x``) are reproduced exactly for every ``lam``.
  - One available node: the constant through its value (any line through it
    minimises the objective; the constant is the choice made here). None
    available: the zero matrix.

  Columns of unavailable nodes are zero, so their values never reach the
  result, and the masked matrix equals the one computed on the available
  nodes alone: a stable sort moves the available nodes to the front (in
  increasing order) and the rest become padding with identity rows, so only
  available nodes are knots and one compiled function serves every mask and
  every ``lam``. The solve is a bordered (saddle-point) form of the Reinsch
  system, nonsingular for every ``lam`` in [0, inf], by a plain-XLA QR
  (``jaxcoded.linalg``) after row and column equilibration, differentiated
  implicitly (``lax.custom_linear_solve``); cost O(N^3) for N nodes, which is
  negligible for the group sizes of coded computing. Differentiable with
  respect to values, nodes, targets and ``lam``.

  Args:
    nodes: (N,) distinct finite nodes, in any order.
    targets: (T,) points to evaluate at.
    smoothing: lam >= 0, a scalar (``inf`` allowed). Scale: for nodes spread
      over [-1, 1], smoothing starts to matter around lam ~ h^3 for node
      spacing h; the penalty grows like s^-3 if the nodes are scaled by s.
    mask: optional (N,) boolean availability; None means all available.

  Returns:
    (T, N) matrix in the floating dtype of the nodes and targets. Under jit,
    a negative ``smoothing`` gives NaN.

  Raises:
    ValueError: bad shapes, duplicate or non-finite nodes, non-finite targets,
      a smoothing that is not a scalar >= 0, a mask that is not (N,) boolean.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxcoded import interp
    >>> x = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    >>> m = interp.smoothing_spline_matrix(x, jnp.array([0.25]), 0.0)
    >>> round(float((m @ (2 * x + 1))[0]), 6)  # lines are reproduced
    1.5

  References:
    P. Moradi, B. Tahmasebi, M. A. Maddah-Ali, "Coded Computing for Resilient
    Distributed Computing: A Learning-Theoretic Framework", NeurIPS 2024
    (arXiv:2406.00300); P. Moradi, M. A. Maddah-Ali, "NeRCC: Nested-Regression
    Coded Computing for Resilient Distributed Prediction Serving Systems"
    (arXiv:2402.04377); P. J. Green, B. W. Silverman, "Nonparametric
    Regression and Generalized Linear Models", 1994, chapter 2.
  """
  what = "smoothing_spline_matrix"
  nodes, targets, mask = _check_inputs(nodes, targets, mask, min_available=0, what=what)
  check_smoothing(smoothing, what)
  smoothing = jnp.asarray(smoothing, dtype=nodes.dtype)
  return _smoothing_spline_matrix(nodes, targets, smoothing, _full_mask(nodes, mask))
