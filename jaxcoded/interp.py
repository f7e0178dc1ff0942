"""Interpolation matrices: the linear maps that every code in jaxcoded is made of.

Encoding and decoding are both linear maps along the leading (query or worker)
axis (DESIGN.md section 3). This module builds those maps as dense matrices
from a set of *nodes* (where values are known) to a set of *targets* (where
they are wanted), optionally through the *available* nodes only:

  lagrange_matrix   polynomial of degree m-1 through the m available nodes
                    (barycentric form, Berrut & Trefethen 2004);
  polyfit_matrix    least-squares polynomial of a given degree through the
                    available nodes (equals lagrange_matrix when exactly
                    degree + 1 nodes are available);
  berrut_matrix     Berrut's rational interpolant (Berrut 1988), pole-free for
                    any number of nodes, signs alternating over the available
                    nodes in sorted order;
  apply_matrix      ``M @ values`` along the leading axis of any array.

Every matrix function is pure, jittable and differentiable. The availability
mask is an *array*, so one compiled function serves every straggler pattern.
At the Python boundary (concrete inputs) the public functions validate their
arguments and raise ``ValueError`` with a clear message; under ``jit`` the
checks that need values are skipped and an impossible request (too few
available nodes) yields NaNs rather than a silently wrong number.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxcoded import interp
  >>> nodes = interp.chebyshev_points(5)
  >>> m = interp.lagrange_matrix(nodes, jnp.array([0.3]))
  >>> float(interp.apply_matrix(m, nodes**3)[0])  # doctest: +ELLIPSIS
  0.0269...
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import linalg

__all__ = [
    "apply_matrix",
    "berrut_matrix",
    "chebyshev_points",
    "lagrange_matrix",
    "polyfit_matrix",
]


# ---------------------------------------------------------------------------
# Points.


def chebyshev_points(
    n: int, kind: int = 1, dtype: DTypeLike | None = None
) -> jax.Array:
  """Chebyshev points on [-1, 1], in increasing order.

  First kind (roots of T_n):   x_j = -cos((2j + 1) pi / (2n)),  j = 0..n-1.
  Second kind (extrema of T_{n-1}): x_j = -cos(j pi / (n - 1)),  j = 0..n-1,
  which include the end points -1 and 1 (for n = 1, the single point 0).

  Args:
    n: number of points, >= 1.
    kind: 1 or 2.
    dtype: floating dtype of the result (default: JAX's default float).

  Returns:
    Array of shape (n,).
  """
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"chebyshev_points needs an integer n >= 1, got {n!r}.")
  if kind not in (1, 2):
    raise ValueError(f"chebyshev_points: kind must be 1 or 2, got {kind!r}.")
  j = np.arange(n, dtype=np.float64)
  if kind == 1:
    x = -np.cos((2 * j + 1) * np.pi / (2 * n))
  elif n == 1:
    x = np.zeros(1)
  else:
    x = -np.cos(j * np.pi / (n - 1))
  x[np.abs(x) < 1e-15] = 0.0  # exact zero at the centre, for symmetric sets
  dtype = dtype if dtype is not None else jnp.zeros(()).dtype
  return jnp.asarray(x, dtype=dtype)


# ---------------------------------------------------------------------------
# Validation at the Python boundary.


def _is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs if x is not None)


def _check_inputs(
    nodes: ArrayLike,
    targets: ArrayLike,
    mask: ArrayLike | None,
    min_available: int = 1,
    what: str = "interpolation",
) -> None:
  """Raises ValueError for inputs that cannot describe an interpolation."""
  nodes_shape, targets_shape = jnp.shape(nodes), jnp.shape(targets)
  if len(nodes_shape) != 1 or nodes_shape[0] < 1:
    raise ValueError(f"{what}: nodes must be a non-empty 1-D array, got shape {nodes_shape}.")
  if len(targets_shape) != 1:
    raise ValueError(f"{what}: targets must be a 1-D array, got shape {targets_shape}.")
  if mask is not None and jnp.shape(mask) != nodes_shape:
    raise ValueError(
        f"{what}: mask has shape {jnp.shape(mask)} but there are {nodes_shape[0]} nodes; "
        "the mask needs one boolean per node."
    )
  if not _is_concrete(nodes, targets, mask):
    return  # Under jit: shapes only; values are checked by the caller or yield NaN.
  nodes_np = np.asarray(nodes, dtype=np.float64)
  if not np.all(np.isfinite(nodes_np)):
    raise ValueError(f"{what}: nodes must be finite, got {nodes_np}.")
  if not np.all(np.isfinite(np.asarray(targets, dtype=np.float64))):
    raise ValueError(f"{what}: targets must be finite.")
  sorted_nodes = np.sort(nodes_np)
  duplicates = sorted_nodes[1:][np.diff(sorted_nodes) == 0]
  if duplicates.size:
    raise ValueError(f"{what}: nodes must be distinct; repeated: {np.unique(duplicates)}.")
  if mask is not None:
    mask_np = np.asarray(mask)
    if mask_np.dtype != np.bool_:
      raise ValueError(f"{what}: mask must be boolean, got dtype {mask_np.dtype}.")
    available = int(mask_np.sum())
  else:
    available = nodes_np.shape[0]
  if available < min_available:
    raise ValueError(
        f"{what}: needs at least {min_available} available node(s), "
        f"but only {available} of {nodes_np.shape[0]} are available."
    )


def _as_float(nodes: ArrayLike, targets: ArrayLike) -> tuple[jax.Array, jax.Array]:
  dtype = jnp.result_type(nodes, targets)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.zeros(()).dtype
  return jnp.asarray(nodes, dtype), jnp.asarray(targets, dtype)


def _full_mask(nodes: jax.Array, mask: ArrayLike | None) -> jax.Array:
  if mask is None:
    return jnp.ones(nodes.shape, dtype=bool)
  return jnp.asarray(mask, dtype=bool)


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
  _check_inputs(nodes, targets, mask, what="lagrange_matrix")
  nodes, targets = _as_float(nodes, targets)
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
  _check_inputs(nodes, targets, mask, what="berrut_matrix")
  nodes, targets = _as_float(nodes, targets)
  return _berrut_matrix(nodes, targets, _full_mask(nodes, mask))


# ---------------------------------------------------------------------------
# Least-squares polynomial fit.


def _chebyshev_vandermonde(x: jax.Array, degree: int) -> jax.Array:
  """(len(x), degree + 1) matrix of T_0(x) .. T_degree(x) by the three-term recurrence."""
  columns = [jnp.ones_like(x)]
  if degree >= 1:
    columns.append(x)
  for _ in range(2, degree + 1):
    columns.append(2 * x * columns[-1] - columns[-2])
  return jnp.stack(columns, axis=-1)


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
  if not isinstance(degree, (int, np.integer)) or degree < 0:
    raise ValueError(f"polyfit_matrix: degree must be an integer >= 0, got {degree!r}.")
  _check_inputs(nodes, targets, mask, min_available=degree + 1, what="polyfit_matrix")
  nodes, targets = _as_float(nodes, targets)
  if nodes.shape[0] < degree + 1:
    raise ValueError(
        f"polyfit_matrix: a degree-{degree} fit needs at least {degree + 1} nodes, "
        f"got {nodes.shape[0]}."
    )
  return _polyfit_matrix(nodes, targets, _full_mask(nodes, mask), int(degree))


# ---------------------------------------------------------------------------
# Applying a matrix along the leading axis.


def apply_matrix(matrix: ArrayLike, values: ArrayLike) -> jax.Array:
  """Applies a (T, N) coding matrix along the leading axis of ``values``.

  ``out[t, ...] = sum_n matrix[t, n] * values[n, ...]`` for values of any
  trailing shape (images, logits, feature maps). Rows of ``values`` whose
  column in ``matrix`` is zero (unavailable workers) cannot reach the result,
  even if they hold NaN or inf: they are replaced by zeros before the product.

  Args:
    matrix: (T, N) matrix; a leading batch axis (B, T, N) is also accepted
      with values (B, N, ...).
    values: (N, ...) values, or (B, N, ...) with a batched matrix.

  Returns:
    (T, ...) array (or (B, T, ...)).
  """
  matrix, values = jnp.asarray(matrix), jnp.asarray(values)
  batched = matrix.ndim == 3
  lead = values.shape[: 1 + batched]
  if matrix.ndim not in (2, 3) or lead != matrix.shape[:-2] + matrix.shape[-1:]:
    raise ValueError(
        f"apply_matrix: matrix of shape {matrix.shape} cannot act on values of shape "
        f"{values.shape}; the matrix's last axis must match the values' leading axis."
    )
  # A zero column must silence its row completely: 0 * NaN would be NaN.
  used = jnp.any(matrix != 0, axis=-2)
  used = used.reshape(used.shape + (1,) * (values.ndim - used.ndim))
  values = jnp.where(used, values, jnp.zeros((), values.dtype))
  dtype = jnp.result_type(matrix, values)
  spec = "btn,bn...->bt..." if batched else "tn,n...->t..."
  return jnp.einsum(spec, matrix.astype(dtype), values.astype(dtype))
