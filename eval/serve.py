r"""Serves the digits classifier coded on Ray, with real (injected) stragglers.

  python eval/serve.py --workdir /tmp/jaxcoded-serve              # Berrut, K = 4, S = 2
  python eval/serve.py --workdir /tmp/jaxcoded-serve --scheme=uncoded
  python eval/serve.py --workdir /tmp/jaxcoded-serve --address=auto   # an existing Ray cluster

Trains the digits MLP into ``WORKDIR/base`` if it is not there, starts N worker
actors (``jaxcoded.serving``, docs/serving.md) with shifted-exponential
latencies and one always-late worker (``--death_probability`` adds random
deaths, which Ray repairs by restarting the actor), sends the
test images as Poisson arrivals at ``--rate`` per second, and prints the accuracy, the latency percentiles and the
service's counters. Needs ``pip install 'jaxcoded[ray]'``.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
from absl import app, flags
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/

from configs import digits  # pylint: disable=g-import-not-at-top
from jaxcoded import data, deployment, schemes, serving, stragglers, training

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxcoded-serve", "Where the base classifier is.")
_SCHEME = flags.DEFINE_enum("scheme", "berrut", ["berrut", "uncoded", "replication", "lcc"],
                            "The code served.")
_K = flags.DEFINE_integer("num_queries", 4, "K, queries per group.")
_S = flags.DEFINE_integer("num_stragglers", 2, "S, stragglers the code tolerates.")
_QUERIES = flags.DEFINE_integer("num_images", 200, "Test images sent.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 1.0, "Deadline per group, seconds.")
_DEATH = flags.DEFINE_float("death_probability", 0.0,
                            "Chance a worker dies on a call (Ray restarts it).")
_MAX_WAIT = flags.DEFINE_float("max_wait_s", 0.25, "Longest wait to fill a group of K.")
_RATE = flags.DEFINE_float("rate", 40.0, "Queries per second sent (Poisson arrivals).")
_ADDRESS = flags.DEFINE_string("address", None, "Ray cluster address (default: a local Ray).")


def _scheme(name: str, k: int, s: int) -> schemes.Scheme:
  if name == "berrut":
    return schemes.BerrutCode.create(k, s)
  if name == "lcc":
    return schemes.LagrangeCode.create(k, s, degree=1)
  if name == "replication":
    return schemes.Replication.create(k, s)
  return schemes.Uncoded.create(k)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  base = pathlib.Path(_WORKDIR.value) / "base"
  if not (base / training.FINAL_METRICS_FILE).exists():
    config = digits.get_config()
    config.progress_bar = False
    training.train_and_evaluate(config, base)
  model, _ = training.load_model(base)
  graphdef, params = nnx.split(model)

  def classify(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  scheme = _scheme(_SCHEME.value, _K.value, _S.value)
  served = deployment.Deployment.homogeneous(_SCHEME.value, scheme, classify, params)
  n = scheme.num_workers
  latency = serving.latency_profile(
      n, stragglers.ShiftedExponential(shift=0.01, rate=200.0), slow_workers=(n - 1,),
      slow_extra_s=2 * _TIMEOUT.value, death_probability=_DEATH.value,
  )
  test = data.load("digits", "test", seed=None)
  images, labels = test.images[: _QUERIES.value], test.labels[: _QUERIES.value]
  print(f"{_SCHEME.value}: K = {scheme.num_queries}, N = {n}, R = {scheme.recovery_threshold}; "
        f"worker {n - 1} always late, deaths with probability {_DEATH.value} per call")
  with serving.CodedService.start(
      served, input_shape=test.image_shape, latency=latency, timeout_s=_TIMEOUT.value,
      max_wait_s=_MAX_WAIT.value,
      address=_ADDRESS.value,
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
    print(f"answered {len(answers)} of {len(images)} ({errors} explicit errors); "
          f"accuracy {np.mean(predicted == truth):.3f}")
    if len(latencies_ms):
      p50, p99 = np.percentile(latencies_ms, [50, 99])
      print(f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(service.stats())


if __name__ == "__main__":
  sys.exit(app.run(main))
