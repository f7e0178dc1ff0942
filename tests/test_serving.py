"""Tests for jaxcoded.serving: the coded inference service on a local Ray instance.

Two small services on the digits MLP share one Ray instance (module fixtures;
starting worker actors takes seconds on a 2-core machine):

- ``berrut``: Berrut K = 4, S = 2 (N = 6); worker 1 dies on its first call
  (Ray restarts it), worker 4 is always slower than the deadline.
- ``fragile``: Berrut K = 2, S = 1 (N = 3); worker 0 dies on its first call,
  worker 1 is always late, so a group can only decode once worker 0 is back.
- ``uncoded``: K = N = 2; worker 1 is always late.
- ``uncoded_retrying``: the same, with ``max_retries=1``.
"""

from __future__ import annotations

import functools
import threading
import time
import types

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the serving tests need Ray: pip install 'jaxcoded[ray]'")

from flax import nnx  # noqa: E402

from configs import digits  # noqa: E402
from jaxcoded import (  # noqa: E402
  data,
  deployment,
  schemes,
  serving,
  stragglers,
  training,
)

INPUT_SHAPE = (8, 8, 1)
SLOW_S = 6.0  # a slow worker's extra delay: far past every deadline below
# Ray reports a dead actor's calls (RayActorError) 1.5-2 s after the death on
# this machine, so the deadline of the service that must see one is longer.
FRAGILE_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def ray_instance():
  ray.init(num_cpus=2, include_dashboard=False)
  yield
  ray.shutdown()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
  """A briefly trained digits MLP: classify(params, x), params, workdir, test images."""
  config = digits.get_config()
  config.num_steps = 100
  config.eval_every = config.checkpoint_every = 100
  config.progress_bar = False
  workdir = tmp_path_factory.mktemp("digits")
  training.train(config, workdir)
  model, _ = training.load_model(workdir)
  graphdef, params = nnx.split(model)

  def classify(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  return types.SimpleNamespace(
      classify=classify, params=params, workdir=workdir,
      images=data.load("digits", "test", seed=None).images,
  )


@pytest.fixture(scope="module")
def berrut(ray_instance, classifier):
  classify, params = classifier.classify, classifier.params
  served = deployment.Deployment.homogeneous(
      "Berrut", schemes.BerrutCode.create(4, 2), classify, params,
      query_range=data.query_spec("digits"),
  )
  latency = serving.latency_profile(
      6, stragglers.ShiftedExponential(shift=0.001, rate=500.0),
      slow_workers=(4,), slow_extra_s=SLOW_S, die_on_call={1: 1},
  )
  service = serving.CodedService.start(
      # 3 s, not 1: on a loaded CI machine a restarting worker and a burst of
      # 20 groups can hold honest workers past a 1 s deadline.
      served, input_shape=INPUT_SHAPE, latency=latency, max_wait_s=0.02, timeout_s=3.0,
      keep_groups=1000,
  )
  yield service
  service.shutdown()


@pytest.fixture(scope="module")
def fragile(ray_instance, classifier):
  classify, params = classifier.classify, classifier.params
  served = deployment.Deployment.homogeneous(
      "Berrut", schemes.BerrutCode.create(2, 1), classify, params
  )
  latency = serving.latency_profile(3, slow_workers=(1,), slow_extra_s=SLOW_S, die_on_call={0: 1})
  service = serving.CodedService.start(
      served, input_shape=INPUT_SHAPE, latency=latency, max_wait_s=0.02,
      timeout_s=FRAGILE_TIMEOUT_S,
  )
  yield service
  service.shutdown()


def start_uncoded(classifier, max_retries=0):
  """Uncoded K = N = 2 with worker 1 always late; adaptive flush, no timer.

  ``max_wait_s`` is an hour: a partial group leaves only because nothing
  else is queued (``flush="adaptive"``), so every test of this service that
  gets an answer for a lone query shows that it was not charged the wait.
  """
  served = deployment.Deployment.homogeneous(
      "uncoded", schemes.Uncoded.create(2), classifier.classify, classifier.params
  )
  latency = serving.latency_profile(2, slow_workers=(1,), slow_extra_s=SLOW_S)
  return serving.CodedService.start(
      served, input_shape=INPUT_SHAPE, latency=latency, max_wait_s=3600.0, timeout_s=1.0,
      max_retries=max_retries, flush="adaptive",
  )


@pytest.fixture(scope="module")
def uncoded(ray_instance, classifier):
  service = start_uncoded(classifier)
  yield service
  service.shutdown()


@pytest.fixture(scope="module")
def uncoded_retrying(ray_instance, classifier):
  """The same service with one retry per query."""
  service = start_uncoded(classifier, max_retries=1)
  yield service
  service.shutdown()


def group_records(service, groups, timeout_s=30.0):
  """The records of ``groups`` (written just after a group's last answer leaves)."""
  deadline = time.monotonic() + timeout_s
  while True:
    records = {r.group: r for r in service.group_records()}
    if set(groups) <= set(records):
      return records
    if time.monotonic() > deadline:
      pytest.fail(f"no record of groups {set(groups) - set(records)} after {timeout_s} s")
    time.sleep(0.05)


def wait_for_stats(service, condition, timeout_s=30.0):
  """The stats once ``condition(stats)`` holds (counters that asynchronous replies update)."""
  deadline = time.monotonic() + timeout_s
  while True:
    stats = service.stats()
    if condition(stats):
      return stats
    if time.monotonic() > deadline:
      pytest.fail(f"condition not reached in {timeout_s} s; stats: {stats}")
    time.sleep(0.05)


def serve_until(service, images, condition, timeout_s=60.0):
  """Keeps serving ``images`` until ``condition(stats)`` holds; returns the stats."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    service.predict(images)
    stats = service.stats()
    if condition(stats):
      return stats
    time.sleep(0.2)
  pytest.fail(f"condition not reached in {timeout_s} s; stats: {service.stats()}")


# ---------------------------------------------------------------------------
# The service on Ray.


def test_answers_equal_in_process_decoding_with_the_masters_mask(berrut, classifier):
  """Killed worker 1 and slow worker 4 are stragglers; every query is still answered."""
  images = classifier.images
  queries = images[:18]  # 4 full groups and a partial one (2 padded slots)
  futures = berrut.submit(queries)
  answers = [f.result(timeout=30) for f in futures]

  records = group_records(berrut, {a.group for a in answers})
  first_group = min(a.group for a in answers)
  assert records[first_group].worker_status[1] in (
      serving.WorkerStatus.FAILED, serving.WorkerStatus.LATE
  )
  for answer, query in zip(answers, queries):
    record = records[answer.group]
    np.testing.assert_array_equal(record.queries[answer.slot], query)
    np.testing.assert_array_equal(record.answer_masks[answer.slot], answer.mask)
    assert not answer.mask[4] and record.worker_status[4] == serving.WorkerStatus.LATE
    assert answer.mask.sum() >= 4  # R = K = 4 outputs decoded
    expected = berrut.deployment(record.queries, answer.mask)
    assert bool(expected.answered[answer.slot])
    np.testing.assert_allclose(answer.logits, expected.values[answer.slot], rtol=1e-5, atol=1e-5)
    assert answer.label == int(np.argmax(expected.values[answer.slot]))
  partial = records[answers[-1].group]
  assert partial.num_real == 2 and not partial.answered[2:].any()
  assert berrut.stats().padded_slots >= 2


def test_bad_queries_are_rejected_alone(berrut, classifier):
  images = classifier.images
  before = berrut.stats()
  nan_image = images[0].copy()
  nan_image[3, 3, 0] = np.nan
  raw = np.round((images[0] * 0.376 + 0.305) * 16)  # the raw 0..16 pixels of a digit
  batch = [images[20], nan_image, images[21], np.zeros((7, 7, 1)), images[22],
           np.full(INPUT_SHAPE, "x"), raw.astype(np.uint8), raw, images[23]]
  futures = berrut.submit(batch)
  for index, match in ((1, "finite|NaN"), (3, "shape"), (5, "floating-point"),
                       (6, "floating-point"), (7, "query 7 .*outside the expected range")):
    with pytest.raises(ValueError, match=match):
      futures[index].result(timeout=0)
  good = [futures[i].result(timeout=30) for i in (0, 2, 4, 8)]
  assert len({a.group for a in good}) == 1  # the four good queries made one full group
  after = berrut.stats()
  assert after.rejected - before.rejected == 5
  assert after.submitted - before.submitted == 4
  with pytest.raises(ValueError, match="images must have shape"):
    berrut.submit(images[0])


def test_a_worker_killed_mid_stream_is_restarted_and_the_service_keeps_answering(
    berrut, classifier
):
  images = classifier.images
  # Worker 1 died on its first call; wait until it answers from its new process.
  before = serve_until(berrut, images[:8], lambda s: s.worker_restarts >= 1)
  futures = berrut.submit(images[:40])
  berrut.kill_worker(2)  # With 4 slow, S = 2 stragglers: still decodable.
  futures += berrut.submit(images[40:80])
  assert all(isinstance(f.result(timeout=30), serving.Answer) for f in futures)
  # The calls queued at worker 2 fail (counted even after their groups were
  # decided); then worker 2 answers again from a new process.
  after = serve_until(
      berrut, images[:8],
      lambda s: s.worker_restarts > before.worker_restarts
      and s.worker_failures > before.worker_failures,
  )
  assert after.not_decoded == 0
  assert after.answered == after.submitted


def test_an_undecodable_group_gets_an_explicit_error(fragile, classifier):
  """One of three outputs in time, R = 2: no answer, an error naming each worker."""
  images = classifier.images
  futures = fragile.submit(images[:2])
  errors = [f.exception(timeout=30) for f in futures]
  assert all(isinstance(e, serving.QueryNotDecoded) for e in errors)
  error = errors[0]
  assert error.num_returned == 1 and error.recovery_threshold == 2
  # Worker 0 died on the call. Ray reports the death (RayActorError) 1.5-2 s
  # later here, usually before the deadline ("failed"); on a loaded machine
  # the report can come after it ("late"), and is then counted when it comes.
  assert error.worker_status[0] in (serving.WorkerStatus.FAILED, serving.WorkerStatus.LATE)
  assert error.worker_status[1:] == (serving.WorkerStatus.LATE, serving.WorkerStatus.RETURNED)
  assert f"not decoded within {FRAGILE_TIMEOUT_S:g} s" in str(error)
  assert FRAGILE_TIMEOUT_S <= error.latency_s  # decided at the deadline
  stats = fragile.stats()
  assert stats.not_decoded == 2 and stats.answered == 0
  # The death is counted once Ray has reported it, whether in time or late.
  wait_for_stats(fragile, lambda s: s.worker_failures == 1)


def test_the_dead_worker_comes_back_and_its_groups_decode_again(fragile, classifier):
  images = classifier.images
  stats = serve_until(fragile, images[:2], lambda s: s.answered >= 2)
  assert stats.worker_restarts == 1
  labels, errors = fragile.predict(images[:4])
  assert errors == [None] * 4 and (labels >= 0).all()


def test_uncoded_answers_each_query_as_soon_as_its_worker_returns(uncoded, classifier):
  queries = classifier.images[:2]  # one group: slot 0 on worker 0, slot 1 on slow worker 1
  futures = uncoded.submit(queries)
  answer = futures[0].result(timeout=30)
  # Decoded from worker 0 alone: it did not wait for worker 1, whose query
  # gets its error at the group's deadline, after the answer.
  assert answer.mask.tolist() == [True, False]
  expected = uncoded.deployment(queries, answer.mask)
  np.testing.assert_allclose(answer.logits, expected.values[0], rtol=1e-5, atol=1e-5)
  error = futures[1].exception(timeout=30)
  assert isinstance(error, serving.QueryNotDecoded) and error.slot == 1
  assert error.worker_status == (serving.WorkerStatus.RETURNED, serving.WorkerStatus.LATE)
  assert answer.latency_s <= error.latency_s and error.latency_s >= uncoded.timeout_s
  stats = uncoded.stats()
  assert (stats.answered, stats.not_decoded) == (1, 1)


def test_a_query_its_group_cannot_answer_is_retried_in_a_later_group(
    uncoded_retrying, classifier
):
  """Slot 1 needs the late worker 1; sent again alone, it lands in slot 0."""
  queries = classifier.images[:2]
  futures = uncoded_retrying.submit(queries)
  first, retried = (f.result(timeout=30) for f in futures)
  assert (first.attempts, first.slot) == (1, 0)
  assert (retried.attempts, retried.slot) == (2, 0) and retried.group > first.group
  assert retried.latency_s >= uncoded_retrying.timeout_s  # waited out its first deadline
  expected = uncoded_retrying.deployment(queries[1:2].repeat(2, axis=0), retried.mask)
  np.testing.assert_allclose(retried.logits, expected.values[0], rtol=1e-5, atol=1e-5)
  stats = uncoded_retrying.stats()
  assert (stats.answered, stats.retried, stats.not_decoded, stats.errored) == (2, 1, 0, 0)


def test_retries_are_spent_before_a_query_fails(uncoded_retrying, classifier):
  """Two queries in slot 1 in turn: the second retry group holds both, one fails for good."""
  before = uncoded_retrying.stats()
  # Three queries: group A = (q0, q1), group B = (q2, pad). q1 is retried into a
  # later group; whichever query lands in slot 1 of a group after its one retry fails.
  futures = uncoded_retrying.submit(classifier.images[:3])
  outcomes = [f.exception(timeout=60) or f.result() for f in futures]
  errors = [o for o in outcomes if isinstance(o, serving.QueryNotDecoded)]
  answers = [o for o in outcomes if isinstance(o, serving.Answer)]
  assert len(answers) + len(errors) == 3 and answers
  assert all(e.attempts == 2 and e.slot == 1 for e in errors)
  assert all("attempt 2" in str(e) for e in errors)
  stats = uncoded_retrying.stats()
  assert stats.answered - before.answered == len(answers)
  assert stats.not_decoded - before.not_decoded == len(errors)
  assert stats.retried - before.retried >= 1
  assert stats.pending == 0


def test_submit_after_shutdown_raises(fragile, classifier):
  fragile.shutdown()
  with pytest.raises(serving.ServiceStopped):
    fragile.submit(classifier.images[:1])


def test_shutdown_from_a_done_callback_stops_every_actor(ray_instance, classifier):
  """Called on the service's own collector thread, shutdown must not join itself."""
  service = start_uncoded(classifier)
  workers_started = list(service._workers)
  called = threading.Event()
  errors = []

  def stop(_future):
    try:
      service.shutdown()
    except BaseException as error:
      errors.append(error)
    called.set()

  processes = [serving.actors.process_of(w) for w in workers_started]
  assert all(processes)
  future = service.submit(classifier.images[:1])[0]
  future.add_done_callback(stop)
  assert called.wait(30)
  assert not errors
  service.shutdown()  # idempotent; from this thread it waits for the first one
  # Dead when shutdown returns (ray.kill alone returns before): no process left,
  # and every call fails, without waiting.
  for (_, pid), worker in zip(processes, workers_started):
    assert not serving.actors._alive_here(pid)
    with pytest.raises(ray.exceptions.ActorDiedError):
      ray.get(worker.probe.remote(), timeout=30)
  with pytest.raises(serving.ServiceStopped):
    service.submit(classifier.images[:1])


def test_a_lone_query_is_not_charged_the_wait_with_adaptive_flush(uncoded, classifier):
  """max_wait_s is an hour: the group of one leaves because nothing else is coming."""
  before = uncoded.stats()
  answer = uncoded.submit(classifier.images[5:6])[0].result(timeout=60)
  assert answer.slot == 0 and answer.mask.tolist() == [True, False]
  after = uncoded.stats()
  assert (after.groups - before.groups, after.padded_slots - before.padded_slots) == (1, 1)


def test_announced_submits_hold_a_partial_group_until_they_arrive(uncoded, classifier):
  """While a submit is announced (a request being parsed), the group waits for it."""
  before = uncoded.stats()
  with uncoded.expecting():
    first = uncoded.submit(classifier.images[6:7])[0]
    second = uncoded.submit(classifier.images[7:8])[0]
  a, b = first.result(timeout=60), second.exception(timeout=60)
  assert a.slot == 0 and isinstance(b, serving.QueryNotDecoded) and b.slot == 1
  assert b.group == a.group  # one group of two, not two groups of one
  assert uncoded.stats().groups - before.groups == 1


def test_too_few_cpus_are_refused_at_once_naming_them(ray_instance, classifier):
  served = deployment.Deployment.homogeneous(
      "Berrut", schemes.BerrutCode.create(4, 2), classifier.classify, classifier.params
  )
  with pytest.raises(ValueError, match=r"cannot place 6 coded workers.*need 6 CPU.*"
                     r"of 2 CPU"):
    serving.CodedService.start(served, input_shape=INPUT_SHAPE,
                               worker_options={"num_cpus": 1}, ready_timeout_s=600.0)
  assert ray.available_resources().get("CPU") == 2  # refused before any actor was made


# ---------------------------------------------------------------------------
# Pieces that need no actors.


def _queries(count, start=0.0):
  return [serving.batching.Query(np.zeros(INPUT_SHAPE), None, start) for _ in range(count)]


def _next_batch(generator, timeout_s=30.0):
  """The generator's next batch, waited for on a thread with a deadline."""
  box = []
  thread = threading.Thread(target=lambda: box.append(next(generator, None)), daemon=True)
  thread.start()
  thread.join(timeout_s)
  assert box, f"no batch within {timeout_s} s"
  return box[0]


def test_adaptive_flush_sends_a_partial_group_once_nothing_is_queued_or_announced():
  import queue as queue_lib

  batching = serving.batching
  source = queue_lib.Queue()
  announced = threading.Event()  # set: a submit is on its way
  groups = batching.groups(source, 3, 3600.0, flush="adaptive",
                           idle=lambda: not announced.is_set())
  lone = _queries(1, time.monotonic())
  source.put(lone)
  assert _next_batch(groups) == lone  # not charged the hour
  announced.set()
  first, rest = _queries(1, time.monotonic()), _queries(2, time.monotonic())
  source.put(first)
  box = []
  waiter = threading.Thread(target=lambda: box.append(next(groups)), daemon=True)
  waiter.start()
  source.put(rest)  # what was announced arrives: one full group
  waiter.join(30)
  assert box == [first + rest]
  late = _queries(1, time.monotonic())
  source.put(late)
  waiter = threading.Thread(target=lambda: box.append(next(groups)), daemon=True)
  waiter.start()
  announced.clear()  # the announced request failed to parse: nothing is coming
  source.put(batching.NUDGE)
  waiter.join(30)
  assert box[1:] == [late]
  big = _queries(5, time.monotonic())
  source.put(big)  # a submit of 5 at K = 3: in order, split over two groups
  assert _next_batch(groups) == big[:3] and _next_batch(groups) == big[3:]
  source.put(batching.STOP)
  assert _next_batch(groups) is None


def test_timer_flush_waits_for_company_and_stop_sends_what_is_held():
  import queue as queue_lib

  batching = serving.batching
  source = queue_lib.Queue()
  groups = batching.groups(source, 2, 3600.0, flush="timer")
  first, second = _queries(1, time.monotonic()), _queries(1, time.monotonic())
  source.put(first)
  box = []
  waiter = threading.Thread(target=lambda: box.append(next(groups)), daemon=True)
  waiter.start()
  source.put(second)
  waiter.join(30)
  assert box == [first + second]
  held = _queries(3, time.monotonic())
  source.put(held)
  source.put(batching.STOP)
  assert _next_batch(groups) == held[:2] and _next_batch(groups) == held[2:]
  assert _next_batch(groups) is None
  with pytest.raises(ValueError, match="flush must be one of"):
    next(batching.groups(source, 2, 1.0, flush="eager"))


def test_default_min_returns():
  assert serving.default_min_returns(schemes.BerrutCode.create(4, 2)) == 4
  assert serving.default_min_returns(schemes.LagrangeCode.create(3, 1, degree=2)) == 5
  assert serving.default_min_returns(schemes.Uncoded.create(4)) == 1
  assert serving.default_min_returns(schemes.Replication.create(3, 1)) == 1
  assert serving.default_min_returns(schemes.ParityCode.create(4)) == 1


def test_latency_profile_splits_per_worker_parameters():
  model = stragglers.ShiftedExponential(shift=np.array([0.1, 0.2, 0.3]), rate=50.0)
  profile = serving.latency_profile(
      3, model, slow_workers=(2,), slow_extra_s=0.5, die_on_call={0: 4}
  )
  assert [p.model.shift for p in profile] == [0.1, 0.2, 0.3]
  assert [p.model.rate for p in profile] == [50.0] * 3
  assert [p.extra_s for p in profile] == [0.0, 0.0, 0.5]
  assert [p.die_on_call for p in profile] == [4, None, None]
  with pytest.raises(ValueError, match="shape \\(3,\\)"):
    serving.latency_profile(3, stragglers.Pareto(scale=np.ones(2)))
  with pytest.raises(ValueError, match="not in 0..2"):
    serving.latency_profile(3, slow_workers=(3,))
  with pytest.raises(ValueError, match="death_probability"):
    serving.WorkerLatency(death_probability=1.0)
  with pytest.raises(ValueError, match="scalar parameters"):
    serving.WorkerLatency(model=model)


def test_injected_delays_follow_the_model_and_the_seed():
  spec = serving.WorkerLatency(stragglers.ShiftedExponential(shift=1e-3, rate=2e3), extra_s=1e-3)
  first = serving.LatencyInjector(spec, index=0)
  delays = [first.before_call() for _ in range(20)]
  again = [serving.LatencyInjector(spec, index=0).before_call() for _ in range(1)]
  other = serving.LatencyInjector(spec, index=1).before_call()
  assert again[0] == delays[0] and other != delays[0]
  assert min(delays) >= 2e-3 and first.calls == 20
  # Shifted exponential: mean shift + 1 / rate, plus the fixed extra delay.
  assert 2e-3 < np.mean(delays) < 2e-3 + 3 / 2e3


def test_service_arguments_are_checked(classifier):
  classify, params = classifier.classify, classifier.params
  served = deployment.Deployment.homogeneous("u", schemes.Uncoded.create(2), classify, params)
  with pytest.raises(ValueError, match="timeout_s"):
    serving.CodedService.start(served, input_shape=INPUT_SHAPE, timeout_s=0.0)
  with pytest.raises(ValueError, match="one per worker"):
    serving.CodedService.start(
        served, input_shape=INPUT_SHAPE, latency=[serving.WorkerLatency()] * 3
    )
  with pytest.raises(ValueError, match="min_returns"):
    serving.CodedService.start(served, input_shape=INPUT_SHAPE, min_returns=3)
  for max_retries in (-1, 1.5, True):
    with pytest.raises(ValueError, match="max_retries must be an integer >= 0"):
      serving.CodedService.start(served, input_shape=INPUT_SHAPE, max_retries=max_retries)


def load_classifier_task(workdir):
  """A task source that reads the checkpoint where the worker runs."""
  model, _ = training.load_model(workdir)
  return deployment.WorkerTask(*training.parity.as_worker_fn(model))


def test_a_worker_built_from_a_checkpoint_computes_the_task(ray_instance, classifier):
  images = classifier.images[:3]
  worker = serving.CodedWorker(
      0, functools.partial(load_classifier_task, classifier.workdir), serving.WorkerLatency(),
      images[0], enable_x64=True,
  )
  for image in images:
    output, incarnation = worker.run(image)
    np.testing.assert_allclose(
        output, classifier.classify(classifier.params, image), rtol=1e-5, atol=1e-5
    )
  assert incarnation == worker.incarnation
  late, _ = worker.run(images[0], deadline=time.time() - 1.0)
  assert late is None and worker.info()["skipped"] == 1 and worker.info()["calls"] == 3
  with pytest.raises(TypeError, match="WorkerTask"):
    serving.CodedWorker(0, lambda: "not a task", serving.WorkerLatency(), images[0], True)


def test_a_decoder_that_reads_the_queries_gets_them_from_the_master(ray_instance, classifier):
  """The learned systematic code with a query sketch: the service hands its decoder the group."""
  from jaxcoded.schemes import systematic

  model, _ = training.load_model(classifier.workdir)
  code = systematic.LearnedSystematicCode.create(
      model, 2, 1, INPUT_SHAPE, 10, decoder_hidden=(8,), sketch_features=3, rngs=nnx.Rngs(0))
  served = deployment.Deployment.learned("sketch", code, query_range=data.query_spec("digits"))
  latency = serving.latency_profile(3, slow_workers=(0,), slow_extra_s=SLOW_S)
  service = serving.CodedService.start(served, input_shape=INPUT_SHAPE, latency=latency,
                                       max_wait_s=0.02, timeout_s=2.0)
  try:
    queries = classifier.images[:2]
    answers = [f.result(timeout=60) for f in service.submit(queries)]
    for slot, answer in enumerate(answers):
      assert not answer.mask[0]  # worker 0 is late: query 0 comes from the decoder
      expected = served(queries, answer.mask)
      np.testing.assert_allclose(answer.logits, expected.values[slot], rtol=1e-5, atol=1e-5)
  finally:
    service.shutdown()
