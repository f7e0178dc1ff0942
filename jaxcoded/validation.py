"""Checks of user-given images at the Python boundary (docs/bad_input.md).

A coded scheme mixes the K queries of a group into every coded input, so one
bad query (NaN, inf, the wrong shape) would spoil the answers of the whole
group, or fail deep inside JAX with an error that names neither the query nor
the fix. :func:`check_images` says what is wrong, and what is accepted,
before anything runs.

Example:
  >>> import numpy as np
  >>> from jaxcoded import validation
  >>> validation.check_images(np.zeros((4, 8, 8, 1), np.float32), (None, 8, 8, 1), "digits")
  >>> validation.check_images(np.zeros((4, 8, 8), np.float32), (None, 8, 8, 1), "digits")
  Traceback (most recent call last):
  ...
  ValueError: digits: images must have shape (B, 8, 8, 1), got (4, 8, 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import EllipsisType

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["check_images", "format_shape"]

ShapeSpec = Sequence[int | None | EllipsisType]


def format_shape(expected_shape: ShapeSpec) -> str:
  """``(None, 8, 8, 1)`` -> ``"(B, 8, 8, 1)"``; ``(4, ...)`` -> ``"(4, ...)"``."""
  parts = []
  for i, size in enumerate(expected_shape):
    if size is Ellipsis:
      parts.append("...")
    elif size is None:
      parts.append("B" if i == 0 else "any")
    else:
      parts.append(str(size))
  return "(" + ", ".join(parts) + ")"


def _shape_fits(shape: tuple[int, ...], expected_shape: ShapeSpec) -> bool:
  expected = tuple(expected_shape)
  if expected and expected[-1] is Ellipsis:
    expected = expected[:-1]
    if len(shape) < len(expected):
      return False
    shape = shape[: len(expected)]
  elif len(shape) != len(expected):
    return False
  return all(want is None or want == got for want, got in zip(expected, shape))


def check_images(
    images: ArrayLike, expected_shape: ShapeSpec | None = None, name: str = "images"
) -> None:
  """Raises ValueError unless ``images`` is a non-empty, finite float batch of the expected shape.

  Checked, in this order: the dtype is floating (images are normalised
  floats, as ``data.load`` returns them; raw integer pixels are refused), the
  batch is not empty, the shape fits ``expected_shape``, and every value is
  finite. The last check needs values, so it is skipped under ``jit`` (a
  tracer); the others are static and always run.

  Args:
    images: (B, ...) array-like.
    expected_shape: None (any non-empty shape), or the accepted shape: a
      tuple of sizes where None accepts any size and a final ``...`` any
      trailing axes, e.g. ``(None, 8, 8, 1)`` for a batch of digits or
      ``(K, ...)`` for one group of K queries.
    name: who is checking, for the message (e.g. "Deployment 'Berrut'").

  Raises:
    ValueError: naming the problem and the accepted values.
  """
  if isinstance(images, jax.Array):  # jax arrays and tracers: no transfer to the host
    shape, dtype = tuple(images.shape), images.dtype
  else:
    try:
      array = np.asarray(images)
    except ValueError as error:  # ragged nested lists
      raise ValueError(f"{name}: images must form a rectangular float array ({error}).") from error
    shape, dtype = array.shape, array.dtype
  accepted = "" if expected_shape is None else f" of shape {format_shape(expected_shape)}"
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{name}: images must be a floating-point array{accepted} (float32, float64, float16 or "
        f"bfloat16, normalised as data.load returns them), got dtype {dtype}."
    )
  if not shape:
    raise ValueError(f"{name}: images must be a batch{accepted}, got a scalar.")
  if 0 in shape:
    wanted = "at least one image" if expected_shape is None else f"images{accepted}"
    raise ValueError(f"{name}: got an empty batch of shape {shape}; pass {wanted}.")
  if expected_shape is not None and not _shape_fits(shape, expected_shape):
    raise ValueError(f"{name}: images must have shape {format_shape(expected_shape)}, got {shape}.")
  if isinstance(images, jax.core.Tracer):
    return  # Under jit: values unknown; the static checks above still ran.
  finite = np.isfinite(np.asarray(images)).reshape(shape[0], -1).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    listed = ", ".join(map(str, bad[:10])) + (", ..." if bad.size > 10 else "")
    raise ValueError(
        f"{name}: NaN or inf in {bad.size} of {shape[0]} images (index {listed}); every value "
        "must be finite: in a coded group one such image would spoil the answers of all K "
        "queries. Drop or repair those images."
    )
