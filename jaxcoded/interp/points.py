"""Evaluation points of the codes: Chebyshev points of the first and second kind."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxcoded import validation

__all__ = ["chebyshev_points"]

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
