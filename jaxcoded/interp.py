"""Interpolation matrices: the linear maps that every code in jaxcoded is made of.

Encoding and decoding are both linear maps along the leading (query or worker)
axis (docs/design.md section 3). This module builds those maps as dense matrices
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
  apply_matrix      ``M @ values`` along the leading axis of any array, one
                    GEMM over the flattened trailing axes (also under vmap).

and the decoders that give ``apply_matrix(*_matrix(...), values)`` without a
matrix per mask: ``lagrange_interpolate``, ``berrut_interpolate``,
``polyfit_interpolate``.

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
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import linalg, validation

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
  n = validation.check_integer(
      n, "n", 1, message=f"chebyshev_points needs an integer n >= 1, got {n!r}."
  )
  validation.check_float_dtype(dtype, "chebyshev_points")
  if not validation.is_integer(kind) or kind not in (1, 2):
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
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """(nodes, targets, mask) checked, in one floating dtype; ValueError if they cannot interpolate.

  Nodes and targets go through ``validation.as_points`` (real numbers, 1-D,
  finite; nodes non-empty and distinct), the mask through
  ``validation.as_mask`` (bool array-likes of one entry per node), the same
  checks as every scheme's points and masks. Under jit only the static
  checks run; values are checked by the caller or yield NaN.
  """
  concrete = _is_concrete(nodes, targets, mask)
  given_mask = mask
  nodes = validation.as_points(nodes, "nodes", what)
  targets = validation.as_points(targets, "targets", what, distinct=False, allow_empty=True)
  dtype = jnp.result_type(nodes, targets)
  nodes, targets = nodes.astype(dtype), targets.astype(dtype)
  if mask is not None:
    mask = validation.as_mask(mask, nodes.shape[0], what, unit="node")
  if not concrete:
    return nodes, targets, mask
  available = nodes.shape[0] if mask is None else int(np.asarray(given_mask).sum())
  if available < min_available:
    raise ValueError(
        f"{what}: needs at least {min_available} available node(s), "
        f"but only {available} of {nodes.shape[0]} are available."
    )
  return nodes, targets, mask


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


# ---------------------------------------------------------------------------
# Applying a matrix along the leading axis.
#
# Layout (docs/design.md section 3): values of shape (N, ...) are viewed as an
# (N, P) matrix, P the product of the trailing axes, so a coding matrix acts
# on them as one GEMM, matrix (T, N) @ values (N, P), whose operands and result
# are all row-major: XLA emits a single dot and no transposes. Batches of
# groups, as ``vmap`` over groups produces them, become one ``dot_general``
# with the group axis first as its batch dimension. A plain ``vmap`` of
# ``matrix @ values`` with one matrix for every group would not: JAX moves the
# group axis of the values into the dot's free dimensions, and XLA transposes
# the data in and out of the GEMM (6-7x slower for encoding). The product
# (``_make_product``) therefore carries its own batching rule (``jax.custom_batching.custom_vmap``)
# and its own derivative (``jax.custom_jvp``, with tangents in plain operations
# so that reverse mode can transpose them).


def _dot(matrix: jax.Array, values: jax.Array, precision=None) -> jax.Array:
  """(*B, T, N) @ (*B, N, P) -> (*B, T, P), the B axes as dot batch dimensions.

  A (T, N) matrix with batched values is broadcast over their batch axes
  when it is smaller than one batch member's (N, P) values (a small copy of
  the matrix, never of the data: encoding); a larger one is multiplied with
  all the values in one GEMM (decoding at large N).
  """
  lead = values.shape[:-2]
  if matrix.ndim == 2 and lead and matrix.size >= math.prod(values.shape[-2:]):
    # A matrix as large as a batch member's values (decoding at large N:
    # (K, N) against (N, 10) logits): broadcasting it would copy the matrix
    # once per group, a (G, T, N) array. One GEMM of the shared matrix with
    # all the values instead; XLA moves the (smaller) values and result.
    out = jax.lax.dot_general(
        matrix, values, (((1,), (values.ndim - 2,)), ((), ())), precision=precision
    )  # (T, *B, P)
    return jnp.moveaxis(out, 0, -2)
  if matrix.ndim == 2 and lead:
    matrix = jnp.broadcast_to(matrix, lead + matrix.shape)
  batch = tuple(range(matrix.ndim - 2))
  contracting = ((matrix.ndim - 1,), (values.ndim - 2,))
  return jax.lax.dot_general(matrix, values, (contracting, (batch, batch)), precision=precision)


def _used_columns(matrix: jax.Array) -> jax.Array:
  """(*B, N) bool: columns of the matrix with a nonzero entry."""
  return jnp.any(matrix != 0, axis=-2)


def _silence(values: jax.Array, used: jax.Array) -> jax.Array:
  """Rows of unused columns set to zero (0 * NaN would be NaN)."""
  return jnp.where(used[..., None], values, jnp.zeros((), values.dtype))


def _guarded_dot(matrix: jax.Array, values: jax.Array) -> jax.Array:
  """``_dot`` that never reads the rows of the values whose column is unused.

  Values are masked only when some column is unused: ``lax.cond`` skips that
  extra pass over the data when every column is used (encoding matrices),
  and the predicate of a matrix shared by all groups stays unbatched.
  """
  used = _used_columns(matrix)
  plain = lambda m, v, u: _dot(m, v)
  masked = lambda m, v, u: _dot(m, _silence(v, u))
  return jax.lax.cond(jnp.all(used), plain, masked, matrix, values, used)


def _make_product(guard: bool, precision=None):
  """matrix (*B, T, N) or (T, N) times values (*B, N, P), fast under vmap.

  With ``guard``, rows of the values whose column is unused are never read
  (``apply_matrix``'s contract); without, the plain product (for operands
  known to be finite). ``precision`` is passed to every dot (the decoders'
  internal sums ask for HIGHEST: on GPUs the default float32 dot rounds its
  inputs to TF32, and barycentric sums cancel).
  """
  if guard:
    core = _guarded_dot
  else:
    core = functools.partial(_dot, precision=precision)

  @jax.custom_batching.custom_vmap
  def product(matrix, values):
    return core(matrix, values)

  @product.def_vmap
  def product_batched(axis_size, in_batched, matrix, values):
    matrix_batched, values_batched = in_batched
    matrix_inner = matrix.shape[int(matrix_batched) : -2]  # batch axes of enclosing vmaps
    values_inner = values.shape[int(values_batched) : -2]
    if not values_batched and not values_inner:
      # Many matrices, one (N, P) set of values: a single GEMM (G T, N) @ (N, P)
      # (when guarded: if every group uses every row of the values; else a
      # batched dot that silences each group's unused rows).
      def one_gemm(m, v):
        flat = jnp.matmul(m.reshape(-1, m.shape[-1]), v, precision=precision)
        return flat.reshape(m.shape[:-1] + v.shape[-1:])

      if not guard:
        return one_gemm(matrix, values), True

      def per_group(m, v):
        return product(m, jnp.broadcast_to(v, m.shape[:-2] + v.shape))

      every_row = jnp.all(_used_columns(matrix))
      return jax.lax.cond(every_row, one_gemm, per_group, matrix, values), True
    if not matrix_batched and not matrix_inner:  # one matrix for every group
      if not values_batched:
        values = jnp.broadcast_to(values, (axis_size,) + values.shape)
      return product(matrix, values), True
    # One matrix per group: both operands to (G, *inner, ...), then recurse, so
    # that an outer vmap reaches this rule again instead of JAX's generic one.
    inner = matrix_inner or values_inner

    def full(x, batched, x_inner):
      if not batched:
        x = x[None]
      if not x_inner:
        x = x.reshape(x.shape[:1] + (1,) * len(inner) + x.shape[1:])
      return jnp.broadcast_to(x, (axis_size, *inner) + x.shape[-2:])

    matrix = full(matrix, matrix_batched, matrix_inner)
    values = full(values, values_batched, values_inner)
    return product(matrix, values), True

  @jax.custom_jvp
  def apply(matrix, values):
    return product(matrix, values)

  @apply.defjvp
  def apply_jvp(primals, tangents):
    matrix, values = primals
    matrix_dot, values_dot = tangents
    if guard:
      used = _used_columns(matrix)
      values, values_dot = _silence(values, used), _silence(values_dot, used)
    # Plain, transposable operations: d(M V) = dM V + M dV. The primal through
    # ``apply`` itself, so that the rule can be differentiated again.
    tangent = (jnp.matmul(matrix_dot, values, precision=precision)
               + jnp.matmul(matrix, values_dot, precision=precision))
    return apply(*primals), tangent

  return apply


_apply = _make_product(guard=True)
# For the decoders' own sums of finite terms, at full float32 precision.
_apply_unguarded = _make_product(guard=False, precision=jax.lax.Precision.HIGHEST)


def apply_matrix(matrix: ArrayLike, values: ArrayLike) -> jax.Array:
  """Applies a (T, N) coding matrix along the leading axis of ``values``.

  ``out[t, ...] = sum_n matrix[t, n] * values[n, ...]`` for values of any
  trailing shape (images, logits, feature maps). Rows of ``values`` whose
  column in ``matrix`` is zero (unavailable workers) cannot reach the result,
  even if they hold NaN or inf: they are replaced by zeros before the product.

  The values are viewed as an (N, P) matrix (P the product of the trailing
  axes) and multiplied as one GEMM; under ``vmap`` over groups, with one
  matrix for all groups (encoding) or one per group (decoding), the product
  stays one ``dot_general`` with the group axis as its leading batch axis, so
  XLA moves no data in or out of it (tests/test_layout.py checks the HLO).

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
  dtype = jnp.result_type(matrix, values)
  trailing = values.shape[1 + batched :]
  flat = values.astype(dtype).reshape(lead + (math.prod(trailing),))
  out = _apply(matrix.astype(dtype), flat)
  return out.reshape(matrix.shape[:-1] + trailing)


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

__all__ += ["berrut_interpolate", "lagrange_interpolate", "polyfit_interpolate"]


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


# ---------------------------------------------------------------------------
# Cubic smoothing splines (LeTCC, NeRCC).

__all__ += ["check_smoothing", "smoothing_spline_matrix"]


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
