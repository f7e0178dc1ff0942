"""Interleaved timing for the benchmarks: ratios within one run on a shared machine."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np


def interleaved_times(
    functions: dict[str, Callable], repeats: int, calls: int = 1
) -> dict[str, list[float]]:
  """Seconds per call of each function in every round, timed in interleaved rounds after a warm-up."""
  for fn in functions.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in functions}
  for _ in range(repeats):
    for name, fn in functions.items():
      start = time.perf_counter()
      for _ in range(calls):
        jax.block_until_ready(fn())
      times[name].append((time.perf_counter() - start) / calls)
  return times


def interleaved(functions: dict[str, Callable], repeats: int, calls: int = 1) -> dict[str, float]:
  """Median seconds per call of each function (``interleaved_times``)."""
  times = interleaved_times(functions, repeats, calls)
  return {name: float(np.median(t)) for name, t in times.items()}
