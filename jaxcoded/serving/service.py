"""The coded inference service: a master that groups, encodes, waits for workers, decodes.

  service = CodedService.start(deployment, input_shape=(8, 8, 1), timeout_s=0.5)
  futures = service.submit(images)            # one Future per image
  predictions, errors = service.predict(images)
  service.stats(); service.shutdown()

The path of one query (docs/design.md, "The service"):

1. ``submit`` checks it (``jaxcoded.queries``: float dtype, shape, finite, in
   the deployment's value range) and rejects a bad query alone, with a
   ``ValueError`` in its future; the good ones are queued. A query outside the
   range would corrupt every answer of its group, so it never joins one.
2. The *batcher* (one thread, ``serving.batching``) takes queries in arrival
   order into a group of K.
3. The master encodes the group and sends coded input n to worker actor n.
4. A *collector* (one thread per group in flight, ``serving.collection``)
   waits for the first ``min_returns`` outputs (``Scheme.min_returns``),
   decodes, answers every query the decoder answers, and decodes again after
   each further output, until every real query of the group is answered or
   the group's deadline (``timeout_s`` after dispatch) passes. A query leaves
   as soon as it is answered: an uncoded query does not wait for its group's
   slowest worker.
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
Several clients reach it over HTTP behind a Ray Serve deployment
(``serving.http``).

``shutdown`` may be called from any thread, also from a future's done
callback (which runs on the service's own threads): it is idempotent and
always stops the actors it started.

The service runs unchanged on a real cluster: pass ``address=`` (or call
``ray.init(address=...)`` first) and ``worker_options`` to place the actors
(e.g. ``{"num_cpus": 1}`` or ``{"num_gpus": 1}``). The workers are spread over
the nodes (``scheduling_strategy="SPREAD"``, ``serving.actors``); a cluster that
cannot place them all is refused at once with the CPUs (GPUs, ...) needed and
available. ``shutdown`` returns once every worker actor is dead (its process
gone), not merely asked to die.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import queue
import threading
import time
from typing import Any, Sequence

import jax
import numpy as np
import ray
from jax.typing import ArrayLike

from jaxcoded import deployment as deployment_lib
from jaxcoded import queries as queries_lib
from jaxcoded.serving import actors as actors_lib
from jaxcoded.serving import batching, collection
from jaxcoded.serving import latency as latency_lib
from jaxcoded.serving import worker as worker_lib
from jaxcoded.serving.types import (
  Answer,
  Counters,
  GroupRecord,
  QueryNotDecoded,
  ServiceStats,
  ServiceStopped,
)

__all__ = ["CodedService", "Profile", "default_min_returns"]

_LOG = logging.getLogger(__name__)
_FINITE = queries_lib.QuerySpec(what="queries")


def default_min_returns(scheme) -> int:
  """Fewest outputs before the master first tries to decode a group: ``scheme.min_returns``."""
  return scheme.min_returns


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


class Profile:
  """Where the master's time goes: seconds per stage, summed over groups (thread-safe).

  ``encode_s`` (pad and encode a group), ``dispatch_s`` (the N ``.remote``
  calls that ship the coded inputs), ``fetch_s`` (``ray.get`` of the outputs
  that arrived: deserialization), ``decode_s`` (each decode), ``release_s``
  (answers built and futures resolved). Wall time measured with
  ``time.perf_counter`` on the master's threads; divide by ``stats().groups``
  for a per-group cost.
  """

  STAGES = ("encode_s", "dispatch_s", "fetch_s", "decode_s", "release_s")

  def __init__(self):
    self._lock = threading.Lock()
    self._totals = collections.Counter()

  def add(self, stage: str, seconds: float) -> None:
    with self._lock:
      self._totals[stage] += seconds

  def snapshot(self) -> dict[str, float]:
    with self._lock:
      return {stage: float(self._totals[stage]) for stage in self.STAGES}


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
      flush: str = "timer",
      stop_timeout_s: float = 30.0,
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
    self._owns_ray = owns_ray
    self.flush = flush
    self.stop_timeout_s = stop_timeout_s
    self.profile = Profile()
    self._expected = 0  # submits announced by ``expecting`` and not made yet
    self._survivors: list[int] = []
    self._counters = Counters(len(workers), incarnations)
    self._records = collections.deque(maxlen=keep_groups) if keep_groups else None
    self._group_ids = itertools.count()
    self._queue: queue.Queue = queue.Queue()
    self._stopped = False
    self._stopper: threading.Thread | None = None
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
      flush: str = "timer",
      check_resources: bool = True,
      stop_timeout_s: float = 30.0,
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
        the scheme's ``min_returns``).
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
      worker_options: Ray actor options for the workers, over the defaults
        ``{"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0,
        "scheduling_strategy": "SPREAD"}`` (simulated workers hold no CPU
        slot; Ray restarts a dead one; the actors spread over the nodes).
      keep_groups: keep a :class:`GroupRecord` of the last this many groups.
      max_groups_in_flight: groups collected concurrently (threads).
      ready_timeout_s: how long to wait for the workers to start; at the
        end a TimeoutError names the workers that are not up.
      flush: when a partial group leaves (``serving.batching``): ``"timer"``
        after ``max_wait_s``; ``"adaptive"`` as soon as nothing is queued or
        announced (:meth:`expecting`), so a lone client does not wait.
      check_resources: refuse at once (ValueError naming the resources
        needed and available) when the cluster cannot place every worker.
      stop_timeout_s: how long :meth:`shutdown` waits for the actors to die.

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
      min_returns = scheme.min_returns
    if not 1 <= min_returns <= n:
      raise ValueError(f"CodedService: min_returns must be in 1..{n}, got {min_returns!r}.")
    if isinstance(max_retries, bool) or not isinstance(max_retries, (int, np.integer)) or (
        max_retries < 0
    ):
      raise ValueError(
          f"CodedService: max_retries must be an integer >= 0, got {max_retries!r}."
      )
    if flush not in batching.FLUSH_POLICIES:
      raise ValueError(f"CodedService: flush must be one of {batching.FLUSH_POLICIES}, got "
                       f"{flush!r}.")
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
      blank = np.zeros((deployment.num_queries,) + input_shape, dtype)
      coded = np.asarray(encode(blank))
      options = actors_lib.actor_options(worker_options)
      if check_resources:
        actors_lib.check_resources(options, n, "coded workers")
      remote = ray.remote(worker_lib.CodedWorker).options(**options)
      enable_x64 = bool(jax.config.jax_enable_x64)
      for i in range(n):
        workers.append(remote.remote(i, sources[i], latencies[i], coded[i], enable_x64))
      probes = _wait_ready(workers, options, ready_timeout_s)
      outputs = np.stack([output for output, _ in probes])
      # Compiles the decoder before the first group (with the group only where it reads it).
      decode(outputs, np.ones((n,), bool), blank if deployment.scheme.decode_reads_queries else None)
    except BaseException:
      actors_lib.kill_and_wait(workers, stop_timeout_s)
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
        flush=flush, stop_timeout_s=stop_timeout_s,
    )

  # -- the client API -------------------------------------------------------------

  def submit(self, images: ArrayLike | Sequence[ArrayLike]) -> list[concurrent.futures.Future]:
    """Queues B queries; returns one future per query, in order.

    A future's result is an :class:`Answer`; it raises :class:`QueryNotDecoded`
    when its group could not answer it in time, or ``ValueError`` when the query
    itself was rejected (``jaxcoded.queries``: not a float array of the input
    shape, NaN or inf, or outside the deployment's value range): a bad query is
    refused alone, and the rest of the batch is served.

    Args:
      images: ``(B, *input_shape)`` array, or a sequence of B queries.

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
    futures, rejected, accepted = [], [], []
    checked = []
    for i, row in enumerate(rows):  # outside the lock: checking is the costly part
      try:
        checked.append((self.check_query(row, i), None))
      except ValueError as error:
        checked.append((None, error))
    with self._counters.lock:
      if self._stopped:
        raise ServiceStopped("CodedService.submit: the service was shut down.")
      now = time.monotonic()
      for image, error in checked:
        future = concurrent.futures.Future()
        futures.append(future)
        if error is not None:
          self._counters.add_locked("rejected")
          rejected.append((future, error))
          continue
        self._counters.add_locked("submitted")
        accepted.append(batching.Query(image, future, now))
      if accepted:  # one item: a submit's queries stay together, in order
        self._queue.put(accepted)
    for future, error in rejected:  # outside the lock: a done-callback may call back in
      _resolve(future, error=error)
    return futures

  def predict(
      self, images: ArrayLike | Sequence[ArrayLike], timeout: float | None = None
  ) -> tuple[np.ndarray, list[BaseException | None]]:
    """Serves B queries and waits for all of them.

    Args:
      images: ``(B, *input_shape)`` array, or a sequence of B queries.
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
    return self._counters.snapshot()

  def group_records(self) -> list[GroupRecord]:
    """The records of the last ``keep_groups`` groups, oldest first."""
    with self._counters.lock:
      return list(self._records or ())

  def kill_worker(self, index: int, wait_s: float = 30.0) -> None:
    """Kills worker ``index``'s process (chaos testing); Ray restarts it.

    Returns once the killed process has exited (``ray.kill`` alone returns
    before), so calls sent afterwards cannot reach it; at most ``wait_s``.

    Raises:
      TimeoutError: the process still ran after ``wait_s``.
    """
    if not 0 <= index < len(self._workers):
      raise ValueError(
          f"CodedService.kill_worker: worker {index} is not in 0..{len(self._workers) - 1}."
      )
    if not actors_lib.kill_and_wait_restartable(self._workers[index], wait_s):
      raise TimeoutError(f"CodedService.kill_worker: worker {index} still ran {wait_s:g} s "
                         "after ray.kill.")

  @contextlib.contextmanager
  def expecting(self, count: int = 1):
    """Announces ``count`` submits on their way (a request being read or parsed).

    With ``flush="adaptive"`` a partial group waits (at most ``max_wait_s``)
    while submits are announced, instead of leaving at once:

      with service.expecting():
        queries = parse(body)
        futures = service.submit(queries)
    """
    with self._counters.lock:
      self._expected += count
    try:
      yield
    finally:
      with self._counters.lock:
        self._expected -= count
        idle = self._expected == 0
      if idle:
        self._queue.put(batching.NUDGE)

  def _idle(self) -> bool:
    with self._counters.lock:
      return self._expected == 0

  def worker_processes(self) -> list[tuple[str, int] | None]:
    """Each worker's current process as (Ray node id, pid), None where Ray does not say."""
    return [actors_lib.process_of(w) for w in self._workers]

  @property
  def num_workers(self) -> int:
    return len(self._workers)

  def shutdown(self) -> None:
    """Serves what was submitted, then stops the workers (and Ray, if it started it).

    Safe from any thread, including the service's own (a future's done
    callback runs there): the stopping then finishes on a thread of its own,
    which always stops the actors. Idempotent: a second call waits for the
    first to finish (unless it too comes from a service thread). A query
    whose group fails once shutdown has begun is not retried: it gets its
    :class:`QueryNotDecoded` at once.

    When it returns (from a thread that is not the service's), every worker
    actor is dead: a call on its handle fails with ``ActorDiedError`` and its
    process has exited (``serving.actors.kill_and_wait``, at most
    ``stop_timeout_s``).

    Raises:
      RuntimeError: some actor still lived ``stop_timeout_s`` after it was killed.
    """
    with self._counters.lock:
      if not self._stopped:
        self._stopped = True
        self._queue.put(batching.STOP)
        self._stopper = threading.Thread(target=self._stop, name="jaxcoded-shutdown")
        self._stopper.start()
    if not self._on_service_thread():
      self._stopper.join()
      if self._survivors:
        raise RuntimeError(
            f"CodedService.shutdown: worker actors {self._survivors} still lived "
            f"{self.stop_timeout_s:g} s after ray.kill."
        )

  def _on_service_thread(self) -> bool:
    current = threading.current_thread()
    return current is self._batcher or current is self._stopper or current.name.startswith(
        "jaxcoded-collector"
    )

  def _stop(self) -> None:
    try:
      self._batcher.join()
      self._collectors.shutdown(wait=True)
    finally:
      try:
        self._survivors = actors_lib.kill_and_wait(self._workers, self.stop_timeout_s)
      finally:
        if self._owns_ray:
          ray.shutdown()

  def __enter__(self) -> "CodedService":
    return self

  def __exit__(self, *exc_info) -> None:
    self.shutdown()

  # -- the master -----------------------------------------------------------------

  def check_query(self, image: ArrayLike, index: int = 0) -> np.ndarray:
    """The query as the service's dtype; ValueError naming it if it must be refused."""
    array = np.asarray(image)
    # The deployment's value checks, else at least finiteness: one NaN query
    # would spoil the decoded answer of every query in its group.
    spec = self.deployment.query_range or _FINITE
    queries_lib.check(array[None], (1, *self.input_shape), spec,
                      f"CodedService: query {index} of the batch")
    return array.astype(self.dtype)

  def _batch_loop(self) -> None:
    k = self.deployment.num_queries
    for batch in batching.groups(self._queue, k, self.max_wait_s, flush=self.flush,
                                 idle=self._idle):
      self._dispatch(batch)

  def _dispatch(self, batch: list[batching.Query]) -> None:
    k = self.deployment.num_queries
    group_id = next(self._group_ids)
    try:
      started = time.perf_counter()
      padded = batching.pad(batch, k, self.input_shape, self.dtype)
      coded = np.asarray(self._encode(padded))
      encoded = time.perf_counter()
      # Workers skip calls that start after the deadline (wall clock: worker
      # machines share it through NTP to well within a deadline).
      deadline = time.time() + self.timeout_s if self.shed_late_calls else None
      refs = [w.run.remote(coded[n], deadline) for n, w in enumerate(self._workers)]
      self.profile.add("encode_s", encoded - started)
      self.profile.add("dispatch_s", time.perf_counter() - encoded)
    except Exception as error:  # An encoder failure fails its queries, not the service.
      _LOG.exception("group %d: dispatch failed", group_id)
      self._counters.add("not_decoded", len(batch))
      for q in batch:
        _resolve(q.future, error=error)
      return
    self._counters.add("groups")
    self._counters.add("padded_slots", k - len(batch))
    group = batching.Group(group_id, batch, padded, refs, time.monotonic())
    self._collectors.submit(self._collect, group)

  def _collect(self, group: batching.Group) -> None:
    answers = collection.GroupAnswers(group, self.num_workers)
    try:
      mask, status = collection.collect(
          group, answers, decode=functools.partial(self._decode_outputs, queries=(
              group.padded if self.deployment.scheme.decode_reads_queries else None)),
          release=self._release,
          output_example=self._output_example, min_returns=self.min_returns,
          timeout_s=self.timeout_s, counters=self._counters, stopped=lambda: self._stopped,
          profile=self.profile,
      )
      self._finish(group, answers, mask, status)
    except BaseException as error:  # Never leave a query without an outcome.
      _LOG.exception("group %d: collection failed", group.id)
      for q in group.queries:
        if not q.future.done():
          self._counters.add("not_decoded")
          _resolve(q.future, error=error)

  def _release(
      self, group: batching.Group, answers: collection.GroupAnswers, decoded: collection.Decoded, mask: np.ndarray
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
    self._counters.add("answered", len(released))
    for future, answer in released:
      _resolve(future, answer)
    self.profile.add("release_s", time.monotonic() - now)  # monotonic: the answers' clock

  def _finish(
      self, group: batching.Group, answers: collection.GroupAnswers, mask: np.ndarray, status: tuple[str, ...]
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
    with self._counters.lock:
      self._counters.add_locked("not_decoded", len(failed))
      if self._records is not None:
        self._records.append(GroupRecord(
            group.id, group.padded, len(group.queries), mask, answers.resolved.copy(),
            answers.masks.copy(), status, finished - group.dispatched,
        ))
    for future, error in failed:
      _resolve(future, error=error)

  def _retry(self, query: batching.Query) -> bool:
    """Queues ``query`` again if it has attempts left and the service is running."""
    if query.attempts > self.max_retries or query.future.cancelled():
      return False
    with self._counters.lock:
      # Under the lock that ``shutdown`` takes to queue its stop marker: a retry
      # is queued before the marker (and served), or not at all (and fails).
      if self._stopped:
        return False
      self._counters.add_locked("retried")
      self._queue.put(batching.Query(query.image, query.future, query.submitted,
                                     query.attempts + 1))
    return True

  def _decode_outputs(
      self, outputs: np.ndarray, mask: np.ndarray, queries: np.ndarray | None
  ) -> collection.Decoded:
    started = time.perf_counter()
    decoded = self._decode(outputs, mask, queries)  # queries: only for decoders that read them
    result = collection.Decoded(np.asarray(decoded.values), np.asarray(decoded.answered))
    self.profile.add("decode_s", time.perf_counter() - started)
    return result


def _wait_ready(workers: list[Any], options: dict[str, Any], timeout_s: float) -> list[Any]:
  """Every worker's probe, or a TimeoutError naming those not up and the cluster's resources."""
  refs = [w.probe.remote() for w in workers]
  ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
  del ready
  if pending:
    missing = [refs.index(ref) for ref in pending]
    raise TimeoutError(
        f"CodedService: workers {missing} of {len(workers)} were not up after {timeout_s:g} s "
        f"(actor options {options}; cluster resources available "
        f"{ray.available_resources()} of {ray.cluster_resources()})."
    )
  return ray.get(refs)


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
