"""Evaluation points for polynomial and rational codes.

Data points a_k (one per query) and worker points b_n (one per worker) must be
distinct from each other and among themselves, in the dtype they are used in.
Defaults follow BACC and docs/design.md section 2: Chebyshev points of the first
kind for the data and of the second kind for the workers, both on [-1, 1],
which keep interpolation well-conditioned as N grows (equally spaced points do
not). Every scheme's points, given or default, pass :func:`check_points`
(``validation.as_points`` for each set, then the two sets' disjointness).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp, validation
from jaxcoded.schemes import base


def check_points(
    data_points: ArrayLike,
    worker_points: ArrayLike,
    what: str,
    dtype: DTypeLike | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Both point sets, checked and cast to one floating dtype.

  Each set must be real (integers are cast; complex, bool and string points
  are refused), 1-D, non-empty, finite and distinct, and no data point may
  equal a worker point, all in the dtype used (``validation.as_points``).

  Args:
    data_points: (K,) a_k.
    worker_points: (N,) b_n.
    what: the scheme's name, for error messages.
    dtype: the floating dtype; None: the wider of the two sets' float dtypes
      (JAX's default float for integer points).

  Returns:
    (data_points, worker_points) as floating ``jax.Array`` s of one dtype.

  Raises:
    ValueError: naming the set and the problem.
  """
  validation.check_float_dtype(dtype, what)
  traced = any(isinstance(p, jax.core.Tracer) for p in (data_points, worker_points))
  if dtype is None:  # One dtype for both, then the checks in it.
    a = validation.as_points(data_points, "data points", what, distinct=False)
    b = validation.as_points(worker_points, "worker points", what, distinct=False)
    dtype = jax.numpy.result_type(a, b)
  a = validation.as_points(data_points, "data points", what, dtype=dtype)
  b = validation.as_points(worker_points, "worker points", what, dtype=dtype)
  if traced:
    return a, b  # Under jit: the static checks above only.
  # On the host from the given values (a jnp result is a tracer inside an enclosing jit).
  common = np.intersect1d(
      np.asarray(data_points).astype(a.dtype), np.asarray(worker_points).astype(b.dtype)
  )
  if common.size:
    raise ValueError(
        f"{what}: data points and worker points must differ, but both contain {common} "
        f"(in {a.dtype}). Pass other worker_points (e.g. interp.chebyshev_points(N, kind=1) "
        "scaled by 0.99)."
    )
  return a, b


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

  Each kind is computed in float64 and rounded to ``dtype`` once, and the
  choice is checked in ``dtype``: near -1 and 1 Chebyshev points crowd
  together (spacing ~ 1 / N^2), so at large K and N a worker point and a
  data point can round to the same float32 number (K = 700, N = 701:
  fourth-kind and first-kind points meet at -0.9999975). The preferred worker
  points are then replaced by the other kind if that one stays distinct in
  ``dtype``; if neither does, a ValueError names the dtype that is needed.

  Args:
    num_queries: K.
    num_workers: N.
    dtype: floating dtype of the points.
    avoid_midpoints: apply the N = K + 1 rule (the learned codes turn it off:
      their encoders were trained on second-kind points).

  Returns:
    (data_points (K,), worker_points (N,)).

  Raises:
    ValueError: no default worker points are distinct from the data points
      (and among themselves) in ``dtype``.
  """
  validation.check_float_dtype(dtype, "default_points")
  data = interp.chebyshev_points(num_queries, kind=1, dtype=dtype)
  second = interp.chebyshev_points(num_workers, kind=2, dtype=dtype)
  fourth = chebyshev_fourth_kind(num_workers, dtype=dtype)
  data_host = np.asarray(data)

  def usable(workers):
    host = np.asarray(workers)
    return np.unique(host).size == host.size and not np.intersect1d(host, data_host).size

  midpoints = avoid_midpoints and num_workers == num_queries + 1 and num_queries > 1
  preferred = [fourth, second] if midpoints else [second, fourth]
  if np.unique(data_host).size == data_host.size:
    for workers in preferred:
      if usable(workers):
        return data, workers
  raise ValueError(
      f"The default Chebyshev points for K = {num_queries} queries and N = {num_workers} "
      f"workers are not all distinct in {data.dtype} (near -1 and 1 they are closer than its "
      "resolution). Use float64 (jax.config.update('jax_enable_x64', True) and "
      "dtype=jnp.float64), or pass data_points and worker_points."
  )


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
  validation.check_float_dtype(dtype, what)
  if data_points is None or worker_points is None:
    default_data, default_workers = default_points(
        sizes.num_queries, sizes.num_workers, dtype=dtype
    )
  a = default_data if data_points is None else data_points
  b = default_workers if worker_points is None else worker_points
  a, b = check_points(a, b, what, dtype=dtype)
  if a.shape[0] != sizes.num_queries:
    raise ValueError(f"{what}: {a.shape[0]} data points given for K = {sizes.num_queries}.")
  if b.shape[0] < sizes.recovery_threshold:
    raise ValueError(
        f"{what}: {b.shape[0]} workers cannot reach the recovery threshold "
        f"{threshold_formula} = {sizes.recovery_threshold}."
    )
  return a, b
