"""What a valid group of queries is: the checks every entry point runs (docs/bad_input.md).

Coded computing mixes the K queries of a group: every worker input is a
combination of all of them, so ONE bad query (NaN, inf, far out of range)
spoils the decoded answer of every query in its group, not only its own.

The checks come in two tiers:

* **Static checks** (always, eagerly and under ``jit`` alike): the group is a
  pytree of arrays of real numbers (integer or floating; bool and complex are
  refused), every leaf has the leading axis K, and the shape fits the
  deployment's.
* **Value checks** (opt-in, with a :class:`QuerySpec`): every value finite,
  optionally within [low, high], optionally floating-point only. The data
  layer supplies the spec of each dataset (``data.query_spec(name)``: images
  normalised as ``data.load`` returns them, raw uint8 pixels refused); the
  comparison harness and the service pass it in.

Value checks need concrete values. A spec given with traced queries (under
``jit``, ``vmap`` or ``grad``) raises ``ValueError`` rather than skipping the
check, so one call never gets two verdicts: check the group eagerly first, or
build the deployment without a spec inside traced code.

Example:
  >>> import numpy as np
  >>> from jaxcoded import queries
  >>> queries.check(np.zeros((3, 4)), (3, ...), None, "demo")  # static checks only
  >>> spec = queries.QuerySpec(low=-1.0, high=1.0)
  >>> queries.check(np.full((3, 4), 2.0), (3, ...), spec, "demo")
  Traceback (most recent call last):
  ...
  ValueError: demo: query 0 has values in [2, 2], outside the expected range [-1, 1] ...
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import validation

__all__ = ["QuerySpec", "as_spec", "check", "leading_size"]


class QuerySpec(NamedTuple):
  """The value checks of one kind of data (opt-in; see the module docstring).

  Attributes:
    low: smallest valid value (None: unbounded).
    high: largest valid value (None: unbounded).
    float_only: refuse integer dtypes (raw pixels of images that must be
      normalised first).
    what: the data described, for messages (e.g. "digits images normalised
      as data.load returns them").
    remedy: what the caller should do with a refused group, for messages.
  """

  low: float | None = None
  high: float | None = None
  float_only: bool = False
  what: str = "queries"
  remedy: str = ""


def as_spec(query_range: QuerySpec | tuple[float, float] | None) -> QuerySpec | None:
  """A spec from a spec, a (low, high) pair, or None (no value checks)."""
  if query_range is None or isinstance(query_range, QuerySpec):
    return query_range
  try:
    low, high = (float(v) for v in query_range)
  except (TypeError, ValueError) as error:
    raise ValueError(
        f"query_range must be None, a (low, high) pair or a queries.QuerySpec, got {query_range!r}."
    ) from error
  if not low <= high:
    raise ValueError(f"query_range: low must be <= high, got ({low}, {high}).")
  return QuerySpec(low, high)


def leading_size(tree: Any, what: str) -> int:
  """The common leading-axis length of a pytree's leaves; ValueError if they differ or are scalars."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError(f"{what}: got no arrays (an empty pytree).")
  shapes = [np.shape(leaf) for leaf in leaves]
  sizes = {shape[0] if shape else None for shape in shapes}
  if None in sizes or len(sizes) != 1:
    raise ValueError(
        f"{what}: every leaf needs the same leading axis, got shapes {shapes}."
    )
  return sizes.pop()


def _dtype(leaf: Any) -> np.dtype:
  return leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def check(
    queries: Any,
    expected_shape: validation.ShapeSpec | None,
    spec: QuerySpec | tuple[float, float] | None,
    name: str,
) -> None:
  """Raises ValueError naming the first bad query and what is expected.

  Args:
    queries: (K, ...) one group, (B, ...) a batch, or a pytree of such arrays
      (every leaf with the same leading axis).
    expected_shape: the accepted shape of each leaf (see
      ``validation.check_images``), or None for any non-empty shape.
    spec: the value checks (a :class:`QuerySpec`, a (low, high) pair), or
      None for static checks only.
    name: who checks, for the message.
  """
  spec = as_spec(spec)
  leaves = jax.tree.leaves(queries)
  if not leaves:
    raise ValueError(f"{name}: got no queries (an empty pytree).")
  for leaf in leaves:
    dtype = _dtype(leaf)
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
      raise ValueError(
          f"{name}: queries must be real numbers (an integer or floating-point array), got dtype "
          f"{dtype}."
      )
    if spec is not None and spec.float_only and not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
          f"{name}: queries must be a floating-point array ({spec.what}), got dtype {dtype}. "
          f"{spec.remedy}".rstrip()
      )
    shape = tuple(np.shape(leaf))
    if not shape:
      raise ValueError(f"{name}: queries must have a leading query axis, got a scalar.")
    if 0 in shape:
      raise ValueError(f"{name}: got an empty group of shape {shape}.")
    if expected_shape is not None and not validation.shape_fits(shape, expected_shape):
      raise ValueError(
          f"{name}: queries must have shape {validation.format_shape(expected_shape)}, got {shape}."
      )
  leading_size(queries, name)
  if spec is None:
    return
  if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
    raise ValueError(
        f"{name}: the value checks of {spec.what} (finite, within range) need concrete queries, "
        "but these are traced (jit, vmap or grad). Check the group before tracing, or build the "
        "deployment with query_range=None inside traced code."
    )
  _check_values(leaves, spec, name)


def _check_values(leaves: list[ArrayLike], spec: QuerySpec, name: str) -> None:
  per_query = np.concatenate(
      [np.asarray(leaf, np.float64).reshape(np.shape(leaf)[0], -1) for leaf in leaves], axis=1
  )
  validation.check_finite_rows(np.isfinite(per_query).all(axis=1), name, ("query", "queries"),
                               "all the others")
  low = -np.inf if spec.low is None else spec.low
  high = np.inf if spec.high is None else spec.high
  bad = np.flatnonzero((per_query.min(axis=1) < low) | (per_query.max(axis=1) > high))
  if bad.size:
    q = int(bad[0])
    raise ValueError(
        f"{name}: query {q} has values in [{per_query[q].min():.4g}, {per_query[q].max():.4g}], "
        f"outside the expected range [{low:.4g}, {high:.4g}] of {spec.what} ({bad.size} of "
        f"{len(per_query)} queries are out of range). In a coded group one such query would "
        f"corrupt the answers of all the others. {spec.remedy}".rstrip()
    )
