r"""Tail latency of coded serving on Ray, in process and over HTTP: open-loop Poisson arrivals.

Run from the repository root (the first run also trains the digits models, about
1 minute on the project's 2-core CPU):

  python bench/bench_serving.py --workdir=/tmp/bench_serving

Every scheme gets its own N worker actors (``--num_workers``, default 6; all
services stay up, about 0.3 GB per actor here), the same open-loop Poisson
arrivals of single queries (``--rate`` per second, ParM's method: arrivals do
not wait for answers) and the same injected latency per worker call
(``--latency``: a shifted exponential or a Pareto heavy tail, optionally a
fixed set of slow workers and random deaths). K follows from N:

  uncoded       K = N         no redundancy: a query waits for its own worker
  replication   K = N / 2     r = 2 copies of each query
  Berrut        K = N - 2     S = 2 stragglers (ApproxIFER's N = K + S)
  LCC (d = 1)   K = N - 2     S = 2 (``--schemes`` must name it; inaccurate on a ReLU net)
  ParM          K = N - 1     one parity worker (a parity model trained for that K)
  learned       K = N - 2     the learned polynomial code (de = 1, dh = 2, R = 3);
                              ``--learned_workdir`` serves another trained code

Two clients: the in-process one (``CodedService.submit`` in this process) for
every scheme of ``--schemes``, and an HTTP one for those of
``--http_schemes``: the same scheme behind Ray Serve (``jaxcoded.serving.http``,
its own worker actors, one Serve app per scheme on 127.0.0.1), driven by an
asynchronous httpx client with the same arrivals (one query per POST, bodies
encoded beforehand). Every (scheme, client) pair takes turns with the others in
``--rounds`` rounds, so that slow phases of a shared machine hit them alike;
``--warmup_queries`` per pair are served first and discarded.

Latency runs from a query's scheduled arrival to its answer (or its explicit
error at the deadline), so batching waits, queueing and, over HTTP, the proxy
and JSON count. The table gives p50, p99 and p99.9 with bootstrap 95%
confidence intervals (a moving-block bootstrap over the queries in arrival
order, ``--bootstrap_block`` queries per block, since latencies of neighbouring
queries are correlated through the queues); p99.9 only where it rests on at
least 20 samples above it (20,000 queries per row), otherwise the gaps use
p99. The gap (tail - p50) of each scheme is divided by replication's of the
same client, with its interval, and the last columns say whose tail intervals
overlap. A second table gives what HTTP adds to p50 and p99 per scheme. Both
are printed with the machine, the load average and the versions, and written
to ``results.md`` and ``results.json`` in the workdir.

"client stall" is the longest time the client process went without CPU (a
watchdog thread's oversleep, or the submitting loop falling behind its
schedule); a segment with a stall over ``--max_stall_ms`` is served again (at
most ``--max_redos`` times, "redone"). ``--address`` runs the same on a real
Ray cluster (give the workers real resources with ``--worker_cpus``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import importlib.metadata
import json
import os
import pathlib
import platform
import sys
import threading
import time

import numpy as np
import ray
from absl import app, flags, logging

from configs import coder_digits, digits, parm_digits
from jaxcoded import data, deployment, schemes, serving, stragglers, training

SCHEMES = ("uncoded", "replication", "berrut", "lcc", "parm", "learned")
CLIENTS = ("in-process", "HTTP")
QUANTILES = (50.0, 99.0, 99.9)
MIN_TAIL_SAMPLES = 20  # samples above a quantile for it to be reported

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_serving", "Trained models and results.")
_SCHEMES = flags.DEFINE_list(
    "schemes", "uncoded,replication,berrut,parm,learned", f"Schemes, among {SCHEMES}."
)
_HTTP_SCHEMES = flags.DEFINE_list(
    "http_schemes", "replication,learned",
    "Schemes also served over HTTP (Ray Serve, their own worker actors); empty: none.",
)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 6, "N worker actors for every scheme (even).")
_RATE = flags.DEFINE_float("rate", 100.0, "Poisson arrival rate, queries per second.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 3000, "Measured queries per scheme and client.")
_LATENCY = flags.DEFINE_enum("latency", "pareto", ["exp", "pareto"], "Per-call latency model.")
_BASE_S = flags.DEFINE_float("base_s", 0.005, "Shift (exp) or scale (pareto) of a call, seconds.")
_EXP_MEAN_S = flags.DEFINE_float("exp_mean_s", 0.005, "exp: mean of the exponential part, s.")
_ALPHA = flags.DEFINE_float("alpha", 2.0, "pareto: tail index (smaller = heavier tail).")
_SLOW = flags.DEFINE_list("slow_workers", [], "Indices of permanently slow workers.")
_SLOW_EXTRA_S = flags.DEFINE_float("slow_extra_s", 0.05, "Their extra delay per call, seconds.")
_DEATH = flags.DEFINE_float("death_probability", 0.0, "Per call: the worker process dies.")
_MAX_WAIT_S = flags.DEFINE_float("max_wait_s", 0.02, "Longest wait for a group to fill, s.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 1.0, "A group's deadline after dispatch, s.")
_WARMUP = flags.DEFINE_integer("warmup_queries", 100, "Unmeasured queries per pair first.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "The pairs take turns, num_queries / rounds each.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples for the intervals.")
_BLOCK = flags.DEFINE_integer("bootstrap_block", 50, "Queries per bootstrap block.")
_MAX_STALL_MS = flags.DEFINE_float(
    "max_stall_ms", 50.0,
    "A segment during which the client process stalled longer (a busy shared machine) is served "
    "again; 0 keeps every segment.",
)
_MAX_REDOS = flags.DEFINE_integer("max_redos", 3, "Times a stalled segment is served again.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of arrivals, injected latencies and bootstrap.")
_ADDRESS = flags.DEFINE_string("address", None, "Ray cluster address (default: a local instance).")
_NUM_CPUS = flags.DEFINE_integer("num_cpus", 2, "CPUs of the local Ray instance.")
_WORKER_CPUS = flags.DEFINE_float("worker_cpus", 0.0, "CPUs reserved per worker actor.")
_HTTP_PORT = flags.DEFINE_integer("http_port", 0, "Serve's port on 127.0.0.1 (0: a free one).")
_LEARNED_WORKDIR = flags.DEFINE_string(
    "learned_workdir", None,
    "Serve the learned code trained in this workdir (training.coder; N must be --num_workers) "
    "instead of training configs/coder_digits.py.",
)
_FREEZE_GC = flags.DEFINE_bool(
    "freeze_gc", True,
    "gc.freeze() once the services are up (here and in the Serve replicas): the objects of the "
    "JAX, Flax and Ray imports then stay out of Python's full collections, which otherwise pause "
    "the master for about 0.2 s here.",
)


# ---------------------------------------------------------------------------
# The deployments at equal worker count.


def _base_config():
  config = digits.get_config()
  config.progress_bar = False
  return config


def _base(workdir: pathlib.Path):
  if not training.is_finished(workdir):
    training.train(_base_config(), workdir)
  model, _ = training.load_model(workdir)
  return training.parity.as_worker_fn(model)


def _parity_fn(workdir: pathlib.Path, base_workdir: pathlib.Path, num_queries: int):
  if not training.is_finished(workdir):
    config = parm_digits.get_config()
    config.num_queries = num_queries
    config.base, config.base_workdir = _base_config(), str(base_workdir)
    config.progress_bar = False
    training.train(config, workdir)
  model, config = training.parity.load(workdir)
  return training.parity.as_worker_fn(model, config.target)


def _learned_code(workdir: pathlib.Path, base_workdir: pathlib.Path, num_queries: int, s: int):
  if not training.is_finished(workdir):
    config = coder_digits.get_config()
    config.num_queries, config.num_stragglers = num_queries, s
    config.base, config.base_workdir = _base_config(), str(base_workdir)
    training.train(config, workdir)
  code, _ = training.coder.load(workdir)
  return code


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
      if _LEARNED_WORKDIR.value:
        code, _ = training.coder.load(_LEARNED_WORKDIR.value)
      else:
        code = _learned_code(workdir / f"learned_k{n - 2}", base_workdir, n - 2, 2)
      built[name] = deployment.Deployment.learned(
          f"learned K={code.num_queries} R={code.recovery_threshold}", code)
    else:
      raise app.UsageError(f"Unknown scheme {name!r}; use some of {SCHEMES}.")
    if built[name].num_workers != n:
      raise app.UsageError(
          f"{built[name].name} has N = {built[name].num_workers} workers, not --num_workers={n}."
      )
  return built


def latency_profile(num_workers: int, seed: int) -> tuple[serving.WorkerLatency, ...]:
  if _LATENCY.value == "exp":
    model = stragglers.ShiftedExponential(shift=_BASE_S.value, rate=1.0 / _EXP_MEAN_S.value)
  else:
    model = stragglers.Pareto(scale=_BASE_S.value, alpha=_ALPHA.value)
  return serving.latency_profile(
      num_workers, model, slow_workers=[int(i) for i in _SLOW.value],
      slow_extra_s=_SLOW_EXTRA_S.value, death_probability=_DEATH.value, seed=seed,
  )


# ---------------------------------------------------------------------------
# The two clients: open-loop Poisson arrivals of single queries.


class _Watchdog:
  """Measures how long the client process goes without CPU (oversleeping a 5 ms nap)."""

  def __init__(self):
    self.stall_s = 0.0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True)

  def _watch(self):
    while not self._stop.is_set():
      napped = time.monotonic()
      time.sleep(0.005)
      self.stall_s = max(self.stall_s, time.monotonic() - napped - 0.005)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc_info):
    self._stop.set()
    self._thread.join()


def _schedule(rate: float, num_queries: int, num_images: int, seed: int):
  rng = np.random.default_rng(seed)
  return np.cumsum(rng.exponential(1.0 / rate, num_queries)), rng.integers(0, num_images,
                                                                          num_queries)


def serve_poisson(service, images, labels, rate: float, num_queries: int, seed: int) -> dict:
  """Submits ``num_queries`` single queries in process at Poisson times; waits for all."""
  arrivals, picks = _schedule(rate, num_queries, len(images), seed)
  done_at = np.full(num_queries, np.nan)
  finished = threading.Semaphore(0)

  def on_done(i):
    def record(_):
      done_at[i] = time.monotonic()
      finished.release()
    return record

  futures = []
  lag = 0.0  # how far submission fell behind the schedule
  with _Watchdog() as watchdog:
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
  answered = np.array([f.exception() is None for f in futures])
  correct = np.array([
      f.result().label == labels[p] if ok else False for f, p, ok in zip(futures, picks, answered)
  ])
  return dict(
      latencies=done_at - (start + arrivals), answered=answered, correct=correct,
      elapsed_s=float(np.nanmax(done_at) - start), stall_s=max(lag, watchdog.stall_s),
      transport_errors=0,
  )


def serve_poisson_http(url: str, images, labels, rate: float, num_queries: int, seed: int) -> dict:
  """The same arrivals as POSTs to ``url``/predict, one query each, from an async client."""
  import httpx  # pylint: disable=g-import-not-at-top

  arrivals, picks = _schedule(rate, num_queries, len(images), seed)
  bodies = [json.dumps({"images": [images[p].ravel().tolist()]}).encode() for p in picks]
  headers = {"content-type": "application/json"}
  done_at = np.full(num_queries, np.nan)
  answered = np.zeros(num_queries, bool)
  correct = np.zeros(num_queries, bool)
  transport_errors = [0]
  lag = [0.0]

  async def one(client, i):
    try:
      reply = await client.post("/predict", content=bodies[i], headers=headers)
      done_at[i] = time.monotonic()
      (answer,) = reply.json()["answers"]
    except (httpx.HTTPError, ValueError, KeyError):
      done_at[i] = time.monotonic()
      transport_errors[0] += 1
      return
    if "label" in answer:
      answered[i] = True
      correct[i] = answer["label"] == labels[picks[i]]

  async def run():
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
      start = time.monotonic()
      tasks = []
      for i in range(num_queries):
        delay = start + arrivals[i] - time.monotonic()
        if delay > 0:
          await asyncio.sleep(delay)
        lag[0] = max(lag[0], -delay)
        tasks.append(asyncio.create_task(one(client, i)))
      await asyncio.gather(*tasks)
      return start

  with _Watchdog() as watchdog:
    start = asyncio.run(run())
  return dict(
      latencies=done_at - (start + arrivals), answered=answered, correct=correct,
      elapsed_s=float(np.nanmax(done_at) - start), stall_s=max(lag[0], watchdog.stall_s),
      transport_errors=transport_errors[0],
  )


# ---------------------------------------------------------------------------
# Statistics.


def bootstrap_quantiles(samples: np.ndarray, quantiles, num_resamples: int, block: int,
                        seed: int) -> np.ndarray:
  """(num_resamples, len(quantiles)) moving-block bootstrap replicates of the quantiles.

  Each resample concatenates blocks of ``block`` consecutive samples (in
  arrival order, wrapping around at the end: the circular block bootstrap,
  which gives every sample the same weight) from random starts, to the
  original length. Latencies of neighbouring queries are correlated through
  the queues, which an i.i.d. bootstrap would ignore (its intervals would be
  too narrow).
  """
  samples = np.asarray(samples, np.float64)
  n = len(samples)
  block = max(1, min(block, n))
  num_blocks = -(-n // block)
  rng = np.random.default_rng(seed)
  out = np.empty((num_resamples, len(quantiles)))
  offsets = np.arange(block)
  for first in range(0, num_resamples, 64):
    count = min(64, num_resamples - first)
    starts = rng.integers(0, n, (count, num_blocks))
    index = ((starts[:, :, None] + offsets) % n).reshape(count, -1)[:, :n]
    out[first : first + count] = np.percentile(samples[index], quantiles, axis=1).T
  return out


def _interval(replicates: np.ndarray) -> tuple[float, float]:
  low, high = np.percentile(replicates, [2.5, 97.5])
  return float(low), float(high)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
  return a[0] <= b[1] and b[0] <= a[1]


def tail_quantile(num_samples: int) -> float:
  """99.9 when at least MIN_TAIL_SAMPLES samples lie above it, else 99."""
  return 99.9 if num_samples * (1 - 0.999) >= MIN_TAIL_SAMPLES - 1e-9 else 99.0


def summarize(name: str, client: str, run: dict, stats: dict, boot: np.ndarray) -> dict:
  latencies = run["latencies"]
  values = np.percentile(latencies, QUANTILES)
  answered = run["answered"]
  row = dict(
      scheme=name, client=client, queries=len(latencies), answered=float(answered.mean()),
      accuracy=float(run["correct"].sum() / max(1, answered.sum())),
      mean_ms=1e3 * float(np.mean(latencies)),
      throughput=float(answered.sum() / run["elapsed_s"]),
      worker_failures=stats.get("worker_failures", 0),
      worker_restarts=stats.get("worker_restarts", 0), groups=stats.get("groups", 0),
      client_stall_ms=1e3 * run["stall_s"], redone_segments=run["redone"],
      transport_errors=run["transport_errors"],
  )
  for q, value, column in zip(QUANTILES, values, boot.T):
    key = f"p{q:g}".replace(".", "")
    row[f"{key}_ms"] = 1e3 * float(value)
    row[f"{key}_ci_ms"] = [1e3 * v for v in _interval(column)]
  return row


def analyse(rows: list[dict], boots: list[np.ndarray]) -> dict:
  """Gaps, gap ratios to replication's (same client), overlaps, and what HTTP adds."""
  tail = tail_quantile(min(r["queries"] for r in rows))
  t = QUANTILES.index(tail)
  tail_key = f"p{tail:g}".replace(".", "")
  for row, boot in zip(rows, boots):
    row["tail"] = f"p{tail:g}"
    row["gap_ms"] = row[f"{tail_key}_ms"] - row["p50_ms"]
    row["_gap_boot"] = 1e3 * (boot[:, t] - boot[:, 0])
  for row in rows:
    reference = next((r for r in rows if r["client"] == row["client"]
                      and r["scheme"].startswith("replication")), None)
    if reference is None:
      row["gap_ratio"], row["gap_ratio_ci"] = None, None
    else:
      row["gap_ratio"] = row["gap_ms"] / reference["gap_ms"]
      row["gap_ratio_ci"] = list(_interval(row["_gap_boot"] / reference["_gap_boot"]))
    row["tail_ci_overlaps"] = [
        other["scheme"] for other in rows if other is not row
        and other["client"] == row["client"]
        and _overlap(row[f"{tail_key}_ci_ms"], other[f"{tail_key}_ci_ms"])
    ]
  added = []
  for row, boot in zip(rows, boots):
    if row["client"] != "HTTP":
      continue
    for base, base_boot in zip(rows, boots):
      if base["client"] == "in-process" and base["scheme"] == row["scheme"]:
        entry = dict(scheme=row["scheme"])
        for q, key in ((0, "p50"), (1, "p99")):
          entry[f"{key}_in_process_ms"] = base[f"{key}_ms"]
          entry[f"{key}_http_ms"] = row[f"{key}_ms"]
          entry[f"{key}_added_ms"] = row[f"{key}_ms"] - base[f"{key}_ms"]
          entry[f"{key}_added_ci_ms"] = [1e3 * v for v in _interval(boot[:, q] - base_boot[:, q])]
        added.append(entry)
  for row in rows:
    del row["_gap_boot"]
  return dict(tail=f"p{tail:g}", http_added=added)


def markdown_table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def _ci(value: float, interval) -> str:
  return f"{value:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def markdown(rows: list[dict], analysis: dict) -> str:
  tail = analysis["tail"]
  table = []
  for r in rows:
    p999 = (_ci(r["p999_ms"], r["p999_ci_ms"]) if tail == "p99.9"
            else f"— ({r['queries']} < {int(MIN_TAIL_SAMPLES / 0.001)})")
    ratio = ("-" if r["gap_ratio"] is None else
             f"{r['gap_ratio']:.2f} [{r['gap_ratio_ci'][0]:.2f}, {r['gap_ratio_ci'][1]:.2f}]")
    overlaps = ", ".join(name.split(" ")[0] for name in r["tail_ci_overlaps"]) or "none"
    table.append([
        r["scheme"], r["client"], r["queries"], _ci(r["p50_ms"], r["p50_ci_ms"]),
        _ci(r["p99_ms"], r["p99_ci_ms"]), p999, f"{r['gap_ms']:.1f}", ratio, overlaps,
        f"{r['throughput']:.1f}", f"{r['answered']:.4f}", f"{r['accuracy']:.3f}", r["groups"],
        f"{r['worker_failures']}/{r['worker_restarts']}", f"{r['client_stall_ms']:.0f}",
        r["redone_segments"],
    ])
  text = markdown_table(
      ["scheme", "client", "queries", "p50 ms [95% CI]", "p99 ms [95% CI]", "p99.9 ms [95% CI]",
       f"gap {tail}-p50 ms", "gap / replication's [95% CI]", f"{tail} CI overlaps",
       "answers/s", "answered", "accuracy", "groups", "failures/restarts", "client stall ms",
       "redone"],
      table,
  )
  if analysis["http_added"]:
    added = [[
        a["scheme"], f"{a['p50_in_process_ms']:.1f}", f"{a['p50_http_ms']:.1f}",
        _ci(a["p50_added_ms"], a["p50_added_ci_ms"]), f"{a['p99_in_process_ms']:.1f}",
        f"{a['p99_http_ms']:.1f}", _ci(a["p99_added_ms"], a["p99_added_ci_ms"]),
    ] for a in analysis["http_added"]]
    text += "\n\nWhat HTTP adds (Ray Serve proxy and replica, JSON, the async client):\n\n"
    text += markdown_table(
        ["scheme", "p50 in-process ms", "p50 HTTP ms", "p50 added ms [95% CI]",
         "p99 in-process ms", "p99 HTTP ms", "p99 added ms [95% CI]"], added)
  return text


def environment() -> dict:
  """The machine, its load and the versions, for the table's header."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  except OSError:
    pass
  try:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  except (ValueError, OSError, AttributeError):
    memory_gib = float("nan")
  versions = {}
  for package in ("jaxcoded", "jax", "jaxlib", "flax", "numpy", "ray", "httpx"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  versions["python"] = platform.python_version()
  return dict(cpu=cpu, cores=os.cpu_count(), memory_gib=round(memory_gib, 1),
              os=platform.platform(), versions=versions)


def _header(env: dict, loads: list[float], command: str, settings: dict) -> str:
  versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
  return "\n".join([
      f"Command: `{command}`",
      f"Machine: {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB, {env['os']}",
      f"Load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}",
      f"Versions: {versions}",
      f"Settings: {json.dumps(settings)}",
  ])


# ---------------------------------------------------------------------------


def _stats_delta(after, before) -> dict[str, int]:
  if isinstance(after, serving.ServiceStats):
    after, before = dataclasses.asdict(after), dataclasses.asdict(before)
  return {key: after[key] - before[key] for key in serving.ServiceStats.__dataclass_fields__}


def _merge(segments: list[dict]) -> dict:
  return dict(
      latencies=np.concatenate([r["latencies"] for r in segments]),
      answered=np.concatenate([r["answered"] for r in segments]),
      correct=np.concatenate([r["correct"] for r in segments]),
      elapsed_s=sum(r["elapsed_s"] for r in segments),
      stall_s=max(r["stall_s"] for r in segments),
      redone=sum(r["redone"] for r in segments),
      transport_errors=sum(r["transport_errors"] for r in segments),
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
  http_keys = [name for name in _HTTP_SCHEMES.value if name]
  unknown = set(http_keys) - set(SCHEMES)
  if unknown:
    raise app.UsageError(f"--http_schemes: unknown {sorted(unknown)}; use some of {SCHEMES}.")
  deployments = build_deployments(list(dict.fromkeys(_SCHEMES.value + http_keys)), n, workdir)
  pairs = [(key, "in-process") for key in _SCHEMES.value] + [(key, "HTTP") for key in http_keys]
  test = data.load("digits", "test", seed=None)
  env = environment()
  loads = [os.getloadavg()[0]]
  if _ADDRESS.value:
    ray.init(address=_ADDRESS.value)
  else:
    ray.init(num_cpus=_NUM_CPUS.value, include_dashboard=False)
  services, server = {}, None
  segments = {pair: [] for pair in pairs}
  stats = {pair: collections.Counter() for pair in pairs}
  seeds = {key: _SEED.value + index for index, key in enumerate(deployments)}
  options = dict(max_wait_s=_MAX_WAIT_S.value, timeout_s=_TIMEOUT_S.value,
                 worker_options={"num_cpus": _WORKER_CPUS.value})
  try:
    # Every service stays up for the whole run; a scheme's HTTP copy has the
    # same injected latencies (same seed) on its own worker actors.
    for key in _SCHEMES.value:
      started = time.monotonic()
      services[key] = serving.CodedService.start(
          deployments[key], input_shape=test.image_shape, latency=latency_profile(n, seeds[key]),
          **options,
      )
      print(f"{deployments[key].name}: {n} workers ready in {time.monotonic() - started:.1f} s",
            flush=True)
    if http_keys:
      from jaxcoded.serving import http  # pylint: disable=g-import-not-at-top

      started = time.monotonic()
      server = http.start(
          {key: http.build_app(deployments[key], input_shape=test.image_shape,
                               latency=latency_profile(n, seeds[key]), freeze_gc=_FREEZE_GC.value,
                               **options) for key in http_keys},
          port=_HTTP_PORT.value or http.free_port(),
      )
      print(f"HTTP ({', '.join(server.urls.values())}): ready in "
            f"{time.monotonic() - started:.1f} s", flush=True)
    if _FREEZE_GC.value:
      gc.collect()
      gc.freeze()

    def serve(pair, num_queries, seed):
      key, client = pair
      if client == "HTTP":
        return serve_poisson_http(server.urls[key], test.images, test.labels, _RATE.value,
                                  num_queries, seed)
      return serve_poisson(services[key], test.images, test.labels, _RATE.value, num_queries,
                           seed)

    def counters(pair):
      key, client = pair
      return server.stats(key) if client == "HTTP" else services[key].stats()

    for pair in pairs:
      serve(pair, _WARMUP.value, _SEED.value)
    per_round = _NUM_QUERIES.value // rounds
    print(f"serving {per_round * rounds} queries per scheme and client at {_RATE.value:g}/s in "
          f"{rounds} rounds", flush=True)
    max_stall_s = _MAX_STALL_MS.value / 1e3
    for r in range(rounds):
      for pair in pairs[r % len(pairs):] + pairs[: r % len(pairs)]:
        for attempt in range(_MAX_REDOS.value + 1):
          before = counters(pair)
          # The same arrivals for a scheme's in-process and HTTP segments.
          run = serve(pair, per_round, _SEED.value + 1 + r * len(deployments)
                      + list(deployments).index(pair[0]))
          if not max_stall_s or run["stall_s"] <= max_stall_s or attempt == _MAX_REDOS.value:
            break
          print(f"  {pair[0]} ({pair[1]}): client stalled {run['stall_s'] * 1e3:.0f} ms; "
                "segment served again", flush=True)
        run["redone"] = attempt
        segments[pair].append(run)
        stats[pair].update(_stats_delta(counters(pair), before))
      loads.append(os.getloadavg()[0])
      print(f"  round {r + 1}/{rounds} done (load average {loads[-1]:.1f})", flush=True)
  finally:
    for service in services.values():
      service.shutdown()
    if server is not None:
      server.shutdown()
    gc.unfreeze()
    ray.shutdown()
  rows, boots, raw = [], [], {}
  for index, pair in enumerate(pairs):
    merged = _merge(segments[pair])
    raw[f"{pair[0]}_{pair[1].replace('-', '_')}"] = merged["latencies"]
    boot = bootstrap_quantiles(merged["latencies"], QUANTILES, _BOOTSTRAP.value, _BLOCK.value,
                               _SEED.value + index)
    rows.append(summarize(deployments[pair[0]].name, pair[1], merged, stats[pair], boot))
    boots.append(boot)
  analysis = analyse(rows, boots)
  settings = dict(
      num_workers=n, rate=_RATE.value, num_queries=per_round * rounds, rounds=rounds,
      latency=_LATENCY.value, base_s=_BASE_S.value, exp_mean_s=_EXP_MEAN_S.value,
      alpha=_ALPHA.value, slow_workers=_SLOW.value, slow_extra_s=_SLOW_EXTRA_S.value,
      death_probability=_DEATH.value, max_wait_s=_MAX_WAIT_S.value, timeout_s=_TIMEOUT_S.value,
      warmup_queries=_WARMUP.value, seed=_SEED.value, address=_ADDRESS.value,
      freeze_gc=_FREEZE_GC.value, max_stall_ms=_MAX_STALL_MS.value, max_redos=_MAX_REDOS.value,
      bootstrap=_BOOTSTRAP.value, bootstrap_block=_BLOCK.value, http_schemes=http_keys,
      learned_workdir=_LEARNED_WORKDIR.value,
  )
  command = "python " + " ".join(sys.argv)
  report = _header(env, loads, command, settings) + "\n\n" + markdown(rows, analysis)
  print("\n" + report)
  (workdir / "results.md").write_text(report + "\n")
  (workdir / "results.json").write_text(json.dumps(
      dict(settings=settings, environment=env, load_average=loads, command=command, rows=rows,
           **analysis), indent=2))
  np.savez_compressed(workdir / "latencies.npz", **raw)  # seconds, in arrival order
  print(f"\nwrote {workdir / 'results.md'}, results.json and latencies.npz")


if __name__ == "__main__":
  app.run(main)
