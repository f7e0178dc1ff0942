"""What a valid query is, and the check every entry point runs (docs/reliability.md).

Coded computing mixes the K queries of a group: every worker input is a
combination of all of them, so ONE out-of-range query spoils the decoded
answer of every query in its group, not only its own. The library therefore
refuses, at ``CodedService.submit``, ``Deployment.__call__`` and
``Scheme.__call__``, any query that is not

* a floating-point array (float16, bfloat16, float32 or float64; raw integer
  pixels such as uint8 are refused, normalise them with
  ``data.normalise(name, images)``);
* of the shape the deployment was built for;
* finite everywhere;
* within the value range of the images ``data.load`` returns: pixels scaled
  to [0, 1] and normalised per channel, (x - mean) / std, so each channel lies
  in [-mean / std, (1 - mean) / std]. :data:`NORMALISED_RANGE` is the union of
  those intervals over every dataset (about [-1.99, 2.82]);
  :func:`value_range` gives one dataset's.

Deployments of data that are not such images pass ``query_range=None``.
"""

from __future__ import annotations

import jax
from jax.typing import ArrayLike
import numpy as np

from jaxcoded import data, validation

__all__ = ["NORMALISED_RANGE", "check", "value_range"]

# Relative slack for float rounding at the interval's ends.
_SLACK = 1e-3


def value_range(dataset: str | None = None) -> tuple[float, float]:
  """(low, high) of the normalised images of ``dataset`` (None: every dataset)."""
  names = list(data.NORMALISATION) if dataset is None else [dataset]
  lows, highs = [], []
  for name in names:
    if name not in data.NORMALISATION:
      raise ValueError(f"value_range: unknown dataset {name!r}; known: {sorted(data.NORMALISATION)}.")
    mean, std = (np.asarray(v, np.float64) for v in data.NORMALISATION[name])
    lows.append(np.min(-mean / std))
    highs.append(np.max((1 - mean) / std))
  low, high = float(min(lows)), float(max(highs))
  slack = _SLACK * (high - low)
  return low - slack, high + slack


NORMALISED_RANGE = value_range()


def check(
    queries: ArrayLike,
    expected_shape: validation.ShapeSpec | None,
    query_range: tuple[float, float] | None,
    name: str,
) -> None:
  """Raises ValueError naming the first bad query and what is expected.

  Dtype, shape and finiteness as ``validation.check_images``; then, unless
  ``query_range`` is None, every value within [low, high]. Value checks need
  concrete arrays and are skipped under ``jit``.

  Args:
    queries: (K, ...) one group, or (B, ...) a batch.
    expected_shape: the accepted shape (see ``validation.check_images``).
    query_range: (low, high), or None for no range check.
    name: who checks, for the message.
  """
  validation.check_images(queries, expected_shape, name)
  if query_range is None or isinstance(queries, jax.core.Tracer):
    return
  low, high = query_range
  values = np.asarray(queries)
  per_query = values.reshape(values.shape[0], -1)
  bad = np.flatnonzero((per_query.min(axis=1) < low) | (per_query.max(axis=1) > high))
  if bad.size:
    q = int(bad[0])
    raise ValueError(
        f"{name}: query {q} has values in [{per_query[q].min():.4g}, {per_query[q].max():.4g}], "
        f"outside the expected range [{low:.4g}, {high:.4g}] of images normalised as data.load "
        f"returns them ({bad.size} of {len(per_query)} queries are out of range). In a coded "
        "group one such query would corrupt the answers of all the others: normalise it "
        "(data.normalise(dataset, raw_pixels)) or, for data that are not such images, build the deployment with "
        "query_range=None."
    )
