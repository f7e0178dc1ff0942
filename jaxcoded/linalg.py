"""Small dense linear algebra in plain XLA operations: thin QR and a triangular solve.

Why not ``jnp.linalg.qr`` and ``jax.scipy.linalg.solve_triangular``: on CPU
they lower to LAPACK custom calls, and jaxlib's batched LAPACK kernels split
their batch over XLA's intra-op thread pool (``ParallelBatchMap``) from a
thread of that same pool. When every thread of the pool is inside such a call
(two concurrent decodes on a 2-core machine suffice), each waits for sub-tasks
that no free thread can run, and the process hangs with all threads idle
(seen with jaxlib 0.10.2 while evaluating LCC on 1,250 Fashion-MNIST groups;
native stacks in docs/evaluation.md). Decoding batches thousands of tiny
(N <= a few dozen) least-squares problems, so a plain Householder QR here
costs nothing measurable, cannot deadlock, and matches LAPACK to rounding
(tests/test_linalg.py compares both with numpy in float64).

Every function takes matrices on the last two axes and maps over any leading
batch axes; all are differentiable (forward and reverse mode).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["householder_qr", "solve_upper_triangular_right"]


def householder_qr(a: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Thin QR decomposition by Householder reflections.

  Args:
    a: (..., M, N) matrix with M >= N, floating dtype.

  Returns:
    ``(q, r)``: q (..., M, N) with orthonormal columns and r (..., N, N) upper
    triangular, with ``q @ r == a`` to rounding. The signs of r's diagonal
    may differ from LAPACK's. A column that is zero once the earlier ones are
    projected out (a rank-deficient ``a``) gives a zero on r's diagonal.

  Raises:
    ValueError: ``a`` is not at least 2-D, or M < N.
  """
  a = jnp.asarray(a)
  if a.ndim < 2 or a.shape[-2] < a.shape[-1]:
    raise ValueError(f"householder_qr: a must be (..., M, N) with M >= N, got shape {a.shape}.")
  if not jnp.issubdtype(a.dtype, jnp.floating):
    a = a.astype(jnp.result_type(float))
  return jnp.vectorize(_householder_qr_2d, signature="(m,n)->(m,n),(n,n)")(a)


def _householder_qr_2d(a: jax.Array) -> tuple[jax.Array, jax.Array]:
  m, n = a.shape
  rows = jnp.arange(m)
  cols = jnp.arange(n)

  def reflect(j, carry):
    r, reflectors = carry
    x = jnp.where(rows >= j, r[:, j], 0.0)
    squared = jnp.sum(x * x)
    nonzero = squared > 0
    # Square roots of a guarded argument: the gradient of sqrt at 0 would turn
    # the discarded branch of the where into NaN.
    norm = jnp.sqrt(jnp.where(nonzero, squared, 1.0))
    alpha = jnp.where(r[j, j] >= 0, -norm, norm)  # the sign that avoids cancellation
    v = x - alpha * (rows == j)
    v_norm = jnp.sqrt(jnp.where(nonzero, jnp.sum(v * v), 1.0))
    v = jnp.where(nonzero, v / v_norm, 0.0)
    projection = jnp.where(cols >= j, v @ r, 0.0)  # columns before j are done
    r = r - 2.0 * jnp.outer(v, projection)
    return r, reflectors.at[j].set(v)

  r, reflectors = jax.lax.fori_loop(0, n, reflect, (a, jnp.zeros((n, m), a.dtype)))
  r = jnp.triu(r[:n])

  def accumulate(i, q):  # q = H_0 H_1 ... H_{n-1} [I_n; 0], applied right to left
    v = reflectors[n - 1 - i]
    return q - 2.0 * jnp.outer(v, v @ q)

  q = jax.lax.fori_loop(0, n, accumulate, jnp.eye(m, n, dtype=a.dtype))
  return q, r


def solve_upper_triangular_right(r: ArrayLike, b: ArrayLike) -> jax.Array:
  """Solves ``x @ r = b`` for x, with r upper triangular (x = b @ inv(r)).

  Args:
    r: (..., N, N) upper triangular (entries below the diagonal are ignored).
    b: (..., T, N) right-hand sides, one per row.

  Returns:
    (..., T, N) x. A zero on r's diagonal gives inf or NaN in the columns
    from there on, as dividing by it would.

  Raises:
    ValueError: shapes that do not match.
  """
  r, b = jnp.asarray(r), jnp.asarray(b)
  if r.ndim < 2 or r.shape[-1] != r.shape[-2] or b.ndim < 2 or b.shape[-1] != r.shape[-1]:
    raise ValueError(
        "solve_upper_triangular_right: r must be (..., N, N) and b (..., T, N), got "
        f"{r.shape} and {b.shape}."
    )
  dtype = jnp.result_type(r, b, float)
  return jnp.vectorize(_solve_upper_right_2d, signature="(n,n),(t,n)->(t,n)")(
      r.astype(dtype), b.astype(dtype)
  )


def _solve_upper_right_2d(r: jax.Array, b: jax.Array) -> jax.Array:
  n = r.shape[0]
  index = jnp.arange(n)

  def column(j, x):  # x[:, j] = (b[:, j] - x[:, :j] @ r[:j, j]) / r[j, j]
    known = x @ jnp.where(index < j, r[:, j], 0.0)
    return x.at[:, j].set((b[:, j] - known) / r[j, j])

  return jax.lax.fori_loop(0, n, column, jnp.zeros_like(b))


__all__.append("householder_lstsq")


def householder_lstsq(a: ArrayLike, b: ArrayLike) -> jax.Array:
  """Least-squares solution x of ``a @ x ~ b`` by Householder QR, never forming Q.

  The reflectors that triangularise a are applied to b as they are made (one
  pass over the augmented matrix [a | b] per column), then R x = (Q^T b)[:n]
  is solved by back substitution. Compared with ``householder_qr`` followed by
  a solve, this skips accumulating Q (a second loop) and every product with
  it, so it compiles and runs in about a third of the time; the result is
  the same to rounding.

  Args:
    a: (..., M, N) matrix with M >= N and full column rank.
    b: (..., M, P) right-hand sides.

  Returns:
    (..., N, P) x. A rank-deficient a gives inf or NaN, as dividing by a zero
    pivot would.

  Raises:
    ValueError: shapes that do not match, or M < N.
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.ndim < 2 or a.shape[-2] < a.shape[-1] or b.ndim < 2 or b.shape[-2] != a.shape[-2]:
    raise ValueError(
        "householder_lstsq: a must be (..., M, N) with M >= N and b (..., M, P), got "
        f"{a.shape} and {b.shape}."
    )
  dtype = jnp.result_type(a, b, float)
  return jnp.vectorize(_householder_lstsq_2d, signature="(m,n),(m,p)->(n,p)")(
      a.astype(dtype), b.astype(dtype)
  )


def _householder_lstsq_2d(a: jax.Array, b: jax.Array) -> jax.Array:
  m, n = a.shape
  rows = jnp.arange(m)
  cols = jnp.arange(n + b.shape[1])
  augmented = jnp.concatenate([a, b], axis=1)

  def reflect(j, r):  # the same reflector as householder_qr's, applied to [a | b]
    x = jnp.where(rows >= j, r[:, j], 0.0)
    squared = jnp.sum(x * x)
    nonzero = squared > 0
    norm = jnp.sqrt(jnp.where(nonzero, squared, 1.0))
    alpha = jnp.where(r[j, j] >= 0, -norm, norm)
    v = x - alpha * (rows == j)
    v_norm = jnp.sqrt(jnp.where(nonzero, jnp.sum(v * v), 1.0))
    v = jnp.where(nonzero, v / v_norm, 0.0)
    projection = jnp.where(cols >= j, v @ r, 0.0)
    return r - 2.0 * jnp.outer(v, projection)

  reduced = jax.lax.fori_loop(0, n, reflect, augmented)[:n]
  r, c = jnp.triu(reduced[:, :n]), reduced[:, n:]
  index = jnp.arange(n)

  def substitute(i, x):  # rows from the bottom: x_k = (c_k - r[k, k+1:] x[k+1:]) / r_kk
    k = n - 1 - i
    known = jnp.where(index > k, r[k], 0.0) @ x
    return x.at[k].set((c[k] - known) / r[k, k])

  return jax.lax.fori_loop(0, n, substitute, jnp.zeros_like(c))
