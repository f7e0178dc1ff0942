"""Evaluation points for polynomial and rational codes.

Data points a_k (one per query) and worker points b_n (one per worker) must be
distinct from each other and among themselves. Defaults follow BACC and
DESIGN.md section 2: Chebyshev points of the first kind for the data and of the
second kind for the workers, both on [-1, 1], which keep interpolation
well-conditioned as N grows (equally spaced points do not).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp
from jaxcoded.schemes import base


def check_points(data_points: ArrayLike, worker_points: ArrayLike, what: str) -> None:
  """Raises ValueError unless both point sets are finite, 1-D and all distinct."""
  a = np.asarray(data_points, dtype=np.float64)
  b = np.asarray(worker_points, dtype=np.float64)
  for name, p in (("data points", a), ("worker points", b)):
    if p.ndim != 1 or p.size < 1:
      raise ValueError(f"{what}: {name} must be a non-empty 1-D array, got shape {p.shape}.")
    if not np.all(np.isfinite(p)):
      raise ValueError(f"{what}: {name} must be finite.")
    if np.unique(p).size != p.size:
      raise ValueError(f"{what}: {name} must be distinct, got {p}.")
  common = np.intersect1d(a, b)
  if common.size:
    raise ValueError(
        f"{what}: data points and worker points must differ, but both contain {common}. "
        "Pass other worker_points (e.g. interp.chebyshev_points(N, kind=1) scaled by 0.99)."
    )


def chebyshev_fourth_kind(n: int, dtype: DTypeLike | None = None) -> jax.Array:
  """Points cos(2 j pi / (2n + 1)), j = 1..n, in increasing order.

  They never coincide with first-kind Chebyshev points of any size (that would
  need 4 j K = (2 k + 1)(2 n + 1), even = odd), which makes them the fallback
  for worker points.
  """
  j = np.arange(1, n + 1, dtype=np.float64)
  x = np.sort(np.cos(2 * j * np.pi / (2 * n + 1)))
  dtype = dtype if dtype is not None else jax.numpy.zeros(()).dtype
  return jax.numpy.asarray(x, dtype=dtype)


def default_points(
    num_queries: int,
    num_workers: int,
    dtype: DTypeLike | None = None,
    *,
    avoid_midpoints: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """Chebyshev data points (first kind, K) and worker points (N), all distinct.

  Workers get second-kind points (as in BACC) unless one of them equals a data
  point (both sets contain 0 when K and N are odd), or, with
  ``avoid_midpoints``, N = K + 1 with K >= 2; then they get fourth-kind points, which
  never meet first-kind ones.

  Why N = K + 1: the second-kind points cos(j pi / K) then lie exactly halfway
  (in angle) between consecutive data points cos((2k + 1) pi / 2K), so every
  data point sits where an interpolant through the workers is least accurate.
  Measured with Berrut coding around LeNet-5 on Fashion-MNIST (K = 8, one
  straggler, 400 groups, 9 masks): 0.608 with second-kind worker points, 0.750
  with fourth-kind ones; at N = K + 2 and K + 3 the two differ by less than
  the spread over masks (docs/evaluation.md).

  Args:
    num_queries: K.
    num_workers: N.
    dtype: floating dtype of the points.
    avoid_midpoints: apply the N = K + 1 rule (the learned codes turn it off:
      their encoders were trained on second-kind points).

  Returns:
    (data_points (K,), worker_points (N,)).
  """
  data = interp.chebyshev_points(num_queries, kind=1, dtype=dtype)
  workers = interp.chebyshev_points(num_workers, kind=2, dtype=dtype)
  meets_data = np.intersect1d(np.asarray(data), np.asarray(workers)).size > 0
  midpoints = avoid_midpoints and num_workers == num_queries + 1 and num_queries > 1
  if meets_data or midpoints:
    workers = chebyshev_fourth_kind(num_workers, dtype=dtype)
  return data, workers


def resolve_points(
    sizes: base.SchemeSizes,
    data_points: ArrayLike | None,
    worker_points: ArrayLike | None,
    dtype: DTypeLike | None,
    what: str,
    threshold_formula: str = "R",
) -> tuple[jax.Array, jax.Array]:
  """The points a scheme's ``create`` uses: defaults, or the given ones, checked.

  Args:
    sizes: the scheme's K, N and R; N sizes the default worker points.
    data_points: optional (K,) a_k.
    worker_points: optional (N',) b_n; N' >= R workers (N' sets N).
    dtype: floating dtype of the points.
    what: the scheme's name, for error messages.
    threshold_formula: how R is computed, for the error message.

  Returns:
    (data_points (K,), worker_points (N,)).

  Raises:
    ValueError: wrong number of data points, too few workers, or points that
      are not distinct.
  """
  default_data, default_workers = default_points(sizes.num_queries, sizes.num_workers, dtype=dtype)
  a = default_data if data_points is None else jax.numpy.asarray(data_points, dtype=dtype)
  b = default_workers if worker_points is None else jax.numpy.asarray(worker_points, dtype=dtype)
  check_points(a, b, what)
  if a.shape[0] != sizes.num_queries:
    raise ValueError(f"{what}: {a.shape[0]} data points given for K = {sizes.num_queries}.")
  if b.shape[0] < sizes.recovery_threshold:
    raise ValueError(
        f"{what}: {b.shape[0]} workers cannot reach the recovery threshold "
        f"{threshold_formula} = {sizes.recovery_threshold}."
    )
  return a, b
