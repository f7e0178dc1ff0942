"""Applying a coding matrix along the leading axis as one GEMM (also under vmap)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["apply_matrix"]

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


def _make_product(guard: bool, precision=None, shared_multiply_add: bool = True):
  """matrix (*B, T, N) or (T, N) times values (*B, N, P), fast under vmap.

  With ``guard``, rows of the values whose column is unused are never read
  (``apply_matrix``'s contract); without, the plain product (for operands
  known to be finite). ``precision`` is passed to every dot (the decoders'
  internal sums ask for HIGHEST: on GPUs the default float32 dot rounds its
  inputs to TF32, and barycentric sums cancel). With ``shared_multiply_add``,
  one matrix of few columns for a large batch is applied as multiply-adds
  (``_use_shared_multiply_add``); without, always as a dot.
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
      if shared_multiply_add and _use_shared_multiply_add(matrix.shape[-1], values.size):
        # Large batches through few columns (encoding): the multiply-adds,
        # which XLA runs on every core, instead of the batched dot (one core).
        if not guard:
          return _shared_multiply_add(matrix, values, silence=False), True
        return _guarded_shared_multiply_add(matrix, values), True
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


# ---------------------------------------------------------------------------
# Few columns, trailing axes of size 1: multiply-adds instead of a GEMM.
#
# XLA's CPU backend writes a GEMM's (..., T, P) result in its own buffer. When
# the caller's trailing shape has an axis of size 1 (images (H, W, 1), the
# shape the harness and the service encode), reshaping that result to
# (..., T, H, W, 1) is not a bitcast for XLA: it adds a full copy of the
# output after the dot (a layout {3,2,1,0,4} -> {4,3,2,1,0} copy fusion),
# which cost 1.6-8x the GEMM itself (docs/performance.md). With few columns
# (an encoding matrix has K of them), the product is instead N broadcast
# multiply-adds, out = sum_n matrix[:, n] * values[n], which XLA emits as one
# loop fusion that reads each value once and writes the result in place, in
# any layout, at the GEMM's speed. Unused columns are silenced inside the
# same fusion (a select per term) only when there are any (``lax.cond``, as
# for the GEMM); it is plain jnp arithmetic, which vmap and autodiff handle
# as they are.
_MULTIPLY_ADD_MAX_COLUMNS = 16


def _use_multiply_add(num_columns: int, trailing: tuple[int, ...]) -> bool:
  """Whether ``apply_matrix`` takes the multiply-add form (see above)."""
  return 0 < num_columns <= _MULTIPLY_ADD_MAX_COLUMNS and len(trailing) > 1 and 1 in trailing


def _multiply_add(matrix: jax.Array, values: jax.Array, silence: bool) -> jax.Array:
  """(*B, T, N) or (T, N) matrix times (*B, N, *S) values as N multiply-adds -> (*B, T, *S).

  With ``silence``, rows of the values whose column is unused are never read
  (a select per term). Terms are summed pairwise.
  """
  batch = matrix.ndim - 2
  trailing = values.ndim - 1 - batch
  used = _used_columns(matrix)  # (*B, N)
  terms = []
  for n in range(matrix.shape[-1]):
    column = matrix[..., n].reshape(matrix.shape[:-2] + (matrix.shape[-2],) + (1,) * trailing)
    row = jnp.expand_dims(values[(slice(None),) * batch + (n,)], batch)  # (*B, 1, *S)
    if silence:
      keep = used[..., n].reshape(used.shape[:-1] + (1,) * (1 + trailing))
      row = jnp.where(keep, row, jnp.zeros((), row.dtype))
    terms.append(column * row)
  while len(terms) > 1:
    terms = [a + b for a, b in zip(terms[::2], terms[1::2])] + terms[len(terms) - len(terms) % 2:]
  return terms[0]


def _guarded_multiply_add(matrix: jax.Array, values: jax.Array) -> jax.Array:
  """``_multiply_add`` that selects only when some column is unused.

  The selects cost about half the loop's time (measured 1.5-1.9x the GEMM
  with them at K = 12, 1.1-1.2x without); an encoding matrix uses every
  column, and ``lax.cond`` skips them. Under ``vmap`` with one matrix per
  group the predicate is batched and both branches run (decoding image-shaped
  outputs through few workers; no decoder of this library does).
  """
  plain = functools.partial(_multiply_add, silence=False)
  masked = functools.partial(_multiply_add, silence=True)
  return jax.lax.cond(jnp.all(_used_columns(matrix)), plain, masked, matrix, values)


# ---------------------------------------------------------------------------
# One matrix of few columns for a large batch of groups: multiply-adds.
#
# Under ``vmap`` with one matrix for every group, the product is a dot with
# the group axis as its batch dimension. XLA's CPU backend runs that batched
# dot (a YNNPACK fusion) on one thread, where the same GEMM on pre-transposed
# data, (T, N) @ (N, G P), and a loop fusion both use every core: at K = 12,
# G = 256, (32, 32, 3) queries, with buffers recycled, 5.6 ms of CPU and of
# wall time for the batched dot against 6.6 ms of CPU in 3.5 ms of wall time
# for the GEMM (docs/results/bench/encode_k12.md). Once the batch is large
# enough for the threads to pay, the product with a matrix of at most 16
# columns is therefore N broadcast multiply-adds on the flattened (*B, N, P)
# values, summed in order (one loop fusion; 4.6 ms in order against 5.0 ms
# pairwise at that size). Below that size the batched dot is as fast as the
# GEMM or faster (all in cache, no threads to start), and it stays.
_SHARED_MULTIPLY_ADD_MIN_ELEMENTS = 1 << 20


def _use_shared_multiply_add(num_columns: int, batch_values_size: int) -> bool:
  """Whether a vmapped product with one matrix for all groups takes the multiply-adds."""
  return (0 < num_columns <= _MULTIPLY_ADD_MAX_COLUMNS
          and batch_values_size >= _SHARED_MULTIPLY_ADD_MIN_ELEMENTS)


def _shared_multiply_add(matrix: jax.Array, values: jax.Array, silence: bool) -> jax.Array:
  """(T, N) matrix times (*B, N, P) values as N multiply-adds, in order -> (*B, T, P).

  With ``silence``, rows of the values whose column is unused are never read.
  """
  used = _used_columns(matrix)  # (N,)
  out = None
  for n in range(matrix.shape[-1]):
    row = values[..., n : n + 1, :]  # (*B, 1, P)
    if silence:
      row = jnp.where(used[n], row, jnp.zeros((), row.dtype))
    term = matrix[:, n : n + 1] * row  # (*B, T, P)
    out = term if out is None else out + term
  return out


def _guarded_shared_multiply_add(matrix: jax.Array, values: jax.Array) -> jax.Array:
  """``_shared_multiply_add``, silencing only when some column is unused (``lax.cond``)."""
  plain = functools.partial(_shared_multiply_add, silence=False)
  masked = functools.partial(_shared_multiply_add, silence=True)
  return jax.lax.cond(jnp.all(_used_columns(matrix)), plain, masked, matrix, values)


_apply = _make_product(guard=True)
# The dot for every size (bench/bench_interp.py's "GEMM route", and tests).
_apply_dot = _make_product(guard=True, shared_multiply_add=False)
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
  A matrix of at most 16 columns acting on values whose trailing shape has an
  axis of size 1 (images (H, W, 1)) is applied as broadcast multiply-adds in
  one loop fusion instead, which XLA writes in place where the GEMM's result
  would be copied; so is one such matrix shared by a vmapped batch of at
  least 2^20 values (encoding many groups), where XLA runs the loop on every
  core and the batched dot on one (module notes; tests/test_interp_apply.py).

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
  if _use_multiply_add(matrix.shape[-1], trailing):
    return _guarded_multiply_add(matrix.astype(dtype), values.astype(dtype))
  flat = values.astype(dtype).reshape(lead + (math.prod(trailing),))
  out = _apply(matrix.astype(dtype), flat)
  return out.reshape(matrix.shape[:-1] + trailing)
