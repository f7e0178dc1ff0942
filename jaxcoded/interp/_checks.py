"""Argument checks shared by the interpolation functions (concrete inputs only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import validation

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
