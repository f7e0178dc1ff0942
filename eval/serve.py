r"""Serves the digits classifier coded on Ray, with real (injected) stragglers.

  python eval/serve.py                                  # Berrut, K = 4, S = 2, Poisson traffic
  python eval/serve.py --scheme=uncoded
  python eval/serve.py --http --port 8000               # an HTTP service (Ray Serve) until Ctrl-C
  python eval/serve.py --address=auto                   # an existing Ray cluster

Trains the digits MLP into ``WORKDIR/base`` if it is not there and starts N
worker actors (``jaxcoded.serving``, docs/serving.md) with shifted-exponential
latencies and one always-late worker (``--death_probability`` adds random
deaths, which Ray repairs by restarting the actor; ``--nostragglers`` injects
nothing).

Without ``--http`` it sends the test images as Poisson arrivals at ``--rate``
per second and prints the accuracy, the latency percentiles and the service's
counters. With ``--http`` it serves ``POST /predict``, ``GET /stats`` and
``GET /healthz`` on ``--host:--port`` (127.0.0.1 by default) through Ray Serve
(``jaxcoded.serving.http``) until interrupted (or for ``--serve_for_s``), then
stops Serve and every worker actor:

  curl -s http://127.0.0.1:8000/predict -H 'content-type: application/json' \
      -d '{"images": [[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]]}'

``--factory=module:function`` serves what that function (no arguments, run
inside the Serve replica) returns, a ``jaxcoded.deployment.Deployment``: for
example a learned code read from its checkpoint, with ``--input_shape``. Needs
``pip install 'jaxcoded[ray]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import signal
import sys
import threading
import time

import numpy as np
from absl import app, flags, logging
from flax import nnx

from jaxcoded import data, deployment, schemes, serving, stragglers, training

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxcoded-serve", "Where the base classifier is.")
_SCHEME = flags.DEFINE_enum("scheme", "berrut", ["berrut", "uncoded", "replication", "lcc"],
                            "The code served.")
_K = flags.DEFINE_integer("num_queries", 4, "K, queries per group.")
_S = flags.DEFINE_integer("num_stragglers", 2, "S, stragglers the code tolerates.")
_QUERIES = flags.DEFINE_integer("num_images", 200, "Test images sent (without --http).")
_TIMEOUT = flags.DEFINE_float("timeout_s", 1.0, "Deadline per group, seconds.")
_STRAGGLERS = flags.DEFINE_bool(
    "stragglers", True, "Inject latencies: shifted exponential, the last worker always late."
)
_DEATH = flags.DEFINE_float("death_probability", 0.0,
                            "Chance a worker dies on a call (Ray restarts it).")
_MAX_WAIT = flags.DEFINE_float("max_wait_s", 0.25, "Longest wait to fill a group of K.")
_RATE = flags.DEFINE_float("rate", 40.0, "Queries per second sent (Poisson arrivals).")
_ADDRESS = flags.DEFINE_string("address", None, "Ray cluster address (default: a local Ray).")
_HTTP = flags.DEFINE_bool("http", False, "Serve over HTTP (Ray Serve) instead of sending traffic.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "--http: the address to bind.")
_PORT = flags.DEFINE_integer("port", 8000, "--http: the TCP port.")
_REQUEST_TIMEOUT = flags.DEFINE_float("request_timeout_s", 30.0,
                                      "--http: Serve's limit per HTTP request, seconds.")
_SERVE_FOR = flags.DEFINE_float("serve_for_s", 0.0,
                                "--http: stop after this many seconds (0: at Ctrl-C or SIGTERM).")
_FACTORY = flags.DEFINE_string(
    "factory", None,
    "module:function returning the Deployment to serve (run where the service runs); "
    "replaces --scheme, e.g. a learned code from its checkpoint.",
)
_INPUT_SHAPE = flags.DEFINE_list("input_shape", ["8", "8", "1"], "Shape of one query (--factory).")


def _digits_config():
  """configs/digits.py: the installed ``configs`` package, else the repository's folder."""
  try:
    return importlib.import_module("configs.digits").get_config()
  except ImportError:
    folder = pathlib.Path(__file__).resolve().parents[1] / "configs"
    spec = importlib.util.spec_from_file_location(
        "configs", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules["configs"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("configs.digits").get_config()


def _scheme(name: str, k: int, s: int) -> schemes.Scheme:
  if name == "berrut":
    return schemes.BerrutCode.create(k, s)
  if name == "lcc":
    return schemes.LagrangeCode.create(k, s, degree=1)
  if name == "replication":
    return schemes.Replication.create(k, s)
  return schemes.Uncoded.create(k)


def _factory(spec: str):
  module, _, function = spec.partition(":")
  if not function:
    raise app.UsageError(f"--factory must be module:function, got {spec!r}.")
  return getattr(importlib.import_module(module), function)


def build_deployment() -> tuple[deployment.Deployment | object, tuple[int, ...]]:
  """The deployment served (or its factory) and the shape of one query."""
  if _FACTORY.value:
    return _factory(_FACTORY.value), tuple(int(d) for d in _INPUT_SHAPE.value)
  base = pathlib.Path(_WORKDIR.value) / "base"
  if not training.is_finished(base):
    config = _digits_config()
    config.progress_bar = False
    training.train(config, base)
  model, _ = training.load_model(base)
  graphdef, params = nnx.split(model)

  def classify(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  scheme = _scheme(_SCHEME.value, _K.value, _S.value)
  served = deployment.Deployment.homogeneous(_SCHEME.value, scheme, classify, params)
  return served, data.load("digits", "test", seed=None).image_shape


def latency_profile(num_workers: int):
  """Shifted-exponential delays, the last worker always late (or nothing injected)."""
  if not _STRAGGLERS.value:
    return serving.latency_profile(num_workers, death_probability=_DEATH.value)
  return serving.latency_profile(
      num_workers, stragglers.ShiftedExponential(shift=0.01, rate=200.0),
      slow_workers=(num_workers - 1,), slow_extra_s=2 * _TIMEOUT.value,
      death_probability=_DEATH.value,
  )


def serve_http(served, input_shape, num_workers: int | None) -> None:
  """Serves over HTTP until Ctrl-C, SIGTERM or ``--serve_for_s``; then stops everything."""
  from jaxcoded.serving import http  # pylint: disable=g-import-not-at-top

  options = dict(timeout_s=_TIMEOUT.value, max_wait_s=_MAX_WAIT.value)
  if num_workers is not None:
    options["latency"] = latency_profile(num_workers)
  app_ = http.build_app(served, input_shape=input_shape, **options)
  stop = threading.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: stop.set())
  server = http.start(app_, host=_HOST.value, port=_PORT.value,
                      request_timeout_s=_REQUEST_TIMEOUT.value, address=_ADDRESS.value)
  try:
    print(f"serving on {server.url}: POST /predict, GET /stats, GET /healthz "
          f"({'for %g s' % _SERVE_FOR.value if _SERVE_FOR.value else 'Ctrl-C stops'})",
          flush=True)
    stop.wait(_SERVE_FOR.value or None)
    print(f"final stats: {server.stats()}", flush=True)
  finally:
    server.shutdown()
  print("stopped: Serve, the replica and every worker actor", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  served, input_shape = build_deployment()
  if _HTTP.value:
    num_workers = served.num_workers if isinstance(served, deployment.Deployment) else None
    serve_http(served, input_shape, num_workers)
    return
  if not isinstance(served, deployment.Deployment):
    served = served()
  scheme = served.scheme
  n = scheme.num_workers
  test = data.load("digits", "test", seed=None)
  images, labels = test.images[: _QUERIES.value], test.labels[: _QUERIES.value]
  print(f"{served.name}: K = {scheme.num_queries}, N = {n}, R = {scheme.recovery_threshold}; "
        f"worker {n - 1} always late, deaths with probability {_DEATH.value} per call")
  with serving.CodedService.start(
      served, input_shape=input_shape, latency=latency_profile(n), timeout_s=_TIMEOUT.value,
      max_wait_s=_MAX_WAIT.value, address=_ADDRESS.value,
  ) as service:
    gaps = np.random.default_rng(0).exponential(1.0 / _RATE.value, len(images))
    futures = []
    for image, gap in zip(images, gaps):
      time.sleep(gap)
      futures.extend(service.submit(image[None]))
    answers, truth, errors = [], [], 0
    for future, label in zip(futures, labels):
      try:
        answers.append(future.result(timeout=60))
        truth.append(label)
      except serving.QueryNotDecoded:
        errors += 1
    predicted = np.array([a.label for a in answers])
    print(f"answered {len(answers)} of {len(images)} ({errors} explicit errors); "
          f"accuracy {np.mean(predicted == np.array(truth)):.3f}")
    latencies_ms = 1e3 * np.array([a.latency_s for a in answers])
    if len(latencies_ms):
      p50, p99 = np.percentile(latencies_ms, [50, 99])
      print(f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(service.stats())


if __name__ == "__main__":
  app.run(main)
