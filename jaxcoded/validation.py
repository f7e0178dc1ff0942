"""Checks of user-given input at the Python boundary (docs/bad_input.md).

A coded scheme mixes the K queries of a group into every coded input, so one
bad query (NaN, inf, the wrong shape) would spoil the answers of the whole
group, or fail deep inside JAX with an error that names neither the query nor
the fix. :func:`check_images` says what is wrong, and what is accepted,
before anything runs.

The other kinds of input that many entry points share each go through one
function here, so that every entry point accepts and refuses the same things
with the same words:

  :func:`check_integer`      sizes (K, S, N, degrees, E, copies, n): Python and
                             numpy integers; bools, floats and strings refused;
  :func:`as_mask`            straggler / availability masks: bool arrays and
                             array-likes (lists, tuples, numpy); anything not
                             boolean refused;
  :func:`as_points`          evaluation points and interpolation nodes: real
                             numbers (integers are cast to float), 1-D, finite,
                             distinct *in the dtype they are used in*; complex,
                             bool and string points refused;
  :func:`check_float_dtype`  a ``dtype=`` argument for points: floating only.

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

__all__ = [
    "as_mask",
    "as_points",
    "check_finite_rows",
    "check_float_dtype",
    "check_images",
    "check_integer",
    "format_shape",
    "is_integer",
    "shape_fits",
]

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


def shape_fits(shape: tuple[int, ...], expected_shape: ShapeSpec) -> bool:
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
  if expected_shape is not None and not shape_fits(shape, expected_shape):
    raise ValueError(f"{name}: images must have shape {format_shape(expected_shape)}, got {shape}.")
  if isinstance(images, jax.core.Tracer):
    return  # Under jit: values unknown; the static checks above still ran.
  finite = np.isfinite(np.asarray(images)).reshape(shape[0], -1).all(axis=1)
  check_finite_rows(finite, name, ("image", "images"), "all K queries")


def check_finite_rows(
    finite: np.ndarray, name: str, noun: tuple[str, str], spoiled: str
) -> None:
  """Raises ValueError naming the rows whose (B,) ``finite`` flag is False.

  ``noun`` is (singular, plural) of what a row is; ``spoiled`` says whose
  answers one bad row would spoil in a coded group.
  """
  if finite.all():
    return
  bad = np.flatnonzero(~finite)
  listed = ", ".join(map(str, bad[:10])) + (", ..." if bad.size > 10 else "")
  one, many = noun
  raise ValueError(
      f"{name}: NaN or inf in {bad.size} of {len(finite)} {many} (index {listed}); every value "
      f"must be finite: in a coded group one such {one} would spoil the answers of {spoiled}. "
      f"Drop or repair those {many}."
  )


# ---------------------------------------------------------------------------
# Integer sizes.


def is_integer(value: object) -> bool:
  """Whether ``value`` is an integer: a Python or numpy integer, or a 0-d integer array.

  Bools (Python or numpy) are not integers here, although ``bool`` subclasses
  ``int``: ``K = True`` would silently mean K = 1. Floats are not integers
  even when whole (``2.0``), and neither are tracers (sizes fix shapes, so
  they must be static).
  """
  if isinstance(value, (bool, np.bool_)) or isinstance(value, jax.core.Tracer):
    return False
  if isinstance(value, (int, np.integer)):
    return True
  if isinstance(value, (np.ndarray, jax.Array)):
    return value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer)
  return False


def check_integer(
    value: object,
    name: str,
    minimum: int | None = None,
    *,
    what: str | None = None,
    message: str | None = None,
) -> int:
  """Returns ``value`` as a Python int, or raises ValueError unless it is an integer >= minimum.

  The one integer check of the library: every size (K, S, N, a degree, the
  number of adversaries E, of copies, of points) goes through it, so numpy
  integers (``np.int64(3)``, e.g. from a config or an array's shape) are
  accepted everywhere and bools and floats are refused everywhere
  (:func:`is_integer`).

  Args:
    value: the given size.
    name: its name in the message, e.g. "K" or "degree".
    minimum: the smallest accepted value (None: any integer).
    what: who is checking, prefixed to the default message.
    message: the whole message instead of the default one.

  Returns:
    ``int(value)``.

  Raises:
    ValueError: ``message``, or "<what>: <name> must be an integer >= <minimum>,
      got <value!r>."

  Example:
    >>> check_integer(np.int64(3), "K", 1)
    3
    >>> check_integer(True, "K", 1)
    Traceback (most recent call last):
    ...
    ValueError: K must be an integer >= 1, got True.
  """
  if is_integer(value) and (minimum is None or int(value) >= minimum):
    return int(value)
  if message is None:
    bound = "" if minimum is None else f" >= {minimum}"
    prefix = f"{what}: " if what else ""
    message = f"{prefix}{name} must be an integer{bound}, got {value!r}."
  raise ValueError(message)


# ---------------------------------------------------------------------------
# Masks.


def _dtype_and_shape(value: ArrayLike, what: str, kind: str) -> tuple[np.dtype, tuple[int, ...]]:
  """(dtype, shape) without moving a jax array to the host; refuses ragged lists."""
  if isinstance(value, jax.Array):  # jax arrays and tracers
    return value.dtype, tuple(value.shape)
  try:
    array = np.asarray(value)
  except ValueError as error:  # ragged nested lists
    raise ValueError(f"{what}: {kind} must form a rectangular array ({error}).") from error
  return array.dtype, array.shape


def as_mask(mask: ArrayLike, length: int | None, what: str, unit: str = "worker") -> jax.Array:
  """The one mask coercion: an (length,) bool array-like -> a bool ``jax.Array``.

  Accepted: bool ``jax.Array`` s (tracers too), numpy bool arrays, and lists
  or tuples of ``True`` / ``False``. Refused, with a message naming the
  dtype: integer 0/1 masks, float masks, strings (a mask is never guessed
  from numbers: an int index list ``[0, 2]`` would otherwise read as a mask).
  Only static properties (shape, dtype) are checked, so it is free under jit.

  Args:
    mask: the given mask.
    length: the number of entries expected (N workers, or nodes); None for
      any 1-D mask.
    what: who is checking, for the message.
    unit: what one entry stands for ("worker", "node").

  Returns:
    The mask as a bool ``jax.Array`` of shape (length,).

  Raises:
    ValueError: another shape, or a dtype that is not bool.
  """
  dtype, shape = _dtype_and_shape(mask, what, "mask")
  if len(shape) != 1 or (length is not None and shape != (length,)):
    expected = "(N,)" if length is None else f"({length},)"
    raise ValueError(
        f"{what}: mask has shape {shape}, expected {expected} (one boolean per {unit})."
    )
  if dtype != np.bool_:
    raise ValueError(
        f"{what}: mask must be boolean, got {dtype} (pass a bool array, or a list of "
        f"True / False, one per {unit})."
    )
  return jnp.asarray(mask)


# ---------------------------------------------------------------------------
# Evaluation points.


def check_float_dtype(dtype: object, what: str) -> np.dtype | None:
  """None, or ``dtype`` as a numpy dtype if it is floating; else ValueError.

  Points live on the real line: an integer dtype would round Chebyshev points
  to -1, 0, 1 (which then collide), a complex one is not real.
  """
  if dtype is None:
    return None
  try:
    resolved = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
  except TypeError as error:
    raise ValueError(f"{what}: dtype must be a floating dtype, got {dtype!r}.") from error
  if not jnp.issubdtype(resolved, jnp.floating):
    raise ValueError(
        f"{what}: dtype must be a floating dtype (float32 or float64) for evaluation points, "
        f"got {resolved}."
    )
  return resolved


def as_points(
    points: ArrayLike,
    name: str,
    what: str,
    *,
    dtype: object = None,
    distinct: bool = True,
    allow_empty: bool = False,
) -> jax.Array:
  """The one check of evaluation points (and interpolation nodes and targets).

  Checked, in this order: the values are real numbers (integer or floating;
  complex, bool, string and object arrays are refused, rather than silently
  made real or failing inside JAX), the array is 1-D and non-empty, every
  value is finite, and, with ``distinct``, no two are equal *after the cast*
  to the dtype they will be used in (points distinct in float64 can collide
  in float32; the message then names the dtype that separates them). Under
  ``jit`` (a tracer) only the static checks run.

  Args:
    points: the given points.
    name: e.g. "worker points", "nodes".
    what: who is checking, for the message.
    dtype: the floating dtype to use; None keeps a floating input's dtype and
      gives integers JAX's default float.
    distinct: refuse repeated points.
    allow_empty: accept shape (0,).

  Returns:
    The points as a 1-D floating ``jax.Array``.

  Raises:
    ValueError: naming the problem and what is accepted.
  """
  target = check_float_dtype(dtype, what)
  given_dtype, shape = _dtype_and_shape(points, what, name)
  if not (jnp.issubdtype(given_dtype, jnp.integer) or jnp.issubdtype(given_dtype, jnp.floating)):
    if jnp.issubdtype(given_dtype, jnp.complexfloating):
      kind = "complex: points lie on the real line, and the imaginary part is not dropped silently"
    elif given_dtype == np.bool_:
      kind = "bool"
    else:
      kind = "not numbers"
    raise ValueError(
        f"{what}: {name} must be real numbers (an integer or float array), got dtype "
        f"{given_dtype} ({kind})."
    )
  if len(shape) != 1 or (shape[0] < 1 and not allow_empty):
    qualifier = "" if allow_empty else "non-empty "
    raise ValueError(f"{what}: {name} must be a {qualifier}1-D array, got shape {shape}.")
  if target is None:
    target = (
        np.dtype(jax.dtypes.canonicalize_dtype(given_dtype))
        if jnp.issubdtype(given_dtype, jnp.floating) else np.dtype(jnp.zeros(()).dtype)
    )
  if isinstance(points, jax.core.Tracer):
    return jnp.asarray(points).astype(target)
  exact = np.asarray(points).astype(np.float64)
  if not np.all(np.isfinite(exact)):
    raise ValueError(f"{what}: {name} must be finite, got {exact}.")
  # On the host, in numpy (the same rounding as XLA's): under an enclosing jit
  # a jnp operation would return a tracer even on constants.
  host = np.asarray(points).astype(target)
  if not np.all(np.isfinite(host.astype(np.float64))):
    raise ValueError(f"{what}: {name} must be finite in {target}, got {exact}.")
  if distinct:
    order = np.sort(host)
    repeated = np.unique(order[1:][np.diff(order) == 0])
    if repeated.size:
      if np.unique(exact).size == exact.size:
        raise ValueError(
            f"{what}: {name} must be distinct, but {repeated} occur more than once when "
            f"rounded to {target} (they differ in float64). Use float64 "
            "(jax.config.update('jax_enable_x64', True) and dtype=jnp.float64) or other points."
        )
      raise ValueError(f"{what}: {name} must be distinct, got {exact}; repeated: {repeated}.")
  return jnp.asarray(host)
