"""Collecting one group's worker outputs: wait for the first, decode early, note what failed.

A *collector* waits for the first outputs of a group, ``ray.wait(refs,
num_returns=m, timeout=...)`` with ``m = min_returns`` (``Scheme.min_returns``:
R for the schemes that decode from any R outputs, 1 for those whose queries
need specific workers). It decodes, hands every answered query to
``release``, and decodes again after each further output, until every real
query is answered or the group's deadline passes; at the deadline it takes
whatever is ready. Replies after the decision are still watched, to count
failures and restarts.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Callable, NamedTuple

import numpy as np
import ray

from jaxcoded.serving import batching
from jaxcoded.serving.types import Counters, WorkerStatus

__all__ = ["Decoded", "GroupAnswers", "collect"]

_LOG = logging.getLogger(__name__)


class Decoded(NamedTuple):
  """A decode of a group on the host: (K, C) values and (K,) answered."""

  values: np.ndarray
  answered: np.ndarray


class GroupAnswers:
  """Which slots of a group were answered, and from which mask."""

  def __init__(self, group: batching.Group, num_workers: int):
    k = group.padded.shape[0]
    self.resolved = np.zeros((k,), bool)
    self.masks = np.zeros((k, num_workers), bool)


def collect(
    group: batching.Group,
    answers: GroupAnswers,
    *,
    decode: Callable[[np.ndarray, np.ndarray], Decoded],
    release: Callable[[batching.Group, GroupAnswers, Decoded, np.ndarray], None],
    output_example: np.ndarray,
    min_returns: int,
    timeout_s: float,
    counters: Counters,
    stopped: Callable[[], bool],
    profile=None,
) -> tuple[np.ndarray, tuple[str, ...]]:
  """Collects outputs until every real query is answered or the deadline passes.

  Decodes once ``min_returns`` outputs are in, then after each further output,
  and ``release`` s the answered queries each time.

  ``profile`` (a ``service.Profile``), if given, gets the seconds spent
  fetching the outputs that arrived (``fetch_s``).

  Returns:
    ((N,) bool mask of the outputs in at the decision, (N,) WorkerStatus).
  """
  n = len(group.refs)
  num_real = len(group.queries)
  outputs = [output_example] * n
  status = [WorkerStatus.LATE] * n
  worker_of = {ref: i for i, ref in enumerate(group.refs)}
  pending = list(group.refs)
  deadline = group.dispatched + timeout_s
  decoded_count = 0  # outputs in at the last decode
  expired = False
  while pending and not expired:
    returned = status.count(WorkerStatus.RETURNED)
    remaining = deadline - time.monotonic()
    expired = remaining <= 0
    # At the deadline, one last sweep takes everything that is ready.
    wanted = len(pending) if expired else min(len(pending), max(1, min_returns - returned))
    ready, pending = ray.wait(pending, num_returns=wanted, timeout=max(0.0, remaining))
    fetching = time.perf_counter()
    for ref in ready:
      _receive(ref, worker_of[ref], outputs, status, output_example, counters)
    if profile is not None and ready:
      profile.add("fetch_s", time.perf_counter() - fetching)
    mask = np.array([s == WorkerStatus.RETURNED for s in status])
    returned = int(mask.sum())
    if returned >= min_returns and returned > decoded_count:
      decoded_count = returned
      release(group, answers, decode(np.stack(outputs), mask), mask)
      if answers.resolved[:num_real].all():
        break
  for ref in pending:
    _watch_late(ref, worker_of[ref], counters, stopped)
  counters.add("unused_outputs", status.count(WorkerStatus.LATE))
  return np.array([s == WorkerStatus.RETURNED for s in status]), tuple(status)


def _receive(ref, n: int, outputs: list, status: list, output_example, counters: Counters) -> None:
  """Worker n's reply, in time for its group: its output, or why there is none."""
  try:
    output, incarnation = ray.get(ref)
  except ray.exceptions.RayError as error:
    status[n] = _note_error(n, error, counters)
    return
  counters.note_incarnation(n, incarnation)
  if output is None:  # Skipped by the worker: it started after the deadline.
    return
  output = np.asarray(output)
  if output.shape != output_example.shape or not np.all(np.isfinite(output)):
    status[n] = WorkerStatus.INVALID
    counters.add("invalid_outputs")
    return
  outputs[n] = output
  status[n] = WorkerStatus.RETURNED


def _watch_late(ref, n: int, counters: Counters, stopped: Callable[[], bool]) -> None:
  """Counts the failure or the restart that a reply after its group's decision reveals."""

  def done(future: concurrent.futures.Future) -> None:
    if stopped():  # Shutting down kills the workers: not a failure.
      return
    try:
      _, incarnation = future.result()
    except ray.exceptions.RayError as error:
      _note_error(n, error, counters)
    except Exception:  # Cancelled, or Ray shutting down.
      pass
    else:
      counters.note_incarnation(n, incarnation)

  ref.future().add_done_callback(done)


def _note_error(n: int, error: ray.exceptions.RayError, counters: Counters) -> str:
  if isinstance(error, ray.exceptions.RayActorError):
    counters.add("worker_failures")
    return WorkerStatus.FAILED
  _LOG.warning("worker %d raised: %s", n, error)
  counters.add("worker_errors")
  return WorkerStatus.ERROR
