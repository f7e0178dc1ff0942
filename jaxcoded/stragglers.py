"""Straggler patterns: availability masks and worker latency models (docs/design.md section 5).

A straggler pattern is a boolean mask of shape (N,), True where the worker
returned in time. Masks are always arrays (never Python lists or slices), so
shapes stay static and one compiled decoder serves every pattern.

  random_mask, random_masks   exactly S stragglers at uniformly random positions;
  all_masks                   every pattern with exactly S stragglers (small C(N, S));
  ShiftedExponential, Pareto  per-worker latency models (scalar or per-worker
                              parameters), pytrees with ``sample(key, shape)``;
  deadline_mask               the workers that finished by a deadline;
  fastest_mask                the R fastest workers and the time the R-th returned;
  sample_deadline_masks       a batch of latency-driven masks and decode times.

Example:
  >>> import jax
  >>> from jaxcoded import stragglers
  >>> mask = stragglers.random_mask(jax.random.key(0), 6, 2)
  >>> int((~mask).sum())
  2
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

__all__ = [
    "Pareto",
    "ShiftedExponential",
    "all_masks",
    "deadline_mask",
    "fastest_mask",
    "random_mask",
    "random_masks",
    "sample_deadline_masks",
]


# ---------------------------------------------------------------------------
# Validation at the Python boundary.


def _check_int(name: str, value, minimum: int, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{what}: {name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def _check_workers_and_stragglers(num_workers, num_stragglers, what: str) -> tuple[int, int]:
  num_workers = _check_int("num_workers", num_workers, 1, what)
  num_stragglers = _check_int("num_stragglers", num_stragglers, 0, what)
  if num_stragglers >= num_workers:
    raise ValueError(
        f"{what}: num_stragglers = {num_stragglers} leaves no worker out of "
        f"num_workers = {num_workers}; it must be < num_workers."
    )
  return num_workers, num_stragglers


def _concrete_numbers(value) -> np.ndarray | None:
  """The value as a float64 array when it is concrete and numeric, else None."""
  if value is None or isinstance(value, jax.core.Tracer):
    return None
  try:
    array = np.asarray(value)
  except Exception:  # Placeholders that pytree utilities put in leaf slots.
    return None
  if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
    return None
  return array.astype(np.float64)


def _check_parameter(model: str, name: str, value, *, strictly_positive: bool = True) -> None:
  array = _concrete_numbers(value)
  if array is None:
    return  # Traced (or placeholder) parameters are checked where they are concrete.
  bad = ~np.isfinite(array) | ((array <= 0) if strictly_positive else (array < 0))
  if np.any(bad):
    bound = "> 0" if strictly_positive else ">= 0"
    raise ValueError(f"{model}: {name} must be finite and {bound}, got {value!r}.")


def _check_broadcast(model: str, params: dict, shape: tuple[int, ...]) -> None:
  for name, value in params.items():
    param_shape = np.shape(value)
    try:
      broadcast = np.broadcast_shapes(param_shape, shape)
    except ValueError:
      broadcast = None
    if broadcast != shape:
      raise ValueError(
          f"{model}.sample: parameter {name} of shape {param_shape} does not broadcast to "
          f"the requested shape {shape} (per-worker parameters need shape (N,) and a "
          "requested shape ending in N)."
      )


def _float_dtype(dtype: DTypeLike | None, *values) -> np.dtype:
  if dtype is not None:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"latency models sample floats; got dtype {dtype}.")
    return dtype
  dtype = jnp.result_type(*values)
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.zeros(()).dtype


def _check_latencies(latencies: ArrayLike, what: str) -> jax.Array:
  latencies = jnp.asarray(latencies)
  if latencies.ndim < 1 or latencies.shape[-1] < 1:
    raise ValueError(
        f"{what}: latencies must have shape (..., N) with N >= 1 workers, "
        f"got shape {latencies.shape}."
    )
  if not jnp.issubdtype(latencies.dtype, jnp.floating):
    latencies = latencies.astype(jnp.zeros(()).dtype)
  return latencies


# ---------------------------------------------------------------------------
# Masks with a fixed number of stragglers.


@functools.partial(jax.jit, static_argnames=("num_masks", "num_workers", "num_stragglers"))
def _random_masks(
    key: jax.Array, num_masks: int, num_workers: int, num_stragglers: int
) -> jax.Array:
  # One independent random order of the workers per row (a single shuffle call,
  # much cheaper to compile than vmapping permutation over split keys); the
  # first S workers in each order straggle.
  workers = jnp.broadcast_to(jnp.arange(num_workers), (num_masks, num_workers))
  order = jax.random.permutation(key, workers, axis=1, independent=True)
  position_in_order = jnp.argsort(order, axis=1)
  return position_in_order >= num_stragglers


def random_mask(key: jax.Array, num_workers: int, num_stragglers: int) -> jax.Array:
  """A mask with exactly ``num_stragglers`` False entries at uniformly random positions.

  Every one of the C(N, S) patterns is equally likely. ``num_workers`` and
  ``num_stragglers`` fix the shape, so they are static under ``jit``.

  Args:
    key: a JAX PRNG key.
    num_workers: N >= 1.
    num_stragglers: S with 0 <= S < N.

  Returns:
    Boolean array of shape (N,) with exactly N - S True entries.
  """
  num_workers, num_stragglers = _check_workers_and_stragglers(
      num_workers, num_stragglers, "random_mask"
  )
  return _random_masks(key, 1, num_workers, num_stragglers)[0]


def random_masks(
    key: jax.Array, num_masks: int, num_workers: int, num_stragglers: int
) -> jax.Array:
  """A batch of independent ``random_mask`` draws.

  Args:
    key: a JAX PRNG key.
    num_masks: M >= 1, the number of masks.
    num_workers: N >= 1.
    num_stragglers: S with 0 <= S < N.

  Returns:
    Boolean array of shape (M, N); every row has exactly S False entries.
  """
  num_masks = _check_int("num_masks", num_masks, 1, "random_masks")
  num_workers, num_stragglers = _check_workers_and_stragglers(
      num_workers, num_stragglers, "random_masks"
  )
  return _random_masks(key, num_masks, num_workers, num_stragglers)


def all_masks(num_workers: int, num_stragglers: int, max_masks: int = 100_000) -> np.ndarray:
  """Every mask with exactly ``num_stragglers`` stragglers, in a fixed order.

  Rows are ordered lexicographically by the tuple of straggler positions
  (``itertools.combinations`` order): for N = 3, S = 1 the stragglers are
  worker 0, then 1, then 2.

  Args:
    num_workers: N >= 1.
    num_stragglers: S with 0 <= S < N.
    max_masks: refuse to build more than this many rows.

  Returns:
    Boolean numpy array of shape (C(N, S), N).
  """
  num_workers, num_stragglers = _check_workers_and_stragglers(
      num_workers, num_stragglers, "all_masks"
  )
  count = math.comb(num_workers, num_stragglers)
  if count > max_masks:
    raise ValueError(
        f"all_masks: C({num_workers}, {num_stragglers}) = {count} patterns exceed "
        f"max_masks = {max_masks}; sample them with random_masks instead "
        "(or raise max_masks)."
    )
  masks = np.ones((count, num_workers), dtype=bool)
  for row, stragglers in enumerate(itertools.combinations(range(num_workers), num_stragglers)):
    masks[row, list(stragglers)] = False
  return masks


# ---------------------------------------------------------------------------
# Latency models.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShiftedExponential:
  """Latency = shift + Exp(rate): a fixed service time plus a random delay.

  The classic straggler model of coded computing (Lee et al. 2018). Mean
  ``shift + 1 / rate``. Parameters are scalars or per-worker arrays of shape
  (N,) for heterogeneous workers; they broadcast against the sampled shape.
  Instances are pytrees, so they can be passed through ``jit``.

  Attributes:
    shift: minimum latency, >= 0.
    rate: rate of the exponential delay, > 0.
  """

  shift: ArrayLike = 1.0
  rate: ArrayLike = 1.0

  def __post_init__(self):
    _check_parameter("ShiftedExponential", "shift", self.shift, strictly_positive=False)
    _check_parameter("ShiftedExponential", "rate", self.rate)

  def mean(self) -> jax.Array:
    """The expected latency, ``shift + 1 / rate``."""
    return jnp.asarray(self.shift) + 1.0 / jnp.asarray(self.rate)

  def sample(
      self, key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike | None = None
  ) -> jax.Array:
    """Draws latencies.

    Args:
      key: a JAX PRNG key.
      shape: output shape, e.g. (M, N); parameters broadcast against it.
      dtype: floating dtype (default: the parameters' float type).

    Returns:
      Array of shape ``shape`` with values >= shift.
    """
    shape = tuple(shape)
    _check_broadcast("ShiftedExponential", {"shift": self.shift, "rate": self.rate}, shape)
    dtype = _float_dtype(dtype, self.shift, self.rate)
    delay = jax.random.exponential(key, shape, dtype)
    return (jnp.asarray(self.shift, dtype) + delay / jnp.asarray(self.rate, dtype)).astype(dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Pareto:
  """Heavy-tailed latency: P(latency > t) = (scale / t) ** alpha for t >= scale.

  Mean ``alpha * scale / (alpha - 1)`` for alpha > 1 (infinite otherwise); the
  smaller alpha, the heavier the tail. Parameters are scalars or per-worker
  arrays, broadcast against the sampled shape. Instances are pytrees.

  Attributes:
    scale: minimum latency, > 0.
    alpha: tail index, > 0.
  """

  scale: ArrayLike = 1.0
  alpha: ArrayLike = 2.0

  def __post_init__(self):
    _check_parameter("Pareto", "scale", self.scale)
    _check_parameter("Pareto", "alpha", self.alpha)

  def mean(self) -> jax.Array:
    """The expected latency, ``alpha * scale / (alpha - 1)``, inf for alpha <= 1."""
    alpha, scale = jnp.asarray(self.alpha), jnp.asarray(self.scale)
    safe_alpha = jnp.where(alpha > 1, alpha, 2.0)
    return jnp.where(alpha > 1, safe_alpha * scale / (safe_alpha - 1), jnp.inf)

  def sample(
      self, key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike | None = None
  ) -> jax.Array:
    """Draws latencies.

    Uses ``scale * exp(E / alpha)`` with E ~ Exp(1) (inverse transform).

    Args:
      key: a JAX PRNG key.
      shape: output shape, e.g. (M, N); parameters broadcast against it.
      dtype: floating dtype (default: the parameters' float type).

    Returns:
      Array of shape ``shape`` with values >= scale.
    """
    shape = tuple(shape)
    _check_broadcast("Pareto", {"scale": self.scale, "alpha": self.alpha}, shape)
    dtype = _float_dtype(dtype, self.scale, self.alpha)
    exponent = jax.random.exponential(key, shape, dtype) / jnp.asarray(self.alpha, dtype)
    return (jnp.asarray(self.scale, dtype) * jnp.exp(exponent)).astype(dtype)


LatencyModel = ShiftedExponential | Pareto


# ---------------------------------------------------------------------------
# Masks from latencies.


def deadline_mask(latencies: ArrayLike, deadline: ArrayLike) -> jax.Array:
  """The workers that finished by the deadline.

  Args:
    latencies: array of shape (..., N).
    deadline: scalar, or an array that broadcasts against ``latencies``
      (e.g. shape (M, 1) for one deadline per row).

  Returns:
    Boolean array of shape (..., N), True where ``latency <= deadline``.
  """
  latencies = _check_latencies(latencies, "deadline_mask")
  deadline = jnp.asarray(deadline)
  try:
    broadcast = np.broadcast_shapes(deadline.shape, latencies.shape)
  except ValueError:
    broadcast = None
  if broadcast != latencies.shape:
    raise ValueError(
        f"deadline_mask: deadline of shape {deadline.shape} does not broadcast to the "
        f"latencies' shape {latencies.shape}."
    )
  return latencies <= deadline


@functools.partial(jax.jit, static_argnames="num_needed")
def _fastest_mask(latencies: jax.Array, num_needed: int) -> tuple[jax.Array, jax.Array]:
  order = jnp.argsort(latencies, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  mask = ranks < num_needed
  decode_time = jnp.take_along_axis(latencies, order[..., num_needed - 1 : num_needed], axis=-1)
  return mask, decode_time[..., 0]


def fastest_mask(latencies: ArrayLike, num_needed: int) -> tuple[jax.Array, jax.Array]:
  """The R fastest workers and the time at which the master could decode.

  The master decodes as soon as R outputs are in: at the R-th smallest
  latency. Ties are broken by worker index, so exactly R entries are True.

  Args:
    latencies: array of shape (..., N).
    num_needed: R, with 1 <= R <= N (static).

  Returns:
    ``(mask, decode_time)``: boolean mask of shape (..., N) with exactly R True
    entries per row, and the R-th smallest latency, shape (...).
  """
  latencies = _check_latencies(latencies, "fastest_mask")
  num_workers = latencies.shape[-1]
  num_needed = _check_int("num_needed", num_needed, 1, "fastest_mask")
  if num_needed > num_workers:
    raise ValueError(
        f"fastest_mask: num_needed = {num_needed} exceeds the {num_workers} workers; "
        "the master could never decode."
    )
  return _fastest_mask(latencies, num_needed)


def sample_deadline_masks(
    key: jax.Array,
    model: LatencyModel,
    num_masks: int,
    num_workers: int,
    *,
    deadline: ArrayLike | None = None,
    num_needed: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Latency-driven straggler masks for a batch of M rounds.

  Draws latencies of shape (M, N) from ``model``, then:

  - with ``deadline``: ``mask`` = the workers that finished by the deadline.
    With ``num_needed`` = R, the decode time is the R-th smallest latency if
    it is <= deadline, else inf (too few returned: the round cannot decode).
    Without ``num_needed`` (a scheme that decodes from any subset), the master
    decodes when the last worker returns or at the deadline, whichever is
    first: ``min(max latency, deadline)``.
  - without ``deadline``: ``num_needed`` = R is required; ``mask`` = the R
    fastest workers and the decode time is the R-th smallest latency.

  Args:
    key: a JAX PRNG key.
    model: a latency model with ``sample(key, shape)``, e.g. ``ShiftedExponential``.
    num_masks: M >= 1.
    num_workers: N >= 1.
    deadline: scalar deadline, or None.
    num_needed: R with 1 <= R <= N, or None.

  Returns:
    ``(masks, decode_times)`` of shapes (M, N) (boolean) and (M,).
  """
  what = "sample_deadline_masks"
  num_masks = _check_int("num_masks", num_masks, 1, what)
  num_workers = _check_int("num_workers", num_workers, 1, what)
  if deadline is None and num_needed is None:
    raise ValueError(f"{what}: give a deadline, num_needed, or both.")
  if num_needed is not None:
    num_needed = _check_int("num_needed", num_needed, 1, what)
    if num_needed > num_workers:
      raise ValueError(
          f"{what}: num_needed = {num_needed} exceeds num_workers = {num_workers}."
      )
  if deadline is not None and jnp.ndim(deadline) != 0:
    raise ValueError(f"{what}: deadline must be a scalar, got shape {jnp.shape(deadline)}.")

  latencies = model.sample(key, (num_masks, num_workers))
  if deadline is None:
    return _fastest_mask(latencies, num_needed)
  masks = deadline_mask(latencies, deadline)
  if num_needed is None:
    decode_times = jnp.minimum(latencies.max(axis=-1), deadline)
  else:
    _, rth_latency = _fastest_mask(latencies, num_needed)
    decode_times = jnp.where(rth_latency <= deadline, rth_latency, jnp.inf)
  return masks, decode_times.astype(latencies.dtype)


# ---------------------------------------------------------------------------
# By name, for configs; and the masks of masked straggler dropout in training.

LATENCY_MODELS: dict[str, type] = {"shifted_exponential": ShiftedExponential, "pareto": Pareto}


def latency_model(kind: str, **params) -> LatencyModel:
  """A latency model by name: ``latency_model("pareto", scale=1.0, alpha=1.5)``.

  Args:
    kind: a key of :data:`LATENCY_MODELS`.
    **params: the model's parameters (its dataclass fields).
  """
  if kind not in LATENCY_MODELS:
    raise ValueError(f"Unknown latency model {kind!r}; use one of {sorted(LATENCY_MODELS)}.")
  cls = LATENCY_MODELS[kind]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(params) - fields
  if unknown:
    raise ValueError(f"latency_model({kind!r}): unknown parameters {sorted(unknown)}; "
                     f"it takes {sorted(fields)}.")
  return cls(**params)


def dropout_masks(
    key: jax.Array, num_masks: int, num_workers: int, min_available: int
) -> jax.Array:
  """(M, N) masks with a uniform number in [R, N] of available workers at random places.

  The masks of masked straggler dropout: a learned code trained on them sees
  every availability pattern it must decode from.

  Args:
    key: PRNG key.
    num_masks: M.
    num_workers: N.
    min_available: R <= N.

  Returns:
    Boolean (M, N).
  """
  if not 1 <= min_available <= num_workers:
    raise ValueError(
        f"dropout_masks: need 1 <= R <= N, got R = {min_available}, N = {num_workers}."
    )
  count_key, order_key = jax.random.split(key)
  counts = jax.random.randint(count_key, (num_masks, 1), min_available, num_workers + 1)
  ranks = jnp.argsort(jax.random.uniform(order_key, (num_masks, num_workers)), axis=1)
  return ranks < counts
