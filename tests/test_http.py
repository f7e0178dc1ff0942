"""Tests for jaxcoded.serving.http: the coded service behind Ray Serve, over real HTTP.

One Ray instance, one Serve instance on 127.0.0.1 (a free port) and one app
for the whole module (starting Serve, its replica and the worker actors takes
tens of seconds on a loaded 2-core machine), shut down by the last test. The
app serves Berrut K = 3, S = 1 (N = 4, R = 3) on the digits MLP, with small
shifted-exponential delays; killing two workers makes its groups undecodable
until Ray has restarted them, which gives explicit QueryNotDecoded errors.

Every coded worker actor holds a unit of a custom resource, so the test can
see that shutting down leaves none behind. Request counts stay small.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import json
import re
import socket
import threading
import time
import types

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the HTTP tests need Ray: pip install 'jaxcoded[ray]'")
pytest.importorskip("ray.serve", reason="the HTTP tests need Ray Serve: pip install 'ray[serve]'")
httpx = pytest.importorskip("httpx", reason="the HTTP tests need httpx")

from flax import nnx  # noqa: E402

from configs import digits  # noqa: E402
from jaxcoded import data, deployment, schemes, serving, stragglers, training  # noqa: E402
from jaxcoded.serving import http  # noqa: E402

INPUT_SHAPE = (8, 8, 1)
TIMEOUT_S = 1.0  # the groups' deadline
# An hour: a partial group leaves only because nothing else is queued or being
# read (flush="adaptive"), so every answered request below shows that a client
# is not charged max_wait_s.
MAX_WAIT_S = 3600.0
MAX_BODY_BYTES = 256 << 10  # room for JSON nested 100,000 deep (200 kB)
MAX_INFLIGHT_BYTES = 384 << 10  # one and a half bodies
RESOURCE = "jaxcoded_test_worker"
MAX_IMAGES = 32


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
  """A briefly trained digits MLP: classify(params, x), params, test images."""
  config = digits.get_config()
  config.num_steps = 40
  config.eval_every = config.checkpoint_every = 40
  config.progress_bar = False
  workdir = tmp_path_factory.mktemp("digits")
  training.train(config, workdir)
  model, _ = training.load_model(workdir)
  graphdef, params = nnx.split(model)

  def classify(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  return types.SimpleNamespace(
      classify=classify, params=params, images=data.load("digits", "test", seed=None).images,
  )


@pytest.fixture(scope="module")
def server(classifier):
  ray.init(num_cpus=2, include_dashboard=False, resources={RESOURCE: 100})
  served = deployment.Deployment.homogeneous(
      "Berrut", schemes.BerrutCode.create(3, 1), classifier.classify, classifier.params
  )
  app = http.build_app(
      served, input_shape=INPUT_SHAPE, timeout_s=TIMEOUT_S, max_wait_s=MAX_WAIT_S,
      max_images=MAX_IMAGES, worker_options={"resources": {RESOURCE: 1}},
      max_body_bytes=MAX_BODY_BYTES, max_inflight_bytes=MAX_INFLIGHT_BYTES,
      latency=serving.latency_profile(4, stragglers.ShiftedExponential(shift=0.001, rate=500.0)),
  )
  try:
    running = http.start(app, port=http.free_port(), request_timeout_s=30.0)
  except BaseException:
    ray.shutdown()
    raise
  running.served = served
  yield running
  running.shutdown()
  ray.shutdown()


def post(url, images, client=None):
  """POSTs a JSON batch; returns (reply, seconds)."""
  started = time.monotonic()
  reply = (client or httpx).post(f"{url}/predict", json={"images": np.asarray(images).tolist()},
                                 timeout=30.0)
  return reply, time.monotonic() - started


def in_process(served, images, mask):
  """What the deployment decodes for this group (zero-padded to K) and mask."""
  k = served.num_queries
  group = np.zeros((k,) + INPUT_SHAPE, np.float32)
  group[: len(images)] = images
  return served(group, np.asarray(mask))


def check_answers_match(served, images, answers):
  """The answers of one request that formed one group equal the in-process decode."""
  assert len({a["group"] for a in answers}) == 1, "the request's queries formed one group"
  assert [a["slot"] for a in answers] == list(range(len(images)))
  for image_index, answer in enumerate(answers):
    expected = in_process(served, images, answer["mask"])
    assert bool(expected.answered[answer["slot"]])
    np.testing.assert_allclose(
        answer["logits"], np.asarray(expected.values[answer["slot"]]), rtol=1e-4, atol=1e-4
    )
    assert answer["label"] == int(np.argmax(expected.values[answer["slot"]]))
    assert answer["query"] == image_index and answer["attempts"] == 1


# ---------------------------------------------------------------------------
# Routes and answers.


def test_healthz_reports_liveness_and_the_scheme(server):
  reply = httpx.get(f"{server.url}/healthz")
  assert reply.status_code == 200
  health = reply.json()
  assert health["status"] == "ok" and health["scheme"] == "Berrut"
  assert (health["num_queries"], health["num_workers"], health["recovery_threshold"]) == (3, 4, 3)


def test_json_answers_equal_the_in_process_decode(server, classifier):
  for start in (0, 3, 6):  # one client, one full group per request
    images = classifier.images[start : start + 3]
    reply, _ = post(server.url, images)
    assert reply.status_code == 200
    body = reply.json()
    assert body["num_answered"] == 3 and body["num_errors"] == 0
    check_answers_match(server.served, images, body["answers"])
  images = classifier.images[9:11]  # a partial group: slot 2 is padding
  reply, _ = post(server.url, images)
  check_answers_match(server.served, images, reply.json()["answers"])


def test_npy_and_flat_json_batches_are_answered_alike(server, classifier):
  images = classifier.images[20:23]
  buffer = io.BytesIO()
  np.save(buffer, images)
  reply = httpx.post(f"{server.url}/predict", content=buffer.getvalue(),
                     headers={"content-type": "application/x-npy"}, timeout=30.0)
  assert reply.status_code == 200
  check_answers_match(server.served, images, reply.json()["answers"])
  flat = httpx.post(f"{server.url}/predict",
                    json={"images": [image.ravel().tolist() for image in images]}, timeout=30.0)
  check_answers_match(server.served, images, flat.json()["answers"])


# ---------------------------------------------------------------------------
# Bad requests and bad queries.


def _npy(array) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array)
  return buffer.getvalue()


@pytest.mark.parametrize("content, content_type, status, match", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2, 3]", "application/json", 400, '{"images"'),
    (b'{"pictures": []}', "application/json", 400, '{"images"'),
    (b'{"images": 7}', "application/json", 400, "must be a list"),
    (b'{"images": []}', "application/json", 400, "empty"),
    (json.dumps({"images": [[0.0] * 64] * (MAX_IMAGES + 1)}).encode(), "application/json", 413,
     f"at most {MAX_IMAGES}"),
    (b"hello", "text/plain", 415, "not supported"),
    (b"\x93NUMPY garbage", "application/x-npy", 400, "not a .npy"),
    (_npy(np.zeros(INPUT_SHAPE, np.float32)), "application/x-npy", 400, "shape \\(B, "),
])
def test_a_malformed_request_gets_a_4xx_with_a_message(server, content, content_type, status,
                                                       match):
  before = server.stats()
  reply = httpx.post(f"{server.url}/predict", content=content,
                     headers={"content-type": content_type}, timeout=30.0)
  assert reply.status_code == status
  error = reply.json()["error"]
  assert error["type"] == "BadRequest" and re.search(match, error["message"]), error
  after = server.stats()
  assert after["http"]["bad_requests"] == before["http"]["bad_requests"] + 1
  assert (after["submitted"], after["rejected"]) == (before["submitted"], before["rejected"])


def test_unknown_routes_and_methods_get_404_and_405(server):
  assert httpx.get(f"{server.url}/nowhere").status_code == 404
  reply = httpx.get(f"{server.url}/predict")
  assert reply.status_code == 405 and "POST" in reply.json()["error"]["message"]


def test_a_bad_query_is_refused_alone_with_an_error_that_names_it(server, classifier):
  good = classifier.images[30].tolist()
  batch = [good, np.zeros((7, 7, 1)).tolist(), [[1.0, 2.0], [3.0]], [["x"] * 64],
           np.full(INPUT_SHAPE, np.nan).tolist(), good, [0] * 64]  # JSON integers are numbers
  before = server.stats()
  reply = httpx.post(f"{server.url}/predict", timeout=30.0,
                     content=json.dumps({"images": batch}),  # NaN: Python's JSON extension
                     headers={"content-type": "application/json"})
  assert reply.status_code == 200
  answers = reply.json()["answers"]
  for index, match in ((1, "shape"), (2, "inhomogeneous"), (3, "dtype"), (4, "NaN")):
    error = answers[index]["error"]
    assert error["type"] == "ValidationError" and answers[index]["query"] == index
    assert f"query {index}" in error["message"] and match in error["message"], error
  assert all("error" not in answers[i] for i in (0, 5, 6)), answers
  after = server.stats()
  assert after["rejected"] - before["rejected"] == 4
  assert after["submitted"] - before["submitted"] == 3


# ---------------------------------------------------------------------------
# Load and faults.


def test_concurrent_clients_get_every_query_answered_or_errored_and_the_counters_add_up(
    server, classifier
):
  images = classifier.images
  before = server.stats()
  bad = np.zeros((3, 3)).tolist()

  def client(index):
    """One client: 5 requests of 3 queries, the middle one bad."""
    counts = collections.Counter()
    with httpx.Client(timeout=30.0) as session:
      for request in range(5):
        first = index * 10 + 2 * request
        batch = [images[first].tolist(), bad, images[first + 1].tolist()]
        reply = session.post(f"{server.url}/predict", json={"images": batch})
        assert reply.status_code == 200
        answers = reply.json()["answers"]
        assert [a["query"] for a in answers] == [0, 1, 2]
        for answer in answers:
          counts[answer.get("error", {}).get("type", "answered")] += 1
    return counts

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    seen = sum(pool.map(client, range(4)), collections.Counter())
  after = server.stats()
  delta = {key: after[key] - before[key]
           for key in ("submitted", "rejected", "answered", "not_decoded")}
  assert sum(seen.values()) == 60 and seen["ValidationError"] == 20
  assert set(seen) <= {"answered", "QueryNotDecoded", "ValidationError"}
  assert delta["rejected"] == seen["ValidationError"]
  assert delta["answered"] == seen["answered"]
  assert delta["not_decoded"] == seen["QueryNotDecoded"]
  assert delta["submitted"] == delta["answered"] + delta["not_decoded"] == 40
  assert after["pending"] == 0 and after["http"]["unresolved"] == 0
  reply = httpx.get(f"{server.url}/stats")
  assert reply.status_code == 200 and reply.json()["answered"] == after["answered"]


def test_killed_workers_yield_explicit_errors_by_the_deadline_then_answers(server, classifier):
  """Workers 0 and 1 killed: 2 of 4 outputs < R = 3 until Ray restarts them."""
  images = classifier.images[40:43]
  # kill_worker returns once the killed process has exited: the next group's
  # calls cannot reach it. Ray takes seconds to restart a worker (a new
  # process, JAX, a compile), longer than the 1 s deadline.
  server.kill_worker(0)
  server.kill_worker(1)
  reply, _ = post(server.url, images)
  assert reply.status_code == 200
  answers = reply.json()["answers"]
  assert all(a["error"]["type"] == "QueryNotDecoded" for a in answers), answers
  error = answers[0]["error"]
  assert error["recovery_threshold"] == 3 and error["num_returned"] <= 2
  assert {error["worker_status"][0], error["worker_status"][1]} <= {"late", "failed"}
  assert TIMEOUT_S <= error["latency_s"] and "not decoded within 1 s" in error["message"]
  # Every later request is answered or errs explicitly (no "Unresolved"),
  # until the restarted workers answer again.
  deadline = time.monotonic() + 90
  while True:
    reply, _ = post(server.url, images)
    assert reply.status_code == 200
    answers = reply.json()["answers"]
    assert all("label" in a or a["error"]["type"] == "QueryNotDecoded" for a in answers)
    if all("label" in a for a in answers):
      break
    assert time.monotonic() < deadline, "the killed workers never came back"
  stats = server.stats()
  assert stats["worker_restarts"] >= 1 and stats["pending"] == 0  # R = 3: one back suffices
  assert stats["http"]["unresolved"] == 0  # every query had its outcome by its deadline


# ---------------------------------------------------------------------------
# Abuse: deep, huge and slow bodies.


def test_a_lone_single_image_request_is_answered_without_waiting_for_company(server, classifier):
  """K = 3, max_wait_s = an hour: the group of one leaves because nothing else is coming."""
  before = server.stats()
  reply, _ = post(server.url, classifier.images[50:51])
  assert reply.status_code == 200 and reply.json()["num_answered"] == 1
  after = server.stats()
  assert after["groups"] - before["groups"] == 1
  assert after["padded_slots"] - before["padded_slots"] == 2


def test_json_nested_100000_deep_gets_400_and_the_service_keeps_answering(server, classifier):
  deep = b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
  assert len(deep) < MAX_BODY_BYTES  # reaches the parser
  reply = httpx.post(f"{server.url}/predict", content=deep,
                     headers={"content-type": "application/json"}, timeout=30.0)
  assert reply.status_code == 400 and "nested too deeply" in reply.json()["error"]["message"]
  image = b"[" * 1000 + b"0.5" + b"]" * 1000  # one image nested 1000 deep
  reply = httpx.post(f"{server.url}/predict", content=b'{"images": [' + image + b"]}",
                     headers={"content-type": "application/json"}, timeout=30.0)
  assert reply.status_code in (200, 400)
  if reply.status_code == 200:  # numpy refused it as an image: refused alone
    assert reply.json()["answers"][0]["error"]["type"] == "ValidationError"
  reply, _ = post(server.url, classifier.images[51:52])
  assert reply.status_code == 200 and reply.json()["num_answered"] == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_gets_413_with_or_without_content_length(server, chunked):
  size = 4 * MAX_BODY_BYTES
  before = server.stats()

  def chunks():
    for _ in range(size // (16 << 10)):
      yield b" " * (16 << 10)

  body = chunks() if chunked else b" " * size
  reply = httpx.post(f"{server.url}/predict", content=body,
                     headers={"content-type": "application/json"}, timeout=30.0)
  assert reply.status_code == 413, reply.text
  assert f"at most {MAX_BODY_BYTES}" in reply.json()["error"]["message"]
  after = server.stats()
  assert after["http"]["bad_requests"] == before["http"]["bad_requests"] + 1
  assert after["http"]["peak_inflight_bytes"] <= MAX_INFLIGHT_BYTES
  assert after["http"]["inflight_bytes"] == 0  # released


def test_bytes_in_flight_are_bounded_a_request_past_the_budget_gets_503(server, classifier):
  """A slow client holds 250 kB of body; a second 250 kB body would pass 384 kB: 503."""
  held = 250 << 10
  sent, finish = threading.Event(), threading.Event()

  def slow_body():
    yield b" " * held  # JSON allows leading whitespace
    sent.set()
    finish.wait(60)
    yield json.dumps({"images": [classifier.images[52].ravel().tolist()]}).encode()[:2000]

  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    slow = pool.submit(httpx.post, f"{server.url}/predict", content=slow_body(),
                       headers={"content-type": "application/json"}, timeout=60.0)
    try:
      assert sent.wait(30)
      deadline = time.monotonic() + 30  # until the replica holds the slow body's bytes
      while server.stats()["http"]["inflight_bytes"] < held:
        assert time.monotonic() < deadline, server.stats()["http"]
        time.sleep(0.05)
      reply = httpx.post(f"{server.url}/predict", content=b" " * held + b"{}",
                         headers={"content-type": "application/json"}, timeout=30.0)
      assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
      assert reply.json()["error"]["type"] == "Busy"
    finally:
      finish.set()
    assert slow.result(timeout=60).status_code in (200, 400)
  stats = server.stats()["http"]
  assert stats["inflight_bytes"] == 0 and stats["busy"] >= 1
  reply, _ = post(server.url, classifier.images[53:54])  # served again
  assert reply.status_code == 200


# ---------------------------------------------------------------------------
# The pieces of the front end, without a server.


def test_parse_images_refuses_deep_json_and_numpy_depth_alike():
  with pytest.raises(http.BadRequest, match="nested too deeply") as error:
    http.parse_images(b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                      "application/json", INPUT_SHAPE, max_images=4)
  assert error.value.status == 400
  queries = http.parse_images(json.dumps({"images": [[0.5] * 64]}).encode(),
                              "application/json; charset=utf-8", INPUT_SHAPE, max_images=4)
  assert queries[0].shape == INPUT_SHAPE


def test_byte_budget_and_bounded_pool_refuse_past_their_limits():
  budget = http.ByteBudget(100)
  assert budget.take(60) and not budget.take(41) and budget.take(40)
  budget.give(100)
  assert (budget.held, budget.peak) == (0, 100)
  pool = http.BoundedPool(1, max_queue=2)
  release = threading.Event()
  first, second = pool.submit(release.wait, 30), pool.submit(release.wait, 30)
  assert first is not None and second is not None
  assert pool.submit(release.wait, 30) is None  # a third would queue: refused
  release.set()
  assert first.result(30) and second.result(30)
  deadline = time.monotonic() + 30  # the slots come back as the calls finish
  while (third := pool.submit(lambda: 3)) is None:
    assert time.monotonic() < deadline
    time.sleep(0.01)
  assert third.result(30) == 3
  pool.shutdown()
  assert http.default_max_body_bytes(INPUT_SHAPE, 1024) == 1024 * 64 * 32 + (64 << 10)


# ---------------------------------------------------------------------------
# Shutting down (last: it stops the module's server).


def test_shutdown_leaves_no_actors_behind(server):
  port = int(server.url.rsplit(":", 1)[1].split("/")[0])
  assert ray.available_resources().get(RESOURCE, 0) < 100  # the coded workers hold some
  server.shutdown()
  # The replica's shutdown waits for its workers' deaths; Ray returns their
  # resource units asynchronously, so wait for that state.
  deadline = time.monotonic() + 30
  while ray.available_resources().get(RESOURCE, 0) < 100 and time.monotonic() < deadline:
    time.sleep(0.2)
  assert ray.available_resources().get(RESOURCE, 0) == 100  # every coded worker is gone
  assert ray.util.list_named_actors(all_namespaces=True) == []  # Serve's controller, proxy, replica
  with socket.socket() as probe:
    assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
