"""Byzantine-robust decoding of polynomial codes: locate wrong outputs, then fit.

In a polynomial code (LCC, docs/design.md section 4.3; the learned polynomial code, 4.6)
the honest worker outputs are samples y_n = p(b_n) of one vector-valued
polynomial p of degree at most R - 1, R the interpolation threshold. Up to E
of the A available outputs may be arbitrary (adversarial workers, silent
corruption). This module finds them and decodes from the rest.

The locator (exhaustive bounded-distance decoding over the reals). Every set
of E available workers is a candidate drop set; the candidate whose removal
leaves the remaining A - E outputs closest to a degree-(R-1) polynomial (the
least-squares residual, all output coordinates jointly) is chosen; the
polynomial p* fitted through the kept outputs is compared with *every*
available output, and an output is rejected when it deviates from p* by more
than ``rtol * scale`` (``scale`` the largest finite magnitude among the kept
outputs). The answer is the least-squares fit through the outputs that were
not rejected, evaluated at the targets: exactly the decode that would have run
had the rejected workers straggled.

Guarantees (t = the number of wrong outputs, each "wrong" meaning off the
honest value by more than ``rtol * scale`` plus rounding):

* Correction: if t <= E and A >= R + 2E, the wrong outputs are exactly the
  rejected ones and the values equal the plain masked fit with the wrong
  workers absent (up to rounding). Why: the true drop set leaves a consistent
  set, and any consistent set of A - E >= R + E outputs holds at least
  A - 2E >= R honest ones, which pin p* = p.
* Detection: otherwise, if no drop set of size <= E leaves a consistent set,
  nothing is answered and ``consistent`` is False. This always happens when
  E < t <= A - R - E (the code's minimum distance is A - R + 1), and, for
  larger t, unless the wrong outputs conspire: a silently wrong answer needs
  a polynomial q != p through all but E of the available outputs, i.e. at
  least A - E - R + 1 wrong outputs lying on one common polynomial with the
  rest, which random, sign-flipped or copied (``jaxcoded.adversaries``)
  outputs do not do.
* Too few: with A < R + 2E nothing is answered and ``enough`` is False (E
  errors cannot be told apart from honest outputs there).

Wrong outputs within ``rtol * scale`` of the truth may be kept; they move the
answer by at most about the fit's Lebesgue constant times ``rtol * scale``.
Non-finite outputs (NaN, inf) are always rejected. Stragglers' rows are never
read (``jnp.where``, so NaN there changes nothing).

Cost: C(N, E) least-squares fits of N x R (one batched QR), then one fit, so
one compiled function serves every straggler pattern and ``vmap`` over masks
works. E = 0 is allowed: it checks consistency without correcting anything.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxcoded import interp, robust
  >>> nodes = interp.chebyshev_points(7)
  >>> values = (nodes**2)[:, None].at[3].set(5.0)  # output 3 is wrong
  >>> fit = robust.robust_polyfit(nodes, values, jnp.array([0.5]), degree=2, num_errors=1)
  >>> bool(fit.answered), fit.rejected.nonzero()[0].tolist(), round(float(fit.values[0, 0]), 5)
  (True, [3], 0.25)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp, linalg, stragglers
from jaxcoded.interp import matrices as interp_matrices

__all__ = [
    "MAX_CANDIDATES",
    "Location",
    "RobustDecoded",
    "check_config",
    "check_num_errors",
    "default_rtol",
    "locate_errors",
    "min_available",
    "robust_polyfit",
]

MAX_CANDIDATES = 100_000


class Location(NamedTuple):
  """What the locator found among the available outputs.

  Attributes:
    rejected: (N,) bool, available outputs off the best fit by more than the
      tolerance (the wrong outputs, when ``consistent``).
    consistent: () bool, every output kept by the best drop set of E (the
      least-squares residual) is within the tolerance of their fit.
    relative_residual: () the largest deviation of a kept output from the
      best fit, in units of ``scale``; <= rtol when ``consistent``.
  """

  rejected: jax.Array
  consistent: jax.Array
  relative_residual: jax.Array


class RobustDecoded(NamedTuple):
  """A robust fit evaluated at the targets, with what it rejected and why.

  Attributes:
    values: (T, ...) the fit through the outputs that were not rejected,
      evaluated at the targets; zeros when not answered.
    answered: () bool, ``enough & consistent``.
    rejected: (N,) bool, see ``Location``; when not answered, a diagnostic
      only (the disagreement with the most consistent candidate).
    enough: () bool, A >= degree + 1 + 2E outputs were available.
    consistent: () bool, see ``Location``; False whenever no drop set of
      size <= E leaves a consistent set.
    relative_residual: () see ``Location``.
  """

  values: jax.Array
  answered: jax.Array
  rejected: jax.Array
  enough: jax.Array
  consistent: jax.Array
  relative_residual: jax.Array


def default_rtol(dtype: DTypeLike) -> float:
  """The consistency tolerance: 1024 machine epsilons of ``dtype``.

  About 1.2e-4 in float32 and 2.3e-13 in float64: above the rounding of a
  worker computation and a well-conditioned fit (measured up to 3e-7 and
  8e-16 relative on random learned polynomial codes), far below a
  corruption that matters.
  """
  return float(1024 * jnp.finfo(dtype).eps)


def min_available(degree: int, num_errors: int) -> int:
  """R + 2E = degree + 1 + 2E: the fewest outputs from which E errors are corrected."""
  return degree + 1 + 2 * num_errors


def check_num_errors(num_errors: int, what: str = "robust") -> None:
  """Raises ValueError unless E is an integer >= 0."""
  if isinstance(num_errors, bool) or not isinstance(num_errors, (int, np.integer)) or num_errors < 0:
    raise ValueError(
        f"{what}: the number of adversaries E must be an integer >= 0, got {num_errors!r}."
    )


def check_config(
    num_nodes: int, degree: int, num_errors: int, rtol: float | None = None, what: str = "robust"
) -> None:
  """Raises ValueError unless a robust fit of this size can run.

  Args:
    num_nodes: N, the number of nodes (workers).
    degree: R - 1 >= 0.
    num_errors: E >= 0, with N >= R + 2E and C(N, E) <= ``MAX_CANDIDATES``.
    rtol: None or a finite tolerance > 0.
    what: the caller's name, for the message.
  """
  if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 0:
    raise ValueError(f"{what}: degree must be an integer >= 0, got {degree!r}.")
  check_num_errors(num_errors, what)
  if rtol is not None and (
      isinstance(rtol, bool) or not isinstance(rtol, (float, int)) or not 0 < rtol < math.inf
  ):
    raise ValueError(
        f"{what}: rtol must be a finite number > 0 (or None for the default), got {rtol!r}."
    )
  if num_nodes < min_available(degree, num_errors):
    raise ValueError(
        f"{what}: correcting E = {num_errors} errors of a degree-{degree} fit needs at least "
        f"R + 2E = {min_available(degree, num_errors)} workers, got {num_nodes}."
    )
  candidates = math.comb(num_nodes, num_errors)
  if candidates > MAX_CANDIDATES:
    raise ValueError(
        f"{what}: the exhaustive locator would score C({num_nodes}, {num_errors}) = {candidates} "
        f"drop sets, more than {MAX_CANDIDATES}; use fewer workers or a smaller E."
    )


def _check(nodes, values, degree, num_errors, mask, rtol, what) -> None:
  nodes_shape, values_shape = jnp.shape(nodes), jnp.shape(values)
  if len(nodes_shape) != 1 or nodes_shape[0] < 1:
    raise ValueError(f"{what}: nodes must be a non-empty 1-D array, got shape {nodes_shape}.")
  num_nodes = nodes_shape[0]
  if not values_shape or values_shape[0] != num_nodes:
    raise ValueError(
        f"{what}: values must have one row per node, shape ({num_nodes}, ...), got {values_shape}."
    )
  if mask is not None and (jnp.shape(mask) != (num_nodes,) or jnp.result_type(mask) != jnp.bool_):
    raise ValueError(
        f"{what}: mask must be ({num_nodes},) bool, got {jnp.shape(mask)} {jnp.result_type(mask)}."
    )
  check_config(num_nodes, degree, num_errors, rtol, what)
  if not any(isinstance(x, jax.core.Tracer) for x in (nodes, mask) if x is not None):
    nodes_np = np.asarray(nodes, np.float64)
    if not np.all(np.isfinite(nodes_np)) or np.unique(nodes_np).size != num_nodes:
      raise ValueError(f"{what}: nodes must be finite and distinct, got {nodes_np}.")


def _candidate_residual(basis: jax.Array, values: jax.Array, keep: jax.Array) -> jax.Array:
  """Sum of squared residuals of the least-squares fit of values (N, D) on basis (N, R), kept rows.

  Non-finite sums (a kept NaN or inf) become +inf, so such a set never wins.
  """
  a = jnp.where(keep[:, None], basis, 0.0)
  y = jnp.where(keep[:, None], values, 0.0)
  q, _ = linalg.householder_qr(a)  # no LAPACK call: see jaxcoded.linalg
  ssr = jnp.sum(jnp.square(y - q @ (q.T @ y)))
  return jnp.where(jnp.isfinite(ssr), ssr, jnp.inf)


@functools.partial(jax.jit, static_argnames=("degree", "num_errors", "rtol"))
def _locate(nodes, values, mask, degree, num_errors, rtol):
  values = jax.lax.stop_gradient(jnp.where(mask[:, None], values, 0.0))
  nodes = jax.lax.stop_gradient(nodes)
  # Chebyshev basis on the nodes mapped into [-1, 1]: a well-conditioned design.
  lo, hi = jnp.min(nodes), jnp.max(nodes)
  half_width = jnp.maximum((hi - lo) / 2, jnp.finfo(nodes.dtype).tiny)
  basis = interp_matrices._chebyshev_vandermonde((nodes - (hi + lo) / 2) / half_width, degree)

  drops = jnp.asarray(~stragglers.all_masks(nodes.shape[0], num_errors, MAX_CANDIDATES))
  valid = ~jnp.any(drops & ~mask[None, :], axis=1)  # only available outputs are dropped
  keeps = mask[None, :] & ~drops
  scores = jax.vmap(lambda keep: _candidate_residual(basis, values, keep))(keeps)
  keep = keeps[jnp.argmin(jnp.where(valid, scores, jnp.inf))]

  fitted = interp.apply_matrix(interp.polyfit_matrix(nodes, nodes, degree, keep), values)
  deviation = jnp.max(jnp.abs(values - fitted), axis=1)
  magnitude = jnp.where(keep[:, None] & jnp.isfinite(values), jnp.abs(values), 0.0)
  scale = jnp.maximum(jnp.max(magnitude), jnp.finfo(values.dtype).tiny)
  agrees = deviation <= rtol * scale  # False for NaN
  consistent = jnp.any(valid) & jnp.all(agrees | ~keep)
  relative = jnp.max(jnp.where(keep, deviation, 0.0)) / scale
  return Location(mask & ~agrees, consistent, jnp.where(jnp.any(valid), relative, jnp.inf))


def _prepare(nodes, values, mask, rtol):
  """Common dtype of nodes and values, full mask by default, and the tolerance.

  The default tolerance follows the dtype the *outputs* were computed in:
  float32 outputs fitted at float64 points are only float32-accurate.
  """
  values = jnp.asarray(values)
  dtype = jnp.result_type(nodes, values)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.zeros(()).dtype
  if rtol is None:
    rtol = default_rtol(values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else dtype)
  nodes = jnp.asarray(nodes, dtype)
  mask = jnp.ones(nodes.shape, bool) if mask is None else jnp.asarray(mask)
  return nodes, values.astype(dtype), mask, float(rtol)


def locate_errors(
    nodes: ArrayLike,
    values: ArrayLike,
    degree: int,
    num_errors: int,
    mask: ArrayLike | None = None,
    *,
    rtol: float | None = None,
) -> Location:
  """Locates up to ``num_errors`` wrong values among samples of a polynomial.

  See the module docstring for the method and the guarantee.

  Args:
    nodes: (N,) distinct finite nodes b_n.
    values: (N, ...) samples y_n, honest ones p(b_n) with deg p <= ``degree``;
      rows of unavailable nodes are never read.
    degree: R - 1 (static).
    num_errors: E >= 0 (static); C(N, E) <= ``MAX_CANDIDATES``.
    mask: optional (N,) bool availability; default all available.
    rtol: consistency tolerance relative to the outputs' scale (static);
      default ``default_rtol`` of the dtype of ``values`` as given.

  Returns:
    A ``Location``. Meaningful when at least ``min_available(degree,
    num_errors)`` nodes are available.

  Raises:
    ValueError: bad shapes, dtypes, sizes or nodes.
  """
  _check(nodes, values, degree, num_errors, mask, rtol, "locate_errors")
  nodes, values, mask, rtol = _prepare(nodes, values, mask, rtol)
  flat = values.reshape(values.shape[0], -1)
  return _locate(nodes, flat, mask, int(degree), int(num_errors), rtol)


def robust_polyfit(
    nodes: ArrayLike,
    values: ArrayLike,
    targets: ArrayLike,
    degree: int,
    num_errors: int,
    mask: ArrayLike | None = None,
    *,
    rtol: float | None = None,
) -> RobustDecoded:
  """Least-squares polynomial fit that first locates and drops up to E wrong values.

  Equals ``apply_matrix(polyfit_matrix(nodes, targets, degree, mask &
  ~rejected), values)`` with ``rejected`` from ``locate_errors``: when at
  most E values are wrong and A >= degree + 1 + 2E are available, the plain
  fit with the wrong ones absent. Beyond that it answers nothing rather than
  something wrong, wherever the inconsistency is detectable (module
  docstring). Pure and fixed-shape: jit it, vmap it over masks.

  Args:
    nodes: (N,) distinct finite nodes b_n (worker points).
    values: (N, ...) samples y_n (worker outputs); unavailable rows never read.
    targets: (T,) points to evaluate the fit at (data points a_k).
    degree: R - 1 (static).
    num_errors: E >= 0 (static).
    mask: optional (N,) bool availability.
    rtol: consistency tolerance (static); default ``default_rtol`` of the
      dtype of ``values`` as given.

  Returns:
    A ``RobustDecoded`` with values of shape (T, ...).

  Raises:
    ValueError: bad shapes, dtypes, sizes or nodes.
  """
  _check(nodes, values, degree, num_errors, mask, rtol, "robust_polyfit")
  if len(jnp.shape(targets)) != 1:
    raise ValueError(
        f"robust_polyfit: targets must be a 1-D array, got shape {jnp.shape(targets)}."
    )
  nodes, values, mask, rtol = _prepare(nodes, values, mask, rtol)
  targets = jnp.asarray(targets, nodes.dtype)
  return _robust_polyfit(nodes, values, targets, mask, int(degree), int(num_errors), rtol)


@functools.partial(jax.jit, static_argnames=("degree", "num_errors", "rtol"))
def _robust_polyfit(nodes, values, targets, mask, degree, num_errors, rtol):
  flat = values.reshape(values.shape[0], -1)
  location = _locate(nodes, flat, mask, degree, num_errors, rtol)
  enough = jnp.sum(mask) >= min_available(degree, num_errors)
  answered = enough & location.consistent
  # Fit through a full mask when not answered: keeps NaNs out of the
  # arithmetic (and gradients); the result is discarded.
  trusted = jnp.where(answered, mask & ~location.rejected, True)
  matrix = interp.polyfit_matrix(nodes, targets, degree, trusted)
  fit = interp.apply_matrix(matrix, jnp.where(answered, values, jnp.zeros((), values.dtype)))
  fit = jnp.where(answered, fit, jnp.zeros((), fit.dtype))
  return RobustDecoded(
      fit, answered, location.rejected, enough, location.consistent, location.relative_residual
  )
