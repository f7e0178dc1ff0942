r"""An HTTP front end for the coded service: a Ray Serve deployment (docs/serving.md).

  from jaxcoded.serving import http
  app = http.build_app(served, input_shape=(8, 8, 1), timeout_s=1.0)   # CodedService options
  server = http.start(app, port=8000)          # Serve on 127.0.0.1:8000, returns when ready
  #   POST /predict  {"images": [...]} or a .npy batch  ->  {"answers": [...]}
  #   GET  /stats    the service's counters;  GET /healthz  liveness
  server.shutdown()                            # the app, Serve, its worker actors (and Ray)

One Serve replica (:class:`CodedServer`) holds the master, a
:class:`~jaxcoded.serving.CodedService`; the N coded workers stay plain Ray
actors that the replica starts and owns. The master groups the queries of
all concurrent requests into groups of K in arrival order, which is the
cross-request batching ``serve.batch`` would otherwise do; ``serve.batch`` is
not stacked on top of it because it would add a second wait before the
master's own (``max_wait_s``).

Requests:

- ``POST /predict`` with ``Content-Type: application/json`` and a body
  ``{"images": [image, ...]}``, each image a nested list of
  ``input_shape`` numbers or a flat list of ``prod(input_shape)`` numbers
  (JSON numbers, integers included, become floats); or
  with ``Content-Type: application/x-npy`` (or ``application/octet-stream``)
  and a ``.npy`` file of shape ``(B, *input_shape)`` (``numpy.save``; no
  pickles). The reply (200) has one entry per image, in order: an answer
  ``{"query", "label", "logits", "mask", "latency_s", "group", "slot",
  "attempts"}`` or ``{"query", "error": {"type", "message", ...}}`` where
  ``type`` is ``"QueryNotDecoded"`` (with ``worker_status``, ``num_returned``,
  ``recovery_threshold``, ``timeout_s``, ``latency_s``, ``group``, ``slot``,
  ``attempts``) or ``"ValidationError"`` (a query with the wrong shape,
  non-numbers, NaN or inf: refused alone, the rest of the batch is served).
  A request that cannot be read at all gets a 4xx and ``{"error": {"type":
  "BadRequest", "message"}}``: 400 (not JSON or .npy, no ``images`` list, an
  empty batch), 413 (more than ``max_images`` images, or a larger body than
  ``max_body_bytes``), 415 (another content type).
- ``GET /stats``: the :class:`~jaxcoded.serving.ServiceStats` counters, with
  ``pending`` and ``errored``, and the front end's own under ``"http"``.
- ``GET /healthz``: 200 ``{"status": "ok", ...}`` while the master runs, 503
  once it stopped. Serve's own health check (``check_health``) asks the same.

Under load and abuse (docs/scaling.md, "HTTP front end under load"):

- *Adaptive batching*: the service flushes a partial group as soon as no
  query is queued and no request is being read or parsed
  (``flush="adaptive"``, ``CodedService.expecting``): a lone client is not
  charged ``max_wait_s``; under load groups fill while others are sent.
- *Bounded bodies*: the body is read as a stream and counted; past
  ``max_body_bytes`` (by default what ``max_images`` images can take as JSON)
  the request gets 413 at once, with or without Content-Length (chunked).
  JSON nested too deep for the parser gets 400.
- *Parsing off the event loop*: bodies are parsed on ``parse_workers``
  threads; at most ``max_parse_queue`` requests wait for one (more get 503
  with Retry-After). ``json.loads`` holds the GIL, so what bounds the stall of
  other requests is the body limit: the largest accepted body parses in a few
  tens of ms (docs/scaling.md).
- *Bounded memory*: the bytes of all bodies being read or parsed are counted
  against ``max_inflight_bytes``; a request that would pass it gets 503.
- *Replicas*: ``build_app(num_replicas=R)`` runs R replicas, each the master
  of its own N worker actors (docs/scaling.md says why).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import gc
import io
import json
import math
import os
import resource
import socket
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np
import ray
from ray import serve

from jaxcoded import deployment as deployment_lib
from jaxcoded import serving

__all__ = [
    "BadRequest",
    "BoundedPool",
    "ByteBudget",
    "CodedServer",
    "Server",
    "answer_to_json",
    "build_app",
    "default_max_body_bytes",
    "error_to_json",
    "free_port",
    "parse_images",
    "start",
]

JSON_TYPES = ("application/json",)
NPY_TYPES = ("application/x-npy", "application/octet-stream")
JSON_BYTES_PER_NUMBER = 32  # "-0.123456789012345678, " with room: the default body limit
BODY_SLACK_BYTES = 64 << 10


class BadRequest(ValueError):
  """A request that cannot be read; ``status`` is its HTTP status (4xx)."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


# ---------------------------------------------------------------------------
# The wire format: pure functions, usable by clients and tests.


def parse_images(
    body: bytes, content_type: str | None, input_shape: tuple[int, ...], *, max_images: int
) -> list[Any]:
  """The B queries of a /predict body, each as the client sent it (validated later).

  Each query is checked by the service on its own (``ValueError`` per query);
  only what makes the whole request unreadable raises here.

  Args:
    body: the request body.
    content_type: its Content-Type header (parameters such as charset ignored).
    input_shape: the shape of one query.
    max_images: the largest batch accepted.

  Returns:
    B queries: numpy arrays, or the raw JSON value where it is not an array
    of numbers (the service refuses it with a message).

  Raises:
    BadRequest: 400, 413 or 415, with a message saying what is wrong.
  """
  kind = (content_type or "application/json").split(";")[0].strip().lower()
  if kind in JSON_TYPES:
    try:
      document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
      raise BadRequest(400, f"The body is not valid JSON: {error}.") from None
    except RecursionError:
      raise BadRequest(400, "The JSON body is nested too deeply to parse (an image has "
                       f"{len(input_shape)} axes).") from None
    if not isinstance(document, dict) or "images" not in document:
      raise BadRequest(400, 'The JSON body must be an object {"images": [image, ...]}.')
    images = document["images"]
    if not isinstance(images, list):
      raise BadRequest(400, f'"images" must be a list of images, got {type(images).__name__}.')
    _check_batch_size(len(images), max_images)
    return [_json_query(item, input_shape) for item in images]
  if kind in NPY_TYPES:
    try:
      array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
      raise BadRequest(400, f"The body is not a .npy array (numpy.save, no pickles): {error}.") from error
    if not isinstance(array, np.ndarray) or array.ndim != len(input_shape) + 1:
      shape = getattr(array, "shape", None)
      raise BadRequest(
          400, f"The .npy batch must have shape (B, *{tuple(input_shape)}), got {shape}."
      )
    _check_batch_size(len(array), max_images)
    return list(array)
  raise BadRequest(
      415, f"Content-Type {kind!r} is not supported: use application/json or application/x-npy."
  )


def _check_batch_size(size: int, max_images: int) -> None:
  if size == 0:
    raise BadRequest(400, "The batch is empty: send at least one image.")
  if size > max_images:
    raise BadRequest(413, f"{size} images in one request; at most {max_images} are accepted.")


def _json_query(item: Any, input_shape: tuple[int, ...]) -> Any:
  """A float array when ``item`` is numbers (JSON's 0 and 0.0 are the same number; a flat
  list of the right size is reshaped); anything else as it came, for the service to refuse."""
  try:
    array = np.asarray(item)
  except ValueError:  # Ragged, or more than 64 axes: refused by the service with numpy's message.
    return item
  except RecursionError:
    raise BadRequest(400, f"An image is nested too deeply (it has {len(input_shape)} "
                     "axes).") from None
  if array.dtype.kind not in "fiu":
    return array
  array = array.astype(np.float64)
  if array.shape != tuple(input_shape) and array.ndim == 1 and array.size == math.prod(input_shape):
    array = array.reshape(input_shape)
  return array


def answer_to_json(query: int, answer: serving.Answer) -> dict[str, Any]:
  """One answer as the /predict reply holds it."""
  return dict(
      query=query, label=int(answer.label), logits=np.asarray(answer.logits).tolist(),
      mask=np.asarray(answer.mask).tolist(), latency_s=float(answer.latency_s),
      group=int(answer.group), slot=int(answer.slot), attempts=int(answer.attempts),
  )


def error_to_json(query: int, error: BaseException) -> dict[str, Any]:
  """One query's error as the /predict reply holds it."""
  if isinstance(error, serving.QueryNotDecoded):
    detail = dict(
        type="QueryNotDecoded", message=str(error), worker_status=list(error.worker_status),
        num_returned=error.num_returned, recovery_threshold=error.recovery_threshold,
        timeout_s=error.timeout_s, latency_s=error.latency_s, group=error.group,
        slot=error.slot, attempts=error.attempts,
    )
  else:
    message = str(error)
    if f"query {query}" not in message:  # The message names the query.
      message = f"query {query}: {message}"
    kind = "ValidationError" if isinstance(error, ValueError) else type(error).__name__
    detail = dict(type=kind, message=message)
  return dict(query=query, error=detail)


def default_max_body_bytes(input_shape: tuple[int, ...], max_images: int) -> int:
  """The default body limit: ``max_images`` images as JSON, 32 bytes per number, plus 64 KiB."""
  return max_images * math.prod(input_shape) * JSON_BYTES_PER_NUMBER + BODY_SLACK_BYTES


class ByteBudget:
  """Bytes held by requests being read or parsed, against a limit (one event loop, no lock).

  ``take(n)`` reserves n more bytes if they fit under ``limit`` (True) or
  reserves nothing (False); ``give(n)`` returns them.
  """

  def __init__(self, limit: int):
    self.limit = int(limit)
    self.held = 0
    self.peak = 0

  def take(self, count: int) -> bool:
    if self.held + count > self.limit:
      return False
    self.held += count
    self.peak = max(self.peak, self.held)
    return True

  def give(self, count: int) -> None:
    self.held -= count


class BoundedPool:
  """A thread pool that refuses work once ``max_queue`` calls wait or run (no unbounded queue)."""

  def __init__(self, workers: int, max_queue: int, name: str = "jaxcoded-parse"):
    self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=name)
    self._slots = threading.BoundedSemaphore(max_queue)

  def submit(self, fn, *args) -> concurrent.futures.Future | None:
    """The call's future, or None when ``max_queue`` calls are already waiting or running."""
    if not self._slots.acquire(blocking=False):
      return None
    try:
      future = self._pool.submit(fn, *args)
    except BaseException:
      self._slots.release()
      raise
    future.add_done_callback(lambda _: self._slots.release())
    return future

  def shutdown(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)


class _TooLarge(Exception):
  pass


class _Busy(Exception):
  pass


# ---------------------------------------------------------------------------
# The Serve deployment.


def _json_response(content: Any, status: int = 200):
  from starlette import responses

  return responses.Response(
      json.dumps(content), status_code=status, media_type="application/json"
  )


def _bad(status: int, message: str):
  return _json_response(dict(error=dict(type="BadRequest", message=message)), status)


@serve.deployment(name="CodedServer", max_ongoing_requests=1024)
class CodedServer:
  """A Ray Serve replica around one :class:`~jaxcoded.serving.CodedService`.

  Args:
    served: the deployment served, or a function without arguments that
      builds it inside the replica (to read a checkpoint there, or to build a
      learned code).
    input_shape: the shape of one query.
    max_images: the largest batch of one request.
    max_body_bytes: the largest request body, counted while it streams in
      (chunked or not); None: :func:`default_max_body_bytes`.
    max_inflight_bytes: the most body bytes held by all requests being read
      or parsed at once (None: 8 bodies of ``max_body_bytes``); a request
      that would pass it gets 503.
    parse_workers: threads that parse bodies (off the event loop).
    max_parse_queue: requests that may wait for or hold a parse thread; more
      get 503.
    answer_margin_s: how much longer than a query's own deadline
      (``max_wait_s + (max_retries + 1) * timeout_s``) a request waits before
      it reports the query as unresolved (the service resolves every query by
      its deadline; this only bounds a request if it did not).
    freeze_gc: ``gc.collect(); gc.freeze()`` once the service is up, so that
      Python's full collections skip the objects of the JAX, Flax and Ray
      imports (pauses of about 0.2 s otherwise; docs/serving.md, Limits).
    service_options: keyword arguments of ``CodedService.start`` (``latency``,
      ``timeout_s``, ``max_wait_s``, ``max_retries``, ``worker_options``, ...);
      ``flush`` defaults to ``"adaptive"`` here.
  """

  def __init__(
      self,
      served: deployment_lib.Deployment | Callable[[], deployment_lib.Deployment],
      input_shape: tuple[int, ...],
      max_images: int = 1024,
      max_body_bytes: int | None = None,
      answer_margin_s: float = 2.0,
      freeze_gc: bool = False,
      service_options: Mapping[str, Any] | None = None,
      max_inflight_bytes: int | None = None,
      parse_workers: int = 1,
      max_parse_queue: int = 64,
  ):
    if not isinstance(served, deployment_lib.Deployment):
      served = served()
    options = dict(service_options or {})
    options.setdefault("timeout_s", 1.0)
    options.setdefault("max_wait_s", 0.01)
    options.setdefault("flush", "adaptive")
    self.input_shape = tuple(int(d) for d in input_shape)
    self.max_images = int(max_images)
    if max_body_bytes is None:
      max_body_bytes = default_max_body_bytes(self.input_shape, self.max_images)
    self.max_body_bytes = int(max_body_bytes)
    self._budget = ByteBudget(max_inflight_bytes or 8 * self.max_body_bytes)
    self._parser = BoundedPool(parse_workers, max_parse_queue)
    self._timers = collections.Counter()  # seconds per front-end stage
    self.answer_timeout_s = (
        options["max_wait_s"] + (options.get("max_retries", 0) + 1) * options["timeout_s"]
        + answer_margin_s
    )
    self.served = served
    self._counts = collections.Counter()
    self._service = serving.CodedService.start(served, input_shape=self.input_shape, **options)
    self._stopped = False
    if freeze_gc:
      gc.collect()
      gc.freeze()

  # -- HTTP -----------------------------------------------------------------------

  async def __call__(self, request):
    path = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    self._counts["requests"] += 1
    routes = {"predict": ("POST", self._predict), "stats": ("GET", self._stats),
              "healthz": ("GET", self._healthz)}
    if path not in routes:
      self._counts["bad_requests"] += 1
      return _bad(404, f"No route {request.url.path!r}: use POST /predict, GET /stats, "
                  "GET /healthz.")
    method, handler = routes[path]
    if request.method != method:
      self._counts["bad_requests"] += 1
      return _bad(405, f"{request.url.path} takes {method}, got {request.method}.")
    return await handler(request)

  async def _predict(self, request):
    kind = (request.headers.get("content-type") or "application/json").split(";")[0]
    kind = kind.strip().lower()
    if kind not in JSON_TYPES + NPY_TYPES:
      self._counts["bad_requests"] += 1
      return _bad(415, f"Content-Type {kind!r} is not supported: use application/json or "
                  "application/x-npy.")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
      self._counts["bad_requests"] += 1
      return _bad(413, f"The body has {length} bytes; at most {self.max_body_bytes} are accepted.")
    held = 0
    # Announced from the first byte to the submit: a partial group waits for it.
    with self._service.expecting():
      try:
        started = time.perf_counter()
        chunks = []
        async for chunk in request.stream():
          if not chunk:
            continue
          if held + len(chunk) > self.max_body_bytes:
            raise _TooLarge()
          if not self._budget.take(len(chunk)):
            raise _Busy("the front end holds its limit of request bytes")
          held += len(chunk)
          chunks.append(chunk)
        body = b"".join(chunks)
        del chunks
        read = time.perf_counter()
        parsing = self._parser.submit(functools.partial(
            parse_images, body, kind, self.input_shape, max_images=self.max_images))
        if parsing is None:
          raise _Busy("every parse slot is taken")
        try:
          queries = await asyncio.wrap_future(parsing)
        finally:
          del body
        parsed = time.perf_counter()
        self._timers["read_s"] += read - started
        self._timers["parse_s"] += parsed - read
      except _TooLarge:
        self._counts["bad_requests"] += 1
        return _bad(413, f"The body has more than {self.max_body_bytes} bytes; at most "
                    f"{self.max_body_bytes} are accepted.")
      except _Busy as error:
        self._counts["busy"] += 1
        response = _json_response(dict(error=dict(
            type="Busy", message=f"Too many requests in flight ({error}): retry later.")), 503)
        response.headers["retry-after"] = "1"
        return response
      except BadRequest as error:
        self._counts["bad_requests"] += 1
        return _bad(error.status, str(error))
      finally:
        self._budget.give(held)
      try:
        futures = self._service.submit(queries)
      except serving.ServiceStopped as error:
        return _json_response(dict(error=dict(type="ServiceStopped", message=str(error))), 503)
      submitted = time.perf_counter()
      self._timers["submit_s"] += submitted - parsed
    waiting = [asyncio.wrap_future(f) for f in futures]
    for waited in waiting:  # Retrieved even if this request stops waiting.
      waited.add_done_callback(lambda f: f.cancelled() or f.exception())
    _, late = await asyncio.wait(waiting, timeout=self.answer_timeout_s)
    replying = time.perf_counter()
    answers = []
    for i, waited in enumerate(waiting):
      if waited in late:
        self._counts["unresolved"] += 1
        answers.append(dict(query=i, error=dict(
            type="Unresolved", message=f"query {i}: no outcome within {self.answer_timeout_s:g} s",
        )))
        continue
      error = waited.exception()
      answers.append(answer_to_json(i, waited.result()) if error is None
                     else error_to_json(i, error))
    num_errors = sum("error" in a for a in answers)
    response = _json_response(dict(
        scheme=self.served.name, answers=answers, num_answered=len(answers) - num_errors,
        num_errors=num_errors,
    ))
    self._timers["reply_s"] += time.perf_counter() - replying
    self._counts["predicted"] += 1
    return response

  async def _stats(self, request):
    del request
    return _json_response(self.stats())

  async def _healthz(self, request):
    del request
    scheme = self.served.scheme
    content = dict(
        status="stopped" if self._stopped else "ok", scheme=self.served.name,
        num_queries=scheme.num_queries, num_workers=scheme.num_workers,
        recovery_threshold=scheme.recovery_threshold, input_shape=list(self.input_shape),
    )
    return _json_response(content, 503 if self._stopped else 200)

  # -- Through a DeploymentHandle ---------------------------------------------------

  def stats(self) -> dict[str, Any]:
    """The service's counters, with ``pending``, ``errored`` and ``"http"``."""
    stats = self._service.stats()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return dict(
        **dataclasses.asdict(stats), pending=stats.pending, errored=stats.errored,
        http=dict(requests=self._counts["requests"], bad_requests=self._counts["bad_requests"],
                  unresolved=self._counts["unresolved"], busy=self._counts["busy"],
                  predicted=self._counts["predicted"], inflight_bytes=self._budget.held,
                  peak_inflight_bytes=self._budget.peak,
                  max_body_bytes=self.max_body_bytes, max_inflight_bytes=self._budget.limit),
        profile=dict(**self._service.profile.snapshot(),
                     **{k: float(self._timers[k]) for k in
                        ("read_s", "parse_s", "submit_s", "reply_s")},
                     process_cpu_s=usage.ru_utime + usage.ru_stime),
        replica=dict(pid=os.getpid(), id=self._replica_id()),
    )

  @staticmethod
  def _replica_id() -> str:
    try:
      return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside Serve, in a unit test
      return str(os.getpid())

  def kill_worker(self, index: int) -> None:
    """Kills coded worker ``index`` now (chaos tests); Ray restarts it."""
    self._service.kill_worker(index)

  def check_health(self) -> None:
    """Serve's replica health check."""
    if self._stopped:
      raise RuntimeError("CodedServer: the coded service was shut down.")

  def __del__(self):
    """Serve calls this when the replica shuts down: the worker actors go with it."""
    service = getattr(self, "_service", None)
    if service is not None and not self._stopped:
      self._stopped = True
      service.shutdown()
    parser = getattr(self, "_parser", None)
    if parser is not None:
      parser.shutdown()


def build_app(
    served: deployment_lib.Deployment | Callable[[], deployment_lib.Deployment],
    *,
    input_shape: tuple[int, ...],
    replica_cpus: float = 0.0,
    max_images: int = 1024,
    max_body_bytes: int | None = None,
    answer_margin_s: float = 2.0,
    freeze_gc: bool = False,
    num_replicas: int = 1,
    max_inflight_bytes: int | None = None,
    parse_workers: int = 1,
    max_parse_queue: int = 64,
    **service_options,
) -> serve.Application:
  """A Serve application serving ``served`` (a Deployment or a function building one).

  Args:
    served: what :class:`CodedServer` serves.
    input_shape: the shape of one query.
    replica_cpus: CPUs reserved for the replica (the master); 0 on a small
      machine, where reserved CPUs would keep the worker actors from starting.
    max_images, max_body_bytes, answer_margin_s, freeze_gc: see :class:`CodedServer`.
    max_inflight_bytes, parse_workers, max_parse_queue: see :class:`CodedServer`.
    num_replicas: Serve replicas; each is the master of its own N worker
      actors (N x num_replicas actors in all).
    **service_options: keyword arguments of ``CodedService.start``.
  """
  return CodedServer.options(
      ray_actor_options={"num_cpus": replica_cpus}, num_replicas=int(num_replicas),
  ).bind(
      served, tuple(input_shape), max_images, max_body_bytes, answer_margin_s, freeze_gc,
      service_options, max_inflight_bytes, parse_workers, max_parse_queue,
  )


# ---------------------------------------------------------------------------
# Starting and stopping.


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port that is free on ``host`` now."""
  with socket.socket() as s:
    s.bind((host, 0))
    return s.getsockname()[1]


class Server:
  """Running Serve applications; create with :func:`start`, end with :meth:`shutdown`.

  Attributes:
    urls: app name -> its base URL (``http://host:port/prefix``).
    handles: app name -> its ``DeploymentHandle`` (for ``stats`` and
      ``kill_worker`` without HTTP).
  """

  def __init__(self, urls: dict[str, str], handles: dict[str, Any], owns_ray: bool):
    self.urls = urls
    self.handles = handles
    self._owns_ray = owns_ray
    self._stopped = False

  @property
  def url(self) -> str:
    """The base URL of the only app (raises with several)."""
    (url,) = self.urls.values()
    return url

  def _handle(self, name: str | None):
    if name is None:
      (name,) = self.handles
    return self.handles[name]

  def stats(self, name: str | None = None) -> dict[str, Any]:
    """What ``GET /stats`` returns, through the app's handle."""
    return self._handle(name).stats.remote().result()

  def kill_worker(self, index: int, name: str | None = None) -> None:
    """Kills coded worker ``index`` of an app (chaos testing); Ray restarts it."""
    self._handle(name).kill_worker.remote(index).result()

  def shutdown(self) -> None:
    """Deletes the apps (their replicas stop their worker actors), stops Serve (and Ray)."""
    if self._stopped:
      return
    self._stopped = True
    for name in self.handles:
      serve.delete(name)
    serve.shutdown()
    if self._owns_ray:
      ray.shutdown()

  def __enter__(self) -> "Server":
    return self

  def __exit__(self, *exc_info) -> None:
    self.shutdown()


def start(
    apps: serve.Application | Mapping[str, serve.Application],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    request_timeout_s: float = 60.0,
    address: str | None = None,
    ray_init_kwargs: Mapping[str, Any] | None = None,
    access_log: bool = False,
) -> Server:
  """Starts Serve's HTTP proxy on ``host:port`` and the apps; returns once they are ready.

  Args:
    apps: one application (served at ``/``), or name -> application (each at
      ``/<name>``).
    host: the address to bind; 127.0.0.1 keeps the service local.
    port: the TCP port (:func:`free_port` finds one).
    request_timeout_s: Serve's end-to-end limit per HTTP request.
    address: a Ray cluster to join; by default the Ray already initialised,
      else a new local one (shut down again by :meth:`Server.shutdown`).
    ray_init_kwargs: more ``ray.init`` arguments for a new Ray.
    access_log: Serve's per-request access log (off: it costs a log line per
      request).

  Returns:
    A :class:`Server`.
  """
  owns_ray = not ray.is_initialized()
  if owns_ray:
    ray.init(address=address, **{"include_dashboard": False, **(ray_init_kwargs or {})})
  try:
    logging_config = {"log_level": "WARNING", "enable_access_log": access_log}
    serve.start(
        http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s},
        logging_config=logging_config,
    )
    if isinstance(apps, serve.Application):
      routes = {"default": ("/", apps)}
    else:
      routes = {name: (f"/{name}", app) for name, app in apps.items()}
    handles, urls = {}, {}
    for name, (prefix, app) in routes.items():
      handles[name] = serve.run(app, name=name, route_prefix=prefix,
                                logging_config=logging_config)
      urls[name] = f"http://{host}:{port}{prefix.rstrip('/')}"
  except BaseException:
    serve.shutdown()
    if owns_ray:
      ray.shutdown()
    raise
  return Server(urls, handles, owns_ray)
