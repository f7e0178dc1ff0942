"""What the coded service returns and counts: answers, explicit errors, records, counters."""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import NamedTuple

import numpy as np

__all__ = [
    "Answer",
    "Counters",
    "GroupRecord",
    "QueryNotDecoded",
    "ServiceStats",
    "ServiceStopped",
    "WorkerStatus",
]


class WorkerStatus:
  """What became of one worker's output for one group."""

  RETURNED = "returned"  # in time, finite: used for decoding
  LATE = "late"  # not back when the group was decided (at its deadline, or once answered)
  FAILED = "failed"  # the actor died (RayActorError): restarted by Ray
  ERROR = "error"  # the task raised
  INVALID = "invalid"  # returned NaN or inf: erased


class Answer(NamedTuple):
  """The answer to one query.

  Attributes:
    logits: (C,) decoded outputs.
    label: ``argmax(logits)``, the predicted class.
    group: the group the query was served in.
    slot: its position k in the group (0 <= k < K).
    latency_s: seconds from ``submit`` to the answer.
    mask: (N,) bool, the workers whose outputs it was decoded from:
      ``deployment(group queries, mask).values[slot]`` computes the same.
    attempts: the groups the query was sent in (1 unless it was retried).
  """

  logits: np.ndarray
  label: int
  group: int
  slot: int
  latency_s: float
  mask: np.ndarray
  attempts: int = 1


class QueryNotDecoded(RuntimeError):
  """A query that its group could not answer by the deadline.

  Attributes:
    group: the group's id.
    slot: the query's position in the group.
    worker_status: (N,) a :class:`WorkerStatus` string per worker.
    num_returned: workers whose outputs were in time.
    recovery_threshold: R of the scheme.
    timeout_s: the group's deadline, seconds after dispatch.
    latency_s: seconds from ``submit`` to this error.
    attempts: the groups the query was sent in; the attributes above describe
      the last one.
  """

  def __init__(
      self,
      group: int,
      slot: int,
      worker_status: tuple[str, ...],
      recovery_threshold: int,
      timeout_s: float,
      latency_s: float,
      attempts: int = 1,
  ):
    self.group = group
    self.slot = slot
    self.worker_status = worker_status
    self.num_returned = sum(s == WorkerStatus.RETURNED for s in worker_status)
    self.recovery_threshold = recovery_threshold
    self.timeout_s = timeout_s
    self.latency_s = latency_s
    self.attempts = attempts
    counts = collections.Counter(worker_status)
    workers = ", ".join(f"{n}: {s}" for n, s in enumerate(worker_status))
    tries = f" (attempt {attempts}; earlier attempts failed too)" if attempts > 1 else ""
    super().__init__(
        f"Query {slot} of group {group} was not decoded within {timeout_s:g} s{tries}: "
        f"{self.num_returned} of {len(worker_status)} workers returned in time (R = "
        f"{recovery_threshold}; {dict(counts)}). Workers: {workers}."
    )

  def __reduce__(self):  # Pickles (e.g. across Ray or process pools) with its attributes.
    return type(self), (
        self.group, self.slot, self.worker_status, self.recovery_threshold, self.timeout_s,
        self.latency_s, self.attempts,
    )


class ServiceStopped(RuntimeError):
  """The service was shut down."""


@dataclasses.dataclass(frozen=True)
class GroupRecord:
  """What the master did with one group (kept for the last ``keep_groups`` groups).

  Attributes:
    group: its id.
    queries: (K, ...) the group as encoded, padding included.
    num_real: how many of the K slots held real queries (the first ones).
    mask: (N,) bool, the workers whose outputs were in when the group was
      decided (every real query answered, or the deadline).
    answered: (K,) bool, the slots that got an answer (padding: False).
    answer_masks: (K, N) bool, the mask each answered slot was decoded from
      (answers leave as soon as the decoder gives them); rows of unanswered
      slots are False.
    worker_status: (N,) a :class:`WorkerStatus` string per worker.
    wait_s: seconds from dispatch to the decision.
  """

  group: int
  queries: np.ndarray
  num_real: int
  mask: np.ndarray
  answered: np.ndarray
  answer_masks: np.ndarray
  worker_status: tuple[str, ...]
  wait_s: float


@dataclasses.dataclass(frozen=True)
class ServiceStats:
  """Counters since the service started.

  Attributes:
    submitted: queries accepted by ``submit`` (rejected ones not included).
    rejected: queries refused at submit time (bad shape, dtype or values).
    answered: queries answered.
    not_decoded: queries that got a :class:`QueryNotDecoded` (after their
      last attempt).
    retried: re-sends of queries that their group could not answer (with
      ``max_retries``); a query sent three times counts 2.
    groups: groups dispatched.
    padded_slots: empty slots of partial groups.
    worker_failures: worker calls that raised ``RayActorError`` (the actor
      died), also those seen after their group was decided.
    worker_errors: worker calls that raised another error.
    worker_restarts: workers seen replying from a new process.
    unused_outputs: worker outputs not back when their group was decided (late,
      or no longer needed once every query was answered).
    invalid_outputs: worker outputs erased for NaN or inf.
  """

  submitted: int = 0
  rejected: int = 0
  answered: int = 0
  not_decoded: int = 0
  retried: int = 0
  groups: int = 0
  padded_slots: int = 0
  worker_failures: int = 0
  worker_errors: int = 0
  worker_restarts: int = 0
  unused_outputs: int = 0
  invalid_outputs: int = 0

  @property
  def pending(self) -> int:
    """Accepted queries not yet answered or failed."""
    return self.submitted - self.answered - self.not_decoded

  @property
  def errored(self) -> int:
    """Queries whose future raised: rejected at submit, or not decoded."""
    return self.rejected + self.not_decoded


class Counters:
  """The service's counters and each worker's known processes, behind one lock."""

  def __init__(self, num_workers: int, incarnations: list[set[str]] | None = None):
    self.lock = threading.Lock()
    self._counts = collections.Counter()
    self._incarnations = incarnations or [set() for _ in range(num_workers)]

  def add(self, name: str, value: int = 1) -> None:
    with self.lock:
      self._counts[name] += value

  def add_locked(self, name: str, value: int = 1) -> None:
    """``add`` for a caller that holds ``lock``."""
    self._counts[name] += value

  def snapshot(self) -> ServiceStats:
    with self.lock:
      return ServiceStats(**self._counts)

  def note_incarnation(self, n: int, incarnation: str) -> None:
    """A restart is a process id never seen before (old replies may still arrive late)."""
    with self.lock:
      if incarnation not in self._incarnations[n]:
        self._incarnations[n].add(incarnation)
        self._counts["worker_restarts"] += 1
