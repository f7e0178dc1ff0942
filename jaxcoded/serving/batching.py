"""Grouping queries: arrival order, a group of K leaves when full, when idle or when its oldest waited.

The batcher (one thread) takes queries from a queue into groups of K. Each
item of the queue is one query or a list of queries (one ``submit``: its
queries stay in arrival order and are never split by another client's). A
group leaves

- when it is full;
- ``flush="adaptive"``: as soon as waiting longer cannot fill it, i.e. the
  queue is empty and ``idle()`` says that no query is on its way (the HTTP
  front end announces the requests it is still reading or parsing). A lone
  client is then not charged ``max_wait_s``; under load the queue refills
  while a group is dispatched, so groups fill by themselves;
- when its oldest query has waited ``max_wait_s`` (both policies).

The empty slots of a partial group are padded with zeros (their answers are
discarded).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import queue
import time
from collections.abc import Callable, Iterator

import numpy as np
import ray

__all__ = ["FLUSH_POLICIES", "NUDGE", "STOP", "Group", "Query", "groups", "pad"]

STOP = object()  # queued by shutdown: the batcher sends what it holds, then ends
NUDGE = object()  # queued when ``idle()`` may have become true: the batcher looks again
FLUSH_POLICIES = ("adaptive", "timer")


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


def groups(
    source: queue.Queue,
    size: int,
    max_wait_s: float,
    *,
    flush: str = "timer",
    idle: Callable[[], bool] | None = None,
) -> Iterator[list[Query]]:
  """Batches of at most ``size`` queries from ``source``, until it yields :data:`STOP`.

  A batch starts with the next query and closes when full, ``max_wait_s``
  after its first query arrived (``Query.submitted``, monotonic clock), or,
  with ``flush="adaptive"``, as soon as ``source`` is empty and ``idle()``
  holds (default: always idle once the queue is empty).

  Args:
    source: a queue of :class:`Query`, lists of them, :data:`NUDGE` and
      :data:`STOP`.
    size: K, the largest batch.
    max_wait_s: the longest a batch waits for its first query's company.
    flush: ``"timer"`` (close on size or age only) or ``"adaptive"``.
    idle: with ``"adaptive"``, whether no query is on its way to ``source``;
      whoever makes it true puts a :data:`NUDGE` on ``source``.

  Yields:
    Lists of 1 to ``size`` queries, in arrival order.
  """
  if flush not in FLUSH_POLICIES:
    raise ValueError(f"flush must be one of {FLUSH_POLICIES}, got {flush!r}.")
  adaptive = flush == "adaptive"
  idle = idle or (lambda: True)
  held: collections.deque = collections.deque()  # taken from the queue, not yet batched
  stopping = False

  def take(timeout: float | None) -> Query | None:
    """The next query, or None on timeout, NUDGE or STOP (``stopping`` is then set)."""
    nonlocal stopping
    if held:
      return held.popleft()
    if stopping:
      return None
    try:
      item = source.get(timeout=timeout) if timeout is None or timeout > 0 else (
          source.get_nowait())
    except queue.Empty:
      return None
    if item is STOP:
      stopping = True
      return None
    if item is NUDGE:
      return None
    if isinstance(item, list):
      held.extend(item)
      return held.popleft() if held else None
    return item

  while True:
    first = None
    while first is None:
      if stopping and not held:
        return
      first = take(None)
    batch = [first]
    fill_deadline = first.submitted + max_wait_s
    while len(batch) < size:
      if adaptive and not held and source.empty() and idle():
        break  # nothing waits and nothing is coming: waiting cannot fill the group
      remaining = fill_deadline - time.monotonic()
      if remaining <= 0 and not held and source.empty():
        break
      item = take(max(0.0, remaining))
      if item is None:
        if stopping or (time.monotonic() >= fill_deadline and not held and source.empty()):
          break
        continue  # a NUDGE, or a list that was empty: look again
      batch.append(item)
    yield batch


def pad(batch: list[Query], size: int, input_shape: tuple[int, ...], dtype) -> np.ndarray:
  """``(size, *input_shape)``: the batch's images, zero rows after the last real query."""
  padded = np.zeros((size,) + tuple(input_shape), dtype)
  padded[: len(batch)] = np.stack([q.image for q in batch])
  return padded
