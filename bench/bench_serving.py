r"""Tail latency of coded serving on Ray: Poisson arrivals, N worker actors, schemes at equal N.

Run from the repository root (about 5 minutes on the project's 2-core CPU, the
first run also trains the digits models, about 1 minute):

  PYTHONPATH=. python bench/bench_serving.py --workdir=/tmp/bench_serving

Every scheme gets its own N worker actors (``--num_workers``, default 6; all
services stay up, about 0.3 GB per actor here), the same Poisson arrivals of
single queries (``--rate`` per second) and the same injected latency per worker
call (``--latency``: a shifted exponential or a Pareto heavy tail, optionally a
fixed set of slow workers and random deaths). The schemes take turns in
``--rounds`` rounds, so that slow phases of a shared machine hit them alike.
K follows from N:

  uncoded       K = N         no redundancy: a query waits for its own worker
  replication   K = N / 2     r = 2 copies of each query
  Berrut        K = N - 2     S = 2 stragglers (ApproxIFER's N = K + S)
  LCC (d = 1)   K = N - 2     S = 2 (``--schemes`` must name it; inaccurate on a ReLU net)
  ParM          K = N - 1     one parity worker (a parity model trained for that K)
  learned       K = N - 2     the learned polynomial code (de = 1, dh = 2, R = 3)

Latency is measured from a query's scheduled arrival to its answer (or its
explicit error at the deadline), so batching waits and queueing count. The
table gives p50, p99, p99.9, throughput, the gap p99.9 - p50 and each gap
relative to replication's (ParM, SOSP 2019, reported up to 3.5x smaller gaps
than equal-resource replication), plus the fraction answered, the accuracy of
the answers on the digits test images, and the client stall: the longest time
the client process went without CPU (a watchdog thread's oversleep, or the
submitting loop falling behind its Poisson schedule). On a shared machine a
stall delays every answer at once, whatever the scheme; a segment with a stall
over ``--max_stall_ms`` is served again (at most ``--max_redos`` times, counted
in the "redone" column).
``--address`` runs the same on a real Ray cluster (give the workers real
resources with ``--worker_cpus``).
"""

from __future__ import annotations

import collections
import gc
import json
import pathlib
import sys
import threading
import time

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for configs/

import ray  # noqa: E402

from configs import coder_digits, digits, parm_digits  # noqa: E402
from jaxcoded import (  # noqa: E402
    coder_training, data, deployment, evaluation, parity_training, schemes, serving, stragglers,
    training,
)

SCHEMES = ("uncoded", "replication", "berrut", "lcc", "parm", "learned")

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_serving", "Trained models and results.")
_SCHEMES = flags.DEFINE_list(
    "schemes", "uncoded,replication,berrut,parm,learned", f"Schemes, among {SCHEMES}."
)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 6, "N worker actors for every scheme (even).")
_RATE = flags.DEFINE_float("rate", 100.0, "Poisson arrival rate, queries per second.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 3000, "Queries per scheme.")
_LATENCY = flags.DEFINE_enum("latency", "pareto", ["exp", "pareto"], "Per-call latency model.")
_BASE_S = flags.DEFINE_float("base_s", 0.005, "Shift (exp) or scale (pareto) of a call, seconds.")
_EXP_MEAN_S = flags.DEFINE_float("exp_mean_s", 0.005, "exp: mean of the exponential part, s.")
_ALPHA = flags.DEFINE_float("alpha", 2.0, "pareto: tail index (smaller = heavier tail).")
_SLOW = flags.DEFINE_list("slow_workers", [], "Indices of permanently slow workers.")
_SLOW_EXTRA_S = flags.DEFINE_float("slow_extra_s", 0.05, "Their extra delay per call, seconds.")
_DEATH = flags.DEFINE_float("death_probability", 0.0, "Per call: the worker process dies.")
_MAX_WAIT_S = flags.DEFINE_float("max_wait_s", 0.02, "Longest wait for a group to fill, s.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 1.0, "A group's deadline after dispatch, s.")
_WARMUP = flags.DEFINE_integer("warmup_queries", 100, "Unmeasured queries per scheme first.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "The schemes take turns, num_queries / rounds each.")
_MAX_STALL_MS = flags.DEFINE_float(
    "max_stall_ms", 50.0,
    "A segment during which the client process stalled longer (a busy shared machine) is served "
    "again; 0 keeps every segment.",
)
_MAX_REDOS = flags.DEFINE_integer("max_redos", 3, "Times a stalled segment is served again.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of arrivals and injected latencies.")
_ADDRESS = flags.DEFINE_string("address", None, "Ray cluster address (default: a local instance).")
_NUM_CPUS = flags.DEFINE_integer("num_cpus", 2, "CPUs of the local Ray instance.")
_WORKER_CPUS = flags.DEFINE_float("worker_cpus", 0.0, "CPUs reserved per worker actor.")
_FREEZE_GC = flags.DEFINE_bool(
    "freeze_gc", True,
    "gc.freeze() once a service is up: the objects of the JAX, Flax and Ray imports then stay "
    "out of Python's full collections, which otherwise pause the master for about 0.2 s here.",
)


# ---------------------------------------------------------------------------
# The deployments at equal worker count.


def _base_config():
  config = digits.get_config()
  config.progress_bar = False
  return config


def _base(workdir: pathlib.Path):
  config = _base_config()
  if not (workdir / training.FINAL_METRICS_FILE).exists():
    training.train_and_evaluate(config, workdir)
  model, _ = training.load_model(workdir)
  return parity_training.as_worker_fn(model)


def _parity_fn(workdir: pathlib.Path, base_workdir: pathlib.Path, num_queries: int):
  if not (workdir / training.FINAL_METRICS_FILE).exists():
    config = parm_digits.get_config()
    config.num_queries = num_queries
    config.base, config.base_workdir = _base_config(), str(base_workdir)
    config.progress_bar = False
    parity_training.train_parity_model(config, workdir)
  model, config = parity_training.load_parity_model(workdir)
  return parity_training.as_worker_fn(model, config.target)


def _learned_code(workdir: pathlib.Path, base_workdir: pathlib.Path, num_queries: int, s: int):
  if not (workdir / "results.json").exists():
    config = coder_digits.get_config()
    config.num_queries, config.num_stragglers = num_queries, s
    config.base, config.base_workdir = _base_config(), str(base_workdir)
    coder_training.train_and_evaluate(config, str(workdir))
  return coder_training.load_code(workdir)


def build_deployments(names, num_workers: int, workdir: pathlib.Path) -> dict:
  """name -> Deployment, every one with ``num_workers`` workers."""
  if num_workers < 4 or num_workers % 2:
    raise app.UsageError(f"--num_workers must be even and >= 4, got {num_workers}.")
  base_workdir = workdir / "base"
  f, params = _base(base_workdir)
  n = num_workers
  built = {}
  for name in names:
    if name == "uncoded":
      built[name] = deployment.Deployment.homogeneous(
          f"uncoded K={n}", schemes.Uncoded.create(n), f, params)
    elif name == "replication":
      built[name] = deployment.Deployment.homogeneous(
          f"replication K={n // 2} r=2", schemes.Replication.create(n // 2, 1), f, params)
    elif name == "berrut":
      built[name] = deployment.Deployment.homogeneous(
          f"Berrut K={n - 2} S=2", schemes.BerrutCode.create(n - 2, 2), f, params)
    elif name == "lcc":
      built[name] = deployment.Deployment.homogeneous(
          f"LCC d=1 K={n - 2} S=2", schemes.LagrangeCode.create(n - 2, 2, degree=1), f, params)
    elif name == "parm":
      parity_fn, parity_params = _parity_fn(workdir / f"parm_k{n - 1}", base_workdir, n - 1)
      built[name] = deployment.Deployment.parity(
          f"ParM K={n - 1} r=1", schemes.ParityCode.create(n - 1), f, params, parity_fn,
          parity_params)
    elif name == "learned":
      code = _learned_code(workdir / f"learned_k{n - 2}", base_workdir, n - 2, 2)
      built[name] = deployment.Deployment.learned(
          f"learned K={n - 2} R={code.recovery_threshold}", code)
    else:
      raise app.UsageError(f"Unknown scheme {name!r}; use some of {SCHEMES}.")
    assert built[name].num_workers == n, name
  return built


# ---------------------------------------------------------------------------
# One run: Poisson arrivals into a service.


def latency_profile(num_workers: int, seed: int) -> tuple[serving.WorkerLatency, ...]:
  if _LATENCY.value == "exp":
    model = stragglers.ShiftedExponential(shift=_BASE_S.value, rate=1.0 / _EXP_MEAN_S.value)
  else:
    model = stragglers.Pareto(scale=_BASE_S.value, alpha=_ALPHA.value)
  return serving.latency_profile(
      num_workers, model, slow_workers=[int(i) for i in _SLOW.value],
      slow_extra_s=_SLOW_EXTRA_S.value, death_probability=_DEATH.value, seed=seed,
  )


def serve_poisson(service, images, labels, rate: float, num_queries: int, seed: int) -> dict:
  """Submits ``num_queries`` single queries at Poisson times; waits for every outcome."""
  rng = np.random.default_rng(seed)
  arrivals = np.cumsum(rng.exponential(1.0 / rate, num_queries))
  picks = rng.integers(0, len(images), num_queries)
  done_at = np.full(num_queries, np.nan)
  finished = threading.Semaphore(0)

  def on_done(i):
    def record(_):
      done_at[i] = time.monotonic()
      finished.release()
    return record

  # A watchdog thread measures how long the client process goes without CPU
  # (oversleeping a 5 ms nap): a stalled client delays every answer alike.
  stall = [0.0]
  stop = threading.Event()

  def watch():
    while not stop.is_set():
      napped = time.monotonic()
      time.sleep(0.005)
      stall[0] = max(stall[0], time.monotonic() - napped - 0.005)

  watchdog = threading.Thread(target=watch, daemon=True)
  watchdog.start()
  futures = []
  lag = 0.0  # how far submission fell behind the schedule
  start = time.monotonic()
  for i in range(num_queries):
    delay = start + arrivals[i] - time.monotonic()
    if delay > 0:
      time.sleep(delay)
    lag = max(lag, -delay)
    (future,) = service.submit(images[picks[i]][None])
    future.add_done_callback(on_done(i))
    futures.append(future)
  for _ in range(num_queries):
    finished.acquire()
  stop.set()
  watchdog.join()
  latencies = done_at - (start + arrivals)
  answered = np.array([f.exception() is None for f in futures])
  correct = np.array([
      f.result().label == labels[p] if ok else False for f, p, ok in zip(futures, picks, answered)
  ])
  elapsed = np.nanmax(done_at) - start
  return dict(
      latencies=latencies, answered=answered, correct=correct, elapsed_s=float(elapsed),
      stall_s=max(lag, stall[0]),
  )


def summarize(name: str, run: dict, stats: serving.ServiceStats) -> dict:
  latencies = run["latencies"]
  p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9])
  answered = run["answered"]
  return dict(
      scheme=name, queries=len(latencies), answered=float(answered.mean()),
      accuracy=float(run["correct"].sum() / max(1, answered.sum())),
      p50_ms=1e3 * p50, p99_ms=1e3 * p99, p999_ms=1e3 * p999, gap_ms=1e3 * (p999 - p50),
      mean_ms=1e3 * float(np.mean(latencies)),
      throughput=float(answered.sum() / run["elapsed_s"]),
      worker_failures=stats.worker_failures, worker_restarts=stats.worker_restarts,
      groups=stats.groups, padded_slots=stats.padded_slots,
      client_stall_ms=1e3 * run["stall_s"], redone_segments=run["redone"],
  )


def markdown(rows: list[dict]) -> str:
  reference = next((r["gap_ms"] for r in rows if r["scheme"].startswith("replication")), None)
  table = []
  for r in rows:
    ratio = f"{r['gap_ms'] / reference:.2f}" if reference else "-"
    table.append([
        r["scheme"], f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['p999_ms']:.1f}",
        f"{r['throughput']:.1f}", f"{r['gap_ms']:.1f}", ratio, f"{r['answered']:.4f}",
        f"{r['accuracy']:.3f}", f"{r['groups']}", f"{r['worker_failures']}/{r['worker_restarts']}",
        f"{r['client_stall_ms']:.0f}", f"{r['redone_segments']}",
    ])
  return evaluation.markdown_table(
      ["scheme", "p50 ms", "p99 ms", "p99.9 ms", "answers/s", "gap p99.9-p50 ms",
       "gap / replication's", "answered", "accuracy", "groups", "failures/restarts",
       "client stall ms", "redone"],
      table,
  )


def _stats_delta(after: serving.ServiceStats, before: serving.ServiceStats) -> dict[str, int]:
  return {
      field: getattr(after, field) - getattr(before, field)
      for field in serving.ServiceStats.__dataclass_fields__
  }


def _merge(segments: list[dict]) -> dict:
  return dict(
      latencies=np.concatenate([r["latencies"] for r in segments]),
      answered=np.concatenate([r["answered"] for r in segments]),
      correct=np.concatenate([r["correct"] for r in segments]),
      elapsed_s=sum(r["elapsed_s"] for r in segments),
      stall_s=max(r["stall_s"] for r in segments),
      redone=sum(r["redone"] for r in segments),
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  n = _NUM_WORKERS.value
  rounds = _ROUNDS.value
  if rounds < 1 or _NUM_QUERIES.value < rounds:
    raise app.UsageError("--rounds must be >= 1 and at most --num_queries.")
  deployments = build_deployments(_SCHEMES.value, n, workdir)
  test = data.load("digits", "test", seed=None)
  if _ADDRESS.value:
    ray.init(address=_ADDRESS.value)
  else:
    ray.init(num_cpus=_NUM_CPUS.value, include_dashboard=False)
  services = {}
  segments = {key: [] for key in deployments}
  stats = {key: collections.Counter() for key in deployments}
  try:
    # Every service stays up for the whole run, and the schemes take turns in
    # rounds (in a rotating order), so slow phases of the machine hit them alike.
    for index, (key, served) in enumerate(deployments.items()):
      started = time.monotonic()
      services[key] = serving.CodedService.start(
          served, input_shape=test.image_shape, latency=latency_profile(n, _SEED.value + index),
          max_wait_s=_MAX_WAIT_S.value, timeout_s=_TIMEOUT_S.value,
          worker_options={"num_cpus": _WORKER_CPUS.value},
      )
      print(f"{served.name}: {n} workers ready in {time.monotonic() - started:.1f} s", flush=True)
    if _FREEZE_GC.value:
      gc.collect()
      gc.freeze()
    for key, service in services.items():
      serve_poisson(service, test.images, test.labels, _RATE.value, _WARMUP.value, _SEED.value)
    per_round = _NUM_QUERIES.value // rounds
    print(f"serving {per_round * rounds} queries per scheme at {_RATE.value:g}/s in {rounds} "
          "rounds", flush=True)
    keys = list(services)
    max_stall_s = _MAX_STALL_MS.value / 1e3
    for r in range(rounds):
      for key in keys[r % len(keys):] + keys[: r % len(keys)]:
        service = services[key]
        for attempt in range(_MAX_REDOS.value + 1):
          before = service.stats()
          run = serve_poisson(
              service, test.images, test.labels, _RATE.value, per_round,
              _SEED.value + 1 + r * len(keys) + keys.index(key),
          )
          if not max_stall_s or run["stall_s"] <= max_stall_s or attempt == _MAX_REDOS.value:
            break
          print(f"  {key}: client stalled {run['stall_s'] * 1e3:.0f} ms; segment served again",
                flush=True)
        run["redone"] = attempt
        segments[key].append(run)
        stats[key].update(_stats_delta(service.stats(), before))
      print(f"  round {r + 1}/{rounds} done", flush=True)
  finally:
    for service in services.values():
      service.shutdown()
    gc.unfreeze()
    ray.shutdown()
  rows = [
      summarize(deployments[key].name, _merge(segments[key]), serving.ServiceStats(**stats[key]))
      for key in deployments
  ]
  settings = dict(
      num_workers=n, rate=_RATE.value, num_queries=per_round * rounds, rounds=rounds,
      latency=_LATENCY.value, base_s=_BASE_S.value, exp_mean_s=_EXP_MEAN_S.value,
      alpha=_ALPHA.value, slow_workers=_SLOW.value, slow_extra_s=_SLOW_EXTRA_S.value,
      death_probability=_DEATH.value, max_wait_s=_MAX_WAIT_S.value, timeout_s=_TIMEOUT_S.value,
      warmup_queries=_WARMUP.value, seed=_SEED.value, address=_ADDRESS.value,
      freeze_gc=_FREEZE_GC.value, max_stall_ms=_MAX_STALL_MS.value, max_redos=_MAX_REDOS.value,
  )
  table = markdown(rows)
  print("\n" + table)
  (workdir / "results.md").write_text(f"settings: {json.dumps(settings)}\n\n{table}\n")
  (workdir / "results.json").write_text(json.dumps(dict(settings=settings, rows=rows), indent=2))
  print(f"\nwrote {workdir / 'results.md'} and results.json")


if __name__ == "__main__":
  app.run(main)
