"""Grouping queries: arrival order, a group of K leaves when full or when its oldest has waited.

The batcher (one thread) takes queries from a queue into groups of K; a group
leaves when full or when its oldest query has waited ``max_wait_s``; the
empty slots of a partial group are padded with zeros (their answers are
discarded).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import time
from collections.abc import Iterator

import numpy as np
import ray

__all__ = ["STOP", "Group", "Query", "groups", "pad"]

STOP = object()  # queued by shutdown: the batcher sends what it holds, then ends


@dataclasses.dataclass
class Query:
  """One accepted query: its image, its future, when it arrived, how often it was sent."""

  image: np.ndarray
  future: concurrent.futures.Future
  submitted: float
  attempts: int = 1


@dataclasses.dataclass
class Group:
  """A dispatched group: its queries, the padded batch, the workers' result refs."""

  id: int
  queries: list[Query]
  padded: np.ndarray
  refs: list[ray.ObjectRef]
  dispatched: float


def groups(source: queue.Queue, size: int, max_wait_s: float) -> Iterator[list[Query]]:
  """Batches of at most ``size`` queries from ``source``, until it yields :data:`STOP`.

  A batch starts with the next query and closes when full or ``max_wait_s``
  after its first query arrived (``Query.submitted``, monotonic clock).
  """
  while True:
    first = source.get()
    if first is STOP:
      return
    batch = [first]
    fill_deadline = first.submitted + max_wait_s
    stop = False
    while len(batch) < size:
      try:
        item = source.get(timeout=max(0.0, fill_deadline - time.monotonic()))
      except queue.Empty:
        break
      if item is STOP:
        stop = True
        break
      batch.append(item)
    yield batch
    if stop:
      return


def pad(batch: list[Query], size: int, input_shape: tuple[int, ...], dtype) -> np.ndarray:
  """(size, *input_shape) the batch's images, zero rows after the last real query."""
  padded = np.zeros((size,) + tuple(input_shape), dtype)
  padded[: len(batch)] = np.stack([q.image for q in batch])
  return padded
