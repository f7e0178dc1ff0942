"""The coded inference service: a master that groups, encodes, waits for workers, decodes.

  service = CodedService.start(deployment, input_shape=(8, 8, 1), timeout_s=0.5)
  futures = service.submit(images)            # one Future per image
  predictions, errors = service.predict(images)
  service.stats(); service.shutdown()

The path of one query (DESIGN.md section 1):

1. ``submit`` checks it (shape, dtype, finite) and rejects a bad query alone,
   with a ``ValueError`` in its future; the good ones are queued.
2. The *batcher* (one thread) takes queries in arrival order into a group of K;
   a group leaves when full or when its oldest query has waited ``max_wait_s``
   (the empty slots are padded with zeros; their answers are discarded).
3. The master encodes the group and sends coded input n to worker actor n.
4. A *collector* (one thread per group in flight) waits for the first outputs,
   ``ray.wait(refs, num_returns=m, timeout=...)`` with ``m = min_returns``: R
   for the schemes that decode from any R outputs (Berrut, LCC, learned codes),
   1 for those whose queries need specific workers (uncoded, replication,
   ParM). It decodes, answers every query the decoder answers, and then
   decodes again after each further output, until every real query of the
   group is answered or the group's deadline (``timeout_s`` after dispatch)
   passes; at the deadline it takes whatever is ready. A query leaves as soon
   as it is answered: an uncoded query does not wait for its group's slowest
   worker.
5. Each query gets an :class:`Answer` (with the mask it was decoded from), or
   an explicit :class:`QueryNotDecoded` at the deadline that says which workers
   returned, failed or were late. No query is dropped. With ``max_retries > 0``
   a query its group could not answer is first sent again, in a later group
   (``stats().retried`` counts the re-sends), and fails only once its
   attempts are spent.

A worker that dies (``RayActorError``) or raises counts as a straggler for its
group; Ray restarts the actor. A worker output with NaN or inf is erased.

Why the master lives in the client's process (a plain object with threads)
rather than in an actor: it is on every query's critical path, and an actor
would add two object-store hops per query and one more process to this
2-core machine; JAX encodes and decodes in this process as well as anywhere.
Several clients would put the same object behind a Ray Serve deployment.

The service runs unchanged on a real cluster: pass ``address=`` (or call
``ray.init(address=...)`` first) and ``worker_options`` to place the actors
(e.g. ``{"num_cpus": 1}`` or ``{"num_gpus": 1}``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import queue
import threading
import time
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np
import ray
from jax.typing import ArrayLike

from jaxcoded import deployment as deployment_lib
from jaxcoded import schemes
from jaxcoded.serving import latency as latency_lib
from jaxcoded.serving import worker as worker_lib

__all__ = [
    "Answer",
    "CodedService",
    "GroupRecord",
    "QueryNotDecoded",
    "ServiceStats",
    "ServiceStopped",
    "WorkerStatus",
]

_LOG = logging.getLogger(__name__)


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


@dataclasses.dataclass
class _Query:
  image: np.ndarray
  future: concurrent.futures.Future
  submitted: float
  attempts: int = 1


@dataclasses.dataclass
class _Group:
  id: int
  queries: list[_Query]
  padded: np.ndarray
  refs: list[ray.ObjectRef]
  dispatched: float


_STOP = object()


_ANY_R_SCHEMES = (
    schemes.BerrutCode, schemes.ByzantineBerrutCode, schemes.LagrangeCode,
    schemes.PolynomialCode, schemes.LearnedLagrangeCode,
)


def default_min_returns(scheme: schemes.Scheme) -> int:
  """Fewest outputs before the master first tries to decode a group.

  R for the schemes that decode from any R outputs: Berrut decoders answer
  every query from any non-empty set of outputs, with an error that grows as
  outputs go missing, so below their nominal R = K the answer is not what the
  scheme promises; LCC and learned codes answer nothing below R, so an earlier
  try is wasted. 1 for the others (uncoded, replication, ParM, and any scheme
  not known here): their ``answered`` flags say exactly which queries a few
  specific workers recover, and each answer leaves as soon as it is there.
  """
  if isinstance(scheme, _ANY_R_SCHEMES):
    return scheme.recovery_threshold
  return 1


def _resolve(
    future: concurrent.futures.Future, result: Any = None, error: BaseException | None = None
) -> None:
  try:
    if error is None:
      future.set_result(result)
    else:
      future.set_exception(error)
  except concurrent.futures.InvalidStateError:  # Cancelled by the caller.
    pass


class CodedService:
  """A coded inference service over N Ray worker actors; create it with :meth:`start`."""

  def __init__(
      self,
      deployment: deployment_lib.Deployment,
      workers: list[Any],
      *,
      input_shape: tuple[int, ...],
      dtype: np.dtype,
      max_wait_s: float,
      timeout_s: float,
      min_returns: int,
      max_retries: int,
      shed_late_calls: bool,
      keep_groups: int,
      max_groups_in_flight: int,
      encode,
      decode,
      output_example: np.ndarray,
      incarnations: list[set[str]],
      owns_ray: bool,
  ):
    self.deployment = deployment
    self.input_shape = input_shape
    self.dtype = dtype
    self.max_wait_s = max_wait_s
    self.timeout_s = timeout_s
    self.min_returns = min_returns
    self.max_retries = max_retries
    self.shed_late_calls = shed_late_calls
    self._workers = workers
    self._encode = encode
    self._decode = decode
    self._output_example = output_example
    self._incarnations = incarnations
    self._owns_ray = owns_ray
    self._lock = threading.Lock()
    self._counts = collections.Counter()
    self._records = collections.deque(maxlen=keep_groups) if keep_groups else None
    self._group_ids = itertools.count()
    self._queue: queue.Queue = queue.Queue()
    self._stopped = False
    self._collectors = concurrent.futures.ThreadPoolExecutor(
        max_groups_in_flight, thread_name_prefix="jaxcoded-collector"
    )
    self._batcher = threading.Thread(target=self._batch_loop, name="jaxcoded-batcher", daemon=True)
    self._batcher.start()

  # -- starting -------------------------------------------------------------------

  @classmethod
  def start(
      cls,
      deployment: deployment_lib.Deployment,
      *,
      input_shape: Sequence[int],
      dtype: Any = np.float32,
      latency: latency_lib.WorkerLatency | Sequence[latency_lib.WorkerLatency] | None = None,
      max_wait_s: float = 0.01,
      timeout_s: float = 1.0,
      min_returns: int | None = None,
      max_retries: int = 0,
      shed_late_calls: bool = True,
      task_sources: Sequence[worker_lib.TaskSource] | None = None,
      address: str | None = None,
      ray_init_kwargs: dict[str, Any] | None = None,
      worker_options: dict[str, Any] | None = None,
      keep_groups: int = 0,
      max_groups_in_flight: int = 64,
      ready_timeout_s: float = 300.0,
  ) -> "CodedService":
    """Starts N worker actors and the master; returns when every worker is ready.

    Args:
      deployment: the scheme and the task of each worker.
      input_shape: shape of one query, e.g. (8, 8, 1).
      dtype: floating dtype the queries are cast to.
      latency: injected latency, one ``WorkerLatency`` for all workers or N of
        them (see :func:`latency.latency_profile`); None injects nothing.
      max_wait_s: longest time a query waits for its group to fill.
      timeout_s: a group's deadline, seconds after it is sent to the workers.
      min_returns: outputs in before the first decode of a group (default:
        :func:`default_min_returns`).
      max_retries: times a query its group could not answer by the deadline
        is sent again, in a later group, before it fails with
        :class:`QueryNotDecoded` (0: never). A retry helps against transient
        faults (a worker restarting, a burst of stragglers); its latency adds
        up to ``timeout_s`` per attempt.
      shed_late_calls: workers skip a call that starts after its group's
        deadline (sent with the call), so a slow worker sheds its backlog.
      task_sources: optional N task sources overriding ``deployment.worker(n)``,
        e.g. callables that load a checkpoint on the worker's machine.
      address: Ray address to connect to when Ray is not initialised yet
        (None: start a local instance, or ``RAY_ADDRESS``).
      ray_init_kwargs: more arguments for ``ray.init`` in that case (e.g.
        ``num_cpus``, ``runtime_env``).
      worker_options: Ray actor options for the workers (default
        ``{"num_cpus": 0}``: simulated workers hold no CPU slot).
      keep_groups: keep a :class:`GroupRecord` of the last this many groups.
      max_groups_in_flight: groups collected concurrently (threads).
      ready_timeout_s: how long to wait for the workers to start.

    Returns:
      The running service.
    """
    scheme = deployment.scheme
    n = deployment.num_workers
    input_shape = tuple(int(d) for d in input_shape)
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
      raise ValueError(f"CodedService: dtype must be a floating type, got {dtype}.")
    for name, value in (("max_wait_s", max_wait_s), ("timeout_s", timeout_s)):
      if not np.isfinite(value) or value < 0 or (name == "timeout_s" and value == 0):
        raise ValueError(f"CodedService: {name} must be finite and positive, got {value!r}.")
    if min_returns is None:
      min_returns = default_min_returns(scheme)
    if not 1 <= min_returns <= n:
      raise ValueError(f"CodedService: min_returns must be in 1..{n}, got {min_returns!r}.")
    if isinstance(max_retries, bool) or not isinstance(max_retries, (int, np.integer)) or (
        max_retries < 0
    ):
      raise ValueError(
          f"CodedService: max_retries must be an integer >= 0, got {max_retries!r}."
      )
    latencies = _per_worker(latency, n)
    if task_sources is None:
      task_sources = [deployment.worker(i) for i in range(n)]
    sources = list(task_sources)
    if len(sources) != n:
      raise ValueError(f"CodedService: {len(sources)} task sources for N = {n} workers.")
    sources = [_host_task(source) for source in sources]

    owns_ray = not ray.is_initialized()
    if owns_ray:
      ray.init(address=address, **{"include_dashboard": False, **(ray_init_kwargs or {})})
    workers = []
    try:
      encode = jax.jit(deployment.encode)
      decode = jax.jit(deployment.decode)
      coded = np.asarray(encode(np.zeros((deployment.num_queries,) + input_shape, dtype)))
      options = {
          "num_cpus": 0, "max_restarts": -1, "max_task_retries": 0, **(worker_options or {})
      }
      remote = ray.remote(worker_lib.CodedWorker).options(**options)
      enable_x64 = bool(jax.config.jax_enable_x64)
      for i in range(n):
        workers.append(remote.remote(i, sources[i], latencies[i], coded[i], enable_x64))
      probes = ray.get([w.probe.remote() for w in workers], timeout=ready_timeout_s)
      outputs = np.stack([output for output, _ in probes])
      decode(outputs, np.ones((n,), bool))  # Compiles the decoder before the first group.
    except BaseException:
      for w in workers:
        ray.kill(w, no_restart=True)
      if owns_ray:
        ray.shutdown()
      raise
    return cls(
        deployment, workers, input_shape=input_shape, dtype=dtype, max_wait_s=max_wait_s,
        timeout_s=timeout_s, min_returns=min_returns, max_retries=int(max_retries),
        shed_late_calls=shed_late_calls,
        keep_groups=keep_groups, max_groups_in_flight=max_groups_in_flight, encode=encode,
        decode=decode, output_example=np.zeros_like(outputs[0]),
        incarnations=[{incarnation} for _, incarnation in probes], owns_ray=owns_ray,
    )

  # -- the client API -------------------------------------------------------------

  def submit(self, images: ArrayLike | Sequence[ArrayLike]) -> list[concurrent.futures.Future]:
    """Queues B queries; returns one future per query, in order.

    A future's result is an :class:`Answer`; it raises :class:`QueryNotDecoded`
    when its group could not answer it in time, or ``ValueError`` when the query
    itself was rejected (wrong shape, non-numeric dtype, NaN or inf): a bad
    query is refused alone, and the rest of the batch is served.

    Args:
      images: (B, *input_shape) array, or a sequence of B queries.

    Raises:
      ServiceStopped: after :meth:`shutdown`.
      ValueError: ``images`` is an array without a leading batch axis.
    """
    if isinstance(images, (list, tuple)):
      rows = list(images)
    else:
      images = np.asarray(images)
      if images.ndim != len(self.input_shape) + 1:
        raise ValueError(
            f"CodedService.submit: images must have shape (B, *{self.input_shape}), got "
            f"{images.shape} (wrap one image as images[None])."
        )
      rows = list(images)
    futures = []
    with self._lock:
      if self._stopped:
        raise ServiceStopped("CodedService.submit: the service was shut down.")
      for row in rows:
        future = concurrent.futures.Future()
        futures.append(future)
        try:
          image = self._check_query(row)
        except ValueError as error:
          self._counts["rejected"] += 1
          future.set_exception(error)
          continue
        self._counts["submitted"] += 1
        self._queue.put(_Query(image, future, time.monotonic()))
    return futures

  def predict(
      self, images: ArrayLike | Sequence[ArrayLike], timeout: float | None = None
  ) -> tuple[np.ndarray, list[BaseException | None]]:
    """Serves B queries and waits for all of them.

    Args:
      images: (B, *input_shape) array, or a sequence of B queries.
      timeout: seconds to wait for each answer (None: as long as it takes;
        every query gets an answer or an error by its group's deadline).

    Returns:
      ``(labels, errors)``: (B,) predicted classes, -1 where a query failed,
      and B entries that are None or the query's exception.
    """
    futures = self.submit(images)
    labels = np.full((len(futures),), -1, np.int64)
    errors: list[BaseException | None] = []
    for i, future in enumerate(futures):
      error = future.exception(timeout)
      errors.append(error)
      if error is None:
        labels[i] = future.result().label
    return labels, errors

  def stats(self) -> ServiceStats:
    """A snapshot of the counters."""
    with self._lock:
      return ServiceStats(**self._counts)

  def group_records(self) -> list[GroupRecord]:
    """The records of the last ``keep_groups`` groups, oldest first."""
    with self._lock:
      return list(self._records or ())

  def kill_worker(self, index: int) -> None:
    """Kills worker ``index``'s process now (chaos testing); Ray restarts it."""
    if not 0 <= index < len(self._workers):
      raise ValueError(
          f"CodedService.kill_worker: worker {index} is not in 0..{len(self._workers) - 1}."
      )
    ray.kill(self._workers[index], no_restart=False)

  @property
  def num_workers(self) -> int:
    return len(self._workers)

  def shutdown(self) -> None:
    """Serves what was submitted, then stops the workers (and Ray, if it started it).

    A query whose group fails once shutdown has begun is not retried: it gets
    its :class:`QueryNotDecoded` at once.
    """
    with self._lock:
      if self._stopped:
        return
      self._stopped = True
      self._queue.put(_STOP)
    self._batcher.join()
    self._collectors.shutdown(wait=True)
    for w in self._workers:
      ray.kill(w, no_restart=True)
    if self._owns_ray:
      ray.shutdown()

  def __enter__(self) -> "CodedService":
    return self

  def __exit__(self, *exc_info) -> None:
    self.shutdown()

  # -- the master -----------------------------------------------------------------

  def _check_query(self, image: ArrayLike) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype.kind not in "fiu":
      raise ValueError(
          f"CodedService: a query must hold real numbers, got dtype {array.dtype} "
          f"(shape {array.shape})."
      )
    if array.shape != self.input_shape:
      raise ValueError(
          f"CodedService: a query must have shape {self.input_shape}, got {array.shape}."
      )
    array = array.astype(self.dtype)
    if not np.all(np.isfinite(array)):
      raise ValueError(
          f"CodedService: a query holds {int(np.sum(~np.isfinite(array)))} NaN or inf values."
      )
    return array

  def _batch_loop(self) -> None:
    k = self.deployment.num_queries
    stop = False
    while not stop:
      first = self._queue.get()
      if first is _STOP:
        return
      batch = [first]
      fill_deadline = first.submitted + self.max_wait_s
      while len(batch) < k:
        try:
          item = self._queue.get(timeout=max(0.0, fill_deadline - time.monotonic()))
        except queue.Empty:
          break
        if item is _STOP:
          stop = True
          break
        batch.append(item)
      self._dispatch(batch)

  def _dispatch(self, batch: list[_Query]) -> None:
    k = self.deployment.num_queries
    group_id = next(self._group_ids)
    try:
      padded = np.zeros((k,) + self.input_shape, self.dtype)
      padded[: len(batch)] = np.stack([q.image for q in batch])
      coded = np.asarray(self._encode(padded))
      # Workers skip calls that start after the deadline (wall clock: worker
      # machines share it through NTP to well within a deadline).
      deadline = time.time() + self.timeout_s if self.shed_late_calls else None
      refs = [w.run.remote(coded[n], deadline) for n, w in enumerate(self._workers)]
    except Exception as error:  # An encoder failure fails its queries, not the service.
      _LOG.exception("group %d: dispatch failed", group_id)
      with self._lock:
        self._counts["not_decoded"] += len(batch)
      for q in batch:
        _resolve(q.future, error=error)
      return
    with self._lock:
      self._counts["groups"] += 1
      self._counts["padded_slots"] += k - len(batch)
    group = _Group(group_id, batch, padded, refs, time.monotonic())
    self._collectors.submit(self._collect, group)

  def _collect(self, group: _Group) -> None:
    answers = _GroupAnswers(group, self.num_workers)
    try:
      mask, status = self._collect_outputs(group, answers)
      self._finish(group, answers, mask, status)
    except BaseException as error:  # Never leave a query without an outcome.
      _LOG.exception("group %d: collection failed", group.id)
      for q in group.queries:
        if not q.future.done():
          with self._lock:
            self._counts["not_decoded"] += 1
          _resolve(q.future, error=error)

  def _collect_outputs(self, group: _Group, answers: "_GroupAnswers"):
    """Collects outputs until every real query is answered or the deadline passes.

    Decodes once ``min_returns`` outputs are in, then after each further
    output, and releases every query as soon as it is answered.
    """
    n = self.num_workers
    num_real = len(group.queries)
    outputs = [self._output_example] * n
    status = [WorkerStatus.LATE] * n
    worker_of = {ref: i for i, ref in enumerate(group.refs)}
    pending = list(group.refs)
    deadline = group.dispatched + self.timeout_s
    decoded_count = 0  # outputs in at the last decode
    expired = False
    while pending and not expired:
      returned = status.count(WorkerStatus.RETURNED)
      remaining = deadline - time.monotonic()
      expired = remaining <= 0
      # At the deadline, one last sweep takes everything that is ready.
      wanted = len(pending) if expired else min(len(pending), max(1, self.min_returns - returned))
      ready, pending = ray.wait(pending, num_returns=wanted, timeout=max(0.0, remaining))
      for ref in ready:
        self._receive(ref, worker_of[ref], outputs, status)
      mask = np.array([s == WorkerStatus.RETURNED for s in status])
      returned = int(mask.sum())
      if returned >= self.min_returns and returned > decoded_count:
        decoded_count = returned
        self._release(group, answers, self._decode_outputs(outputs, mask), mask)
        if answers.resolved[:num_real].all():
          break
    for ref in pending:
      self._watch_late(ref, worker_of[ref])
    with self._lock:
      self._counts["unused_outputs"] += status.count(WorkerStatus.LATE)
    return np.array([s == WorkerStatus.RETURNED for s in status]), tuple(status)

  def _release(
      self, group: _Group, answers: "_GroupAnswers", decoded: "_Decoded", mask: np.ndarray
  ) -> None:
    """Answers the real queries that ``decoded`` answers and that are still waiting."""
    now = time.monotonic()
    released = []
    for slot, q in enumerate(group.queries):
      if answers.resolved[slot] or not decoded.answered[slot]:
        continue
      logits = decoded.values[slot]
      answers.resolved[slot] = True
      answers.masks[slot] = mask
      released.append((q.future, Answer(
          logits, int(np.argmax(logits)), group.id, slot, now - q.submitted, mask.copy(),
          q.attempts,
      )))
    # Counted before the futures resolve: a client that holds its answer sees it counted.
    with self._lock:
      self._counts["answered"] += len(released)
    for future, answer in released:
      _resolve(future, answer)

  def _finish(
      self, group: _Group, answers: "_GroupAnswers", mask: np.ndarray, status: tuple[str, ...]
  ) -> None:
    """Retries or explicit errors for the queries left unanswered; the group's record."""
    finished = time.monotonic()
    failed = []
    for slot, q in enumerate(group.queries):
      if answers.resolved[slot] or self._retry(q):
        continue
      failed.append((q.future, QueryNotDecoded(
          group.id, slot, status, self.deployment.scheme.recovery_threshold, self.timeout_s,
          finished - q.submitted, q.attempts,
      )))
    with self._lock:
      self._counts["not_decoded"] += len(failed)
      if self._records is not None:
        self._records.append(GroupRecord(
            group.id, group.padded, len(group.queries), mask, answers.resolved.copy(),
            answers.masks.copy(), status, finished - group.dispatched,
        ))
    for future, error in failed:
      _resolve(future, error=error)

  def _retry(self, query: _Query) -> bool:
    """Queues ``query`` again if it has attempts left and the service is running."""
    if query.attempts > self.max_retries or query.future.cancelled():
      return False
    with self._lock:
      # Under the lock that ``shutdown`` takes to queue its stop marker: a retry
      # is queued before the marker (and served), or not at all (and fails).
      if self._stopped:
        return False
      self._counts["retried"] += 1
      self._queue.put(_Query(query.image, query.future, query.submitted, query.attempts + 1))
    return True

  def _receive(self, ref: ray.ObjectRef, n: int, outputs: list, status: list) -> None:
    """Worker n's reply, in time for its group: its output, or why there is none."""
    try:
      output, incarnation = ray.get(ref)
    except ray.exceptions.RayError as error:
      status[n] = self._note_error(n, error)
      return
    self._note_incarnation(n, incarnation)
    if output is None:  # Skipped by the worker: it started after the deadline.
      return
    output = np.asarray(output)
    if output.shape != self._output_example.shape or not np.all(np.isfinite(output)):
      status[n] = WorkerStatus.INVALID
      with self._lock:
        self._counts["invalid_outputs"] += 1
      return
    outputs[n] = output
    status[n] = WorkerStatus.RETURNED

  def _watch_late(self, ref: ray.ObjectRef, n: int) -> None:
    """Counts the failure or the restart that a reply after its group's decision reveals."""

    def done(future: concurrent.futures.Future) -> None:
      if self._stopped:  # Shutting down kills the workers: not a failure.
        return
      try:
        _, incarnation = future.result()
      except ray.exceptions.RayError as error:
        self._note_error(n, error)
      except Exception:  # Cancelled, or Ray shutting down.
        pass
      else:
        self._note_incarnation(n, incarnation)

    ref.future().add_done_callback(done)

  def _note_error(self, n: int, error: ray.exceptions.RayError) -> str:
    if isinstance(error, ray.exceptions.RayActorError):
      with self._lock:
        self._counts["worker_failures"] += 1
      return WorkerStatus.FAILED
    _LOG.warning("worker %d raised: %s", n, error)
    with self._lock:
      self._counts["worker_errors"] += 1
    return WorkerStatus.ERROR

  def _note_incarnation(self, n: int, incarnation: str) -> None:
    """A restart is a process id never seen before (old replies may still arrive late)."""
    with self._lock:
      if incarnation not in self._incarnations[n]:
        self._incarnations[n].add(incarnation)
        self._counts["worker_restarts"] += 1

  def _decode_outputs(self, outputs: list[np.ndarray], mask: np.ndarray) -> "_Decoded":
    decoded = self._decode(np.stack(outputs), mask)
    return _Decoded(np.asarray(decoded.values), np.asarray(decoded.answered))


class _Decoded(NamedTuple):
  values: np.ndarray
  answered: np.ndarray


class _GroupAnswers:
  """Which slots of a group were answered, and from which mask."""

  def __init__(self, group: _Group, num_workers: int):
    k = group.padded.shape[0]
    self.resolved = np.zeros((k,), bool)
    self.masks = np.zeros((k, num_workers), bool)


def _per_worker(latency, num_workers: int) -> list[latency_lib.WorkerLatency]:
  if latency is None:
    return [latency_lib.WorkerLatency()] * num_workers
  if isinstance(latency, latency_lib.WorkerLatency):
    return [latency] * num_workers
  latency = list(latency)
  if len(latency) != num_workers or not all(
      isinstance(item, latency_lib.WorkerLatency) for item in latency
  ):
    raise ValueError(
        f"CodedService: latency must be one WorkerLatency or {num_workers} of them (one per "
        f"worker), got {len(latency)} items."
    )
  return latency


def _host_task(source: worker_lib.TaskSource) -> worker_lib.TaskSource:
  """A task with its parameters as host numpy arrays (cheap to ship to the actors)."""
  if isinstance(source, deployment_lib.WorkerTask):
    return deployment_lib.WorkerTask(source.fn, jax.device_get(source.params))
  return source
