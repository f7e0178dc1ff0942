"""Interleaved timing for the benchmarks: ratios within one run on a shared machine."""

from __future__ import annotations

import ctypes
import resource
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


def process_cost(fn: Callable, min_seconds: float = 0.25) -> tuple[float, float]:
  """(minor page faults per call, CPU seconds per wall second) of this process running ``fn``.

  Calls ``fn`` after a warm-up call until ``min_seconds`` have passed (the
  kernel's CPU accounting is coarse for shorter spans). CPU time counts user
  and system time of all threads: about 1 for a computation on one core, up
  to the core count on all of them.
  """
  jax.block_until_ready(fn())
  before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  calls = 0
  while not calls or time.perf_counter() - start < min_seconds:
    jax.block_until_ready(fn())
    calls += 1
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_SELF)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return (after.ru_minflt - before.ru_minflt) / calls, cpu / wall


def recycle_buffers(limit: int = 1 << 30) -> None:
  """Make glibc's malloc keep freed blocks of up to ``limit`` bytes in its heap.

  By default glibc serves a block above its mmap threshold (dynamic, at most
  32 MiB on 64-bit Linux) with a fresh ``mmap`` and unmaps it when freed; heap
  memory above the trim threshold is likewise returned to the kernel. XLA's
  CPU buffers come from malloc, so a jitted function with a large output then
  pays for the kernel to zero every page of that output on each call. Raising
  both thresholds (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``)
  lets the next call reuse the freed pages; one arena (``M_ARENA_MAX``) keeps
  XLA's threads from allocating in per-thread heaps, which glibc trims on
  its own terms. Process-wide; glibc only; call it before JAX starts its
  threads (before the first computation).
  """
  libc = ctypes.CDLL("libc.so.6")
  m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # <malloc.h>
  settings = ((m_arena_max, 1), (m_mmap_threshold, limit), (m_trim_threshold, limit))
  if not all(libc.mallopt(option, value) for option, value in settings):
    raise RuntimeError("mallopt refused the settings")
