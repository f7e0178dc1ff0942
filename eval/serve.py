r"""Serves the digits classifier coded on Ray, with real (injected) stragglers.

  python eval/serve.py                                  # Berrut, K = 4, S = 2, Poisson traffic
  python eval/serve.py --scheme=uncoded
  python eval/serve.py --http --port 8000               # an HTTP service (Ray Serve) until Ctrl-C
  python eval/serve.py --address=auto                   # an existing Ray cluster
  python eval/serve.py --address=HEAD:6379 --worker_cpus=1   # 1 CPU per worker, spread over nodes
  python eval/serve.py --http --replicas=2              # two Serve replicas, each its own workers

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
      -d '{"images": [[-0.81,-0.81,-0.14,1.01,1.68,0.51,-0.81,-0.81,-0.81,-0.81,1.34,1.84,1.01,1.34,0.35,-0.81,-0.81,-0.31,1.84,1.18,-0.81,-0.14,0.51,-0.81,-0.81,0.18,1.84,0.01,-0.81,-0.14,0.51,-0.81,-0.81,0.35,0.68,-0.81,-0.81,0.68,0.35,-0.81,-0.81,-0.14,0.84,-0.81,-0.47,1.68,-0.47,-0.81,-0.81,-0.64,1.84,1.18,1.51,0.84,-0.81,-0.81,-0.81,-0.81,-0.14,1.51,1.51,-0.64,-0.81,-0.81]]}'

The image is the first test digit (a 0) normalised as ``jaxcoded.data`` does
(``data.normalise("digits", raw)``), cut to two decimals (toward zero, to stay within the range). Raw 0..16
pixels are refused (a ValidationError naming the remedy): one out-of-range
query would spoil the answers of its whole group.

On a cluster, ``--worker_cpus`` (or ``--worker_options='{"num_gpus": 1}'``)
reserves resources per worker; the workers spread over the nodes
(``scheduling_strategy="SPREAD"``), and a cluster that cannot place them all
is refused at once with the CPUs needed and available. For a local
multi-node test cluster on 127.0.0.1, export
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` first (docs/scaling.md).

``--factory=module:function`` serves what that function (no arguments, run
inside the Serve replica) returns, a ``jaxcoded.deployment.Deployment``: for
example a learned code read from its checkpoint, with ``--input_shape``. Needs
``pip install 'jaxcoded[ray]'``.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import json
import pathlib
import signal
import sys
import threading
import time

import ml_collections
import numpy as np
from absl import app, flags, logging

from jaxcoded import data, deployment, serving, stragglers, training
from jaxcoded.comparison import builders

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxcoded-serve", "Where the base classifier is.")
# Every registered kind that needs no trained part (jaxcoded.comparison.builders).
_SERVABLE = tuple(kind for kind in builders.kinds() if builders.get(kind).trains is None)
_SCHEME = flags.DEFINE_enum("scheme", "berrut", _SERVABLE, "The code served (a registered kind).")
_SCHEME_OPTIONS = flags.DEFINE_string(
    "scheme_options", "{}", 'The kind\'s config-entry options as JSON, e.g. \'{"degree": 2}\' for '
    'lcc or \'{"num_adversaries": 1}\' for byzantine_berrut.')
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
_WORKER_CPUS = flags.DEFINE_float(
    "worker_cpus", None, "CPUs each worker actor reserves (default 0: simulated workers).")
_WORKER_OPTIONS = flags.DEFINE_string(
    "worker_options", None,
    'More Ray actor options for the workers, as JSON, e.g. \'{"num_gpus": 1}\' or '
    '\'{"scheduling_strategy": "DEFAULT"}\' (default placement: SPREAD over the nodes).')
_REPLICAS = flags.DEFINE_integer(
    "replicas", 1, "--http: Serve replicas, each the master of its own N worker actors.")
_FLUSH = flags.DEFINE_enum(
    "flush", None, ["adaptive", "timer"],
    "When a partial group leaves: adaptive (once nothing else is queued; the --http default) "
    "or timer (after --max_wait_s; the default without --http).")


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


def _deployment(name: str, k: int, s: int, base_task: deployment.WorkerTask) -> deployment.Deployment:
  """The registered kind ``name`` built as the comparison builds it, for K queries and S stragglers."""
  try:
    options = json.loads(_SCHEME_OPTIONS.value)
  except json.JSONDecodeError as error:
    raise app.UsageError(f"--scheme_options must be a JSON object: {error}.") from error
  if name == "lcc":
    options.setdefault("degree", 1)
  entry = ml_collections.ConfigDict(dict(kind=name, **options))
  kind = builders.get(name)
  try:
    kind.check(entry, k, [s])
    built = kind.build(entry, s, builders.BuildContext(k, base_task))
  except ValueError as error:
    raise app.UsageError(f"--scheme={name}: {error}") from error
  if built is None:
    raise app.UsageError(f"--scheme={name} cannot be built for K = {k}, S = {s}.")
  scheme, tasks, roles = built
  return deployment.Deployment(name, scheme, tasks, roles, query_range=data.query_spec("digits"))


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
  base_task = deployment.WorkerTask(*training.classifier.as_worker_fn(model))
  served = _deployment(_SCHEME.value, _K.value, _S.value, base_task)
  return served, data.load("digits", "test", seed=None).input_shape


def latency_profile(num_workers: int):
  """Shifted-exponential delays, the last worker always late (or nothing injected)."""
  if not _STRAGGLERS.value:
    return serving.latency_profile(num_workers, death_probability=_DEATH.value)
  return serving.latency_profile(
      num_workers, stragglers.ShiftedExponential(shift=0.01, rate=200.0),
      slow_workers=(num_workers - 1,), slow_extra_s=2 * _TIMEOUT.value,
      death_probability=_DEATH.value,
  )


def worker_options() -> dict | None:
  """The workers' Ray actor options from --worker_options and --worker_cpus."""
  options = json.loads(_WORKER_OPTIONS.value) if _WORKER_OPTIONS.value else {}
  if not isinstance(options, dict):
    raise app.UsageError(f"--worker_options must be a JSON object, got {_WORKER_OPTIONS.value!r}.")
  if _WORKER_CPUS.value is not None:
    options["num_cpus"] = _WORKER_CPUS.value
  return options or None


def placement(service) -> str:
  """How many workers run on each node (node ids shortened), e.g. ``{'5e1f..': 2, ...}``."""
  nodes = collections.Counter()
  for process in service.worker_processes():
    nodes[process[0][:8] if process else "unknown"] += 1
  return ", ".join(f"{count} on node {node}" for node, count in sorted(nodes.items()))


def serve_http(served, input_shape, num_workers: int | None) -> None:
  """Serves over HTTP until Ctrl-C, SIGTERM or ``--serve_for_s``; then stops everything."""
  from jaxcoded.serving import http

  options = dict(timeout_s=_TIMEOUT.value, max_wait_s=_MAX_WAIT.value,
                 worker_options=worker_options(), flush=_FLUSH.value or "adaptive")
  if num_workers is not None:
    options["latency"] = latency_profile(num_workers)
  app_ = http.build_app(served, input_shape=input_shape, num_replicas=_REPLICAS.value, **options)
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
      max_wait_s=_MAX_WAIT.value, address=_ADDRESS.value, worker_options=worker_options(),
      flush=_FLUSH.value or "timer",
  ) as service:
    print(f"workers: {placement(service)}", flush=True)
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
