r"""Tail latency of coded serving on Ray: open-loop Poisson arrivals, bootstrap intervals.

Run from the repository root:

  python bench/bench_serving.py --quick                        # 1-2 minutes, digits
  python bench/bench_serving.py --num_queries=20000 --rate=100  # p99.9 on >= 20 samples
  python bench/bench_serving.py --dataset=fashion_mnist \
      --base_workdir=/work/runs/base \
      --parm_workdir=/work/runs/equal_k8/trained/ParM \
      --learned_workdir=/work/runs/equal_k8/trained/learned_polynomial

Two model sets (``--dataset``):

* ``digits`` (default): the 8x8 digits models it trains itself into
  ``--workdir`` (about a minute the first time). Every scheme gets the same N
  worker actors (``--num_workers``, default 6) and K follows from N:
  uncoded K = N, replication K = N / 2 (r = 2), Berrut and LCC K = N - 2
  (S = 2), ParM K = N - 1 (one parity worker), the learned code of
  configs/coder_digits.py K = N - 2 (R = 3).
* ``fashion_mnist``: LeNet-5 workers at K = 8, as in the equal-resource work
  (configs/eval_fmnist_equal.py): every coded scheme at N = K + S
  (``--num_stragglers``, default 2): uncoded N = 8, Berrut N = 10, ParM N = 9
  (its parity model, configs/parm_fmnist.py:k8), the learned polynomial code of
  configs/coder_fmnist_k8_equal.py (R = 7, redeployed at N = K + S with new
  worker points), and replication (N = 16, ``--schemes`` must name it).
  ``--base_workdir``, ``--parm_workdir`` and ``--learned_workdir`` name trained
  runs; missing ones are trained into ``--workdir`` first (the learned code:
  about 20 minutes here).

Either way each scheme is a config entry of the comparison configs' form
(configs/eval_digits.py: its kind and options) at that set's K and S, built
through the scheme builders (jaxcoded.comparison.builders) with the comparison's trained parts, as the
harness builds it (``build_deployments``).

Every scheme's service is up for the whole run (about 0.3 GB per worker
actor), with the same open-loop Poisson arrivals of single queries at
``--rate`` per second (ParM's method: arrivals do not wait for answers) and the
same injected latency per worker call (``--latency``: a shifted exponential or
a Pareto heavy tail, optionally slow workers and random deaths). Each (scheme,
client) pair first serves ``--warmup_queries``, discarded; then the pairs take
turns in ``--rounds`` rounds in a rotating order, so that slow phases of a
shared machine hit them alike. ``--http_schemes`` also serves schemes behind
Ray Serve (one app per scheme, its own worker actors) to an asynchronous httpx
client with the same arrivals.

Latency runs from a query's scheduled arrival to its answer (or its explicit
error at the deadline). Statistics (``jaxcoded.serving.tails``): p50, p99 and
p99.9 with bootstrap 95% intervals, percentile method, ``--bootstrap``
resamples of a circular block bootstrap over the queries in arrival order
(``--bootstrap_block`` queries per block; 1 is the i.i.d. bootstrap), seeded by
``--seed``. The tail quantile of the gaps is p99.9 when every row has at least
20 samples above it (20,000 queries per row), else p99; the table says how many
samples the tail of each row rests on. For each scheme: its tail and its gap
(tail - p50) divided by those of ``--reference`` (default uncoded) for the same
client, with intervals (the two rows resampled independently), whether its
tail interval is separated from the reference's, and which other schemes' tail
intervals overlap its own. The environment table (machine, load average,
versions) is printed first, then the settings and the tables, also written to
``results.md``, ``results.json`` and ``latencies.npz`` in the workdir.

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
import json
import os
import pathlib
import sys
import threading
import time

import ml_collections
import numpy as np
import ray
from absl import app, flags, logging

try:
  import environment  # run as ``python bench/bench_serving.py``: bench/ is on sys.path
except ImportError:  # imported from the repository root
  from bench import environment
from configs import coder_digits, coder_fmnist_k8_equal, digits, fashion_mnist_lenet, parm_digits, parm_fmnist
from jaxcoded import data, deployment, serving, stragglers, training
from jaxcoded.comparison import builders
from jaxcoded.comparison import trained as trained_lib
from jaxcoded.serving import tails

# --schemes value -> (registered kind, its fixed options, its name in the tables: formatted
# with the deployment's K, N, R and S). K and S come from the model set (--dataset).
_ENTRIES = {
    "uncoded": ("uncoded", {}, "uncoded K={K}"),
    "replication": ("replication", dict(copies=2), "replication K={K} r=2"),
    "berrut": ("berrut", {}, "Berrut K={K} S={S}"),
    "lcc": ("lcc", dict(degree=1), "LCC d=1 K={K} S={S}"),
    "parm": ("parm", {}, "ParM K={K} r=1"),
    "learned": ("learned", {}, "learned K={K} R={R}"),
}
# The choices: the registered kinds (jaxcoded.comparison.builders) this benchmark plans.
SCHEMES = tuple(kind for kind in builders.kinds() if kind in _ENTRIES)
CLIENTS = ("in-process", "HTTP")
QUANTILES = (50.0, 99.0, 99.9)
FMNIST_K = 8  # the equal-resource work's K (configs/coder_fmnist_k8_equal.py)

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_serving", "Trained models and results.")
_DATASET = flags.DEFINE_enum(
    "dataset", "digits", ["digits", "fashion_mnist"],
    "digits: the small models trained here, N workers for every scheme; fashion_mnist: LeNet-5 "
    "workers, K = 8, N = K + S per scheme (the equal-resource work).",
)
_SCHEMES = flags.DEFINE_list(
    "schemes", None,
    f"Schemes, among {SCHEMES} (default: uncoded,replication,berrut,parm,learned for digits; "
    "uncoded,berrut,parm,learned for fashion_mnist, where replication takes 2K = 16 workers).",
)
_HTTP_SCHEMES = flags.DEFINE_list(
    "http_schemes", [],
    "Schemes also served over HTTP (Ray Serve, their own worker actors); empty: none.",
)
_REFERENCE = flags.DEFINE_string(
    "reference", "uncoded", "The scheme whose tail and gap the others are divided by.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 6, "digits: N worker actors for every scheme.")
_NUM_STRAGGLERS = flags.DEFINE_integer(
    "num_stragglers", 2, "fashion_mnist: S; Berrut and the learned code get N = K + S workers.")
_BASE_WORKDIR = flags.DEFINE_string(
    "base_workdir", None, "fashion_mnist: the trained LeNet-5 (default <workdir>/base_fmnist).")
_PARM_WORKDIR = flags.DEFINE_string(
    "parm_workdir", None,
    "fashion_mnist: ParM's trained parity model for K = 8 (default <workdir>/parm_fmnist_k8).",
)
_LEARNED_WORKDIR = flags.DEFINE_string(
    "learned_workdir", None,
    "The learned code to serve (a training.coder workdir). digits: N must be --num_workers "
    "(default: configs/coder_digits.py, trained into <workdir>); fashion_mnist: a learned "
    "polynomial code for K = 8, redeployed at N = K + S (default: configs/"
    "coder_fmnist_k8_equal.py, trained into <workdir>/learned_fmnist_k8).",
)
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
_WARMUP = flags.DEFINE_integer("warmup_queries", 200, "Unmeasured queries per pair first.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "The pairs take turns, num_queries / rounds each.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 2000, "Bootstrap resamples for the intervals.")
_BLOCK = flags.DEFINE_integer(
    "bootstrap_block", 50, "Queries per block of the circular block bootstrap (1: i.i.d.).")
_QUICK = flags.DEFINE_bool(
    "quick", False,
    "A 1-2 minute smoke run: 1000 queries per scheme in 4 rounds, 50 warm-up queries, 500 "
    "resamples (flags given explicitly win). Its tail is p99 on 10 samples: too few to rank "
    "schemes by.",
)
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
_FREEZE_GC = flags.DEFINE_bool(
    "freeze_gc", True,
    "gc.freeze() once the services are up (here and in the Serve replicas): the objects of the "
    "JAX, Flax and Ray imports then stay out of Python's full collections, which otherwise pause "
    "the master for about 0.2 s here.",
)

_QUICK_SETTINGS = dict(num_queries=1000, rounds=4, warmup_queries=50, bootstrap=500)


def _setting(name: str):
  """A flag's value, or the --quick default where --quick is set and the flag was not given."""
  flag = flags.FLAGS[name]
  if _QUICK.value and not flag.present and name in _QUICK_SETTINGS:
    return _QUICK_SETTINGS[name]
  return flag.value


def _schemes() -> list[str]:
  if _SCHEMES.value is not None:
    return [name for name in _SCHEMES.value if name]
  if _DATASET.value == "fashion_mnist":
    return ["uncoded", "berrut", "parm", "learned"]
  return ["uncoded", "replication", "berrut", "parm", "learned"]


# ---------------------------------------------------------------------------
# The deployments: one builder over scheme entries of the comparison configs'
# form (configs/eval_digits.py), built through the scheme builders (jaxcoded.comparison.builders) as the
# harness builds them. The two model sets differ only in data: their base
# classifier, and which K and S each scheme is built at.


@dataclasses.dataclass(frozen=True)
class Planned:
  """One scheme to serve: its config entry, and the K and S it is built at.

  Attributes:
    name: its name in the tables, formatted with the built deployment's K, N
      and R, and S = ``num_stragglers``.
    entry: a scheme entry as in the comparison configs: ``kind`` and its
      options; ``config`` (training config) and ``workdir`` for a kind with a
      trained part (``comparison.trained.TrainedParts``).
    num_queries: K.
    num_stragglers: S. Kinds that are built anew at each S (Berrut, LCC, a
      learned code with ``deploy_at = "k_plus_s"``) are built for it; the
      others keep their own N.
    train: train a part whose run in ``entry.workdir`` is not finished; False
      serves the run there as it is (a workdir named on the command line).
  """

  name: str
  entry: ml_collections.ConfigDict
  num_queries: int
  num_stragglers: int = 0
  train: bool = True


@dataclasses.dataclass(frozen=True)
class ModelSet:
  """What ``--dataset`` serves.

  Attributes:
    config: its base classifier, as a comparison config has it: ``dataset``,
      ``base`` (the training config) and ``base_workdir``
      (``comparison.trained.base_classifier``).
    schemes: scheme name (a ``--schemes`` value) -> what to serve.
    num_workers: the N every deployment must have (digits); None: each its own.
  """

  config: ml_collections.ConfigDict
  schemes: dict[str, Planned]
  num_workers: int | None = None


def _planned(key: str, num_queries: int, num_stragglers: int = 0, *, name_suffix: str = "",
             train: bool = True, **options) -> Planned:
  """``--schemes`` value ``key`` as an entry of its kind, with its fixed and given options."""
  kind, fixed, name = _ENTRIES[key]
  entry = ml_collections.ConfigDict(dict(kind=kind, **fixed, **options))
  return Planned(name + name_suffix, entry, num_queries, num_stragglers, train)


def _base_fields(dataset: str, base: ml_collections.ConfigDict, base_workdir: pathlib.Path):
  base.progress_bar = False
  return ml_collections.ConfigDict(dict(dataset=dataset, base=base, base_workdir=str(base_workdir)))


def digits_models(names, num_workers: int, workdir: pathlib.Path) -> ModelSet:
  """digits: every scheme at N = ``num_workers`` workers, K following from N."""
  n = num_workers
  if n < 4 or n % 2:
    raise app.UsageError(f"--num_workers must be even and >= 4, got {n}.")
  learned_workdir = _LEARNED_WORKDIR.value or str(workdir / f"learned_k{n - 2}")
  learned_k = n - 2
  if "learned" in names and _LEARNED_WORKDIR.value:  # served at its own K (and N)
    learned_k = training.read_config(learned_workdir).get("num_queries")
  coder = coder_digits.get_config()
  coder.num_stragglers = 2
  schemes = dict(
      uncoded=_planned("uncoded", n),
      replication=_planned("replication", n // 2, 1),
      berrut=_planned("berrut", n - 2, 2),
      lcc=_planned("lcc", n - 2, 2),
      parm=_planned("parm", n - 1, 1, config=parm_digits.get_config(),
                    workdir=str(workdir / f"parm_k{n - 1}")),
      learned=_planned("learned", learned_k, 2, config=coder, workdir=learned_workdir,
                       train=not _LEARNED_WORKDIR.value),
  )
  config = _base_fields("digits", digits.get_config(), workdir / "base")
  return ModelSet(config, schemes, num_workers=n)


def fmnist_models(names, num_stragglers: int, workdir: pathlib.Path) -> ModelSet:
  """fashion_mnist: every scheme at K = 8; the coded ones at N = K + S (replication: 2K)."""
  del names  # every entry is cheap to describe
  k, s = FMNIST_K, num_stragglers
  if s < 1:
    raise app.UsageError(f"--num_stragglers must be >= 1, got {s}.")
  parm_workdir = _PARM_WORKDIR.value or str(workdir / f"parm_fmnist_k{k}")
  learned_workdir = _LEARNED_WORKDIR.value or str(workdir / f"learned_fmnist_k{k}")
  with_n = dict(name_suffix=" N={N}")
  schemes = dict(
      uncoded=_planned("uncoded", k, **with_n),
      replication=_planned("replication", k, 1, **with_n),
      berrut=_planned("berrut", k, s, **with_n),
      lcc=_planned("lcc", k, s, **with_n),
      parm=_planned("parm", k, 1, config=parm_fmnist.get_config(f"k{k}"), workdir=parm_workdir,
                    train=not _PARM_WORKDIR.value, **with_n),
      # Redeployed at N = K + S with new worker points, as the equal-resource harness does.
      learned=_planned("learned", k, s, config=coder_fmnist_k8_equal.get_config(),
                       workdir=learned_workdir, deploy_at="k_plus_s",
                       train=not _LEARNED_WORKDIR.value, **with_n),
  )
  base_workdir = pathlib.Path(_BASE_WORKDIR.value or workdir / "base_fmnist")
  config = _base_fields("fashion_mnist", fashion_mnist_lenet.get_config(), base_workdir)
  return ModelSet(config, schemes)


def _check_scheme(name: str) -> None:
  if name not in builders.kinds():
    raise app.UsageError(f"Unknown scheme {name!r}; the registered kinds are {builders.kinds()}.")
  if name not in SCHEMES:
    raise app.UsageError(f"Scheme kind {name!r} is registered, but this benchmark plans no "
                         f"deployment of it; use some of {SCHEMES}.")


def _log(line: str) -> None:
  print(line, flush=True)


def build_deployments(
    models: ModelSet, names, workdir: pathlib.Path
) -> tuple[dict[str, deployment.Deployment], dict[str, str]]:
  """name -> Deployment for each of ``names``; and notes on the trained parts used.

  Each entry is checked (``builders.Kind.check``) before anything trains, then
  built by its registered kind (``Kind.build``) around the base classifier,
  with its trained part (ParM's parity model, a learned code) trained into or
  reloaded from ``entry.workdir`` by ``comparison.trained.TrainedParts``.

  Raises:
    app.UsageError: an unknown name, an entry that cannot be built at its K
      and S, a trained part for another K, or a deployment whose N is not
      ``models.num_workers``.
  """
  for name in names:
    _check_scheme(name)
  chosen = {name: models.schemes[name] for name in names}
  for name, planned in chosen.items():
    try:
      builders.get(planned.entry.kind).check(
          planned.entry, planned.num_queries, [planned.num_stragglers])
    except ValueError as error:
      raise app.UsageError(f"{name}: {error}") from error
  model, base_config, base_workdir = trained_lib.base_classifier(models.config, workdir, _log)
  base_task = deployment.WorkerTask(*training.classifier.as_worker_fn(model))
  parts = {k: trained_lib.TrainedParts(workdir, k, base_config, base_workdir, _log)
           for k in {planned.num_queries for planned in chosen.values()}}
  query_range = data.query_spec(models.config.dataset)
  built, notes = {}, {"base": str(base_workdir)}
  for name, planned in chosen.items():
    entry, k, s = planned.entry, planned.num_queries, planned.num_stragglers
    kind = builders.get(entry.kind)
    try:
      part = parts[k].get(name, entry, train=planned.train)
      made = kind.build(entry, s if kind.sized_for(entry) else 0,
                        builders.BuildContext(k, base_task, trained=part))
    except ValueError as error:
      raise app.UsageError(f"{name}: {error}") from error
    if made is None:
      threshold = getattr(part, "recovery_threshold", None)
      raise app.UsageError(
          f"{name}: a {entry.kind} deployment cannot be built at K = {k}, S = {s}"
          + (f" (it needs N = K + S >= R = {threshold})." if threshold else "."))
    scheme, tasks, roles = made
    sizes = scheme.sizes
    label = planned.name.format(K=sizes.num_queries, N=sizes.num_workers,
                                R=sizes.recovery_threshold, S=s)
    built[name] = deployment.Deployment(label, scheme, tasks, roles, query_range=query_range)
    if models.num_workers is not None and sizes.num_workers != models.num_workers:
      raise app.UsageError(
          f"{label} has N = {sizes.num_workers} workers, not --num_workers={models.num_workers}.")
    if kind.trains:
      notes[name] = _part_note(parts[k].workdir_of(name, entry))
  return built, notes


def _part_note(workdir: pathlib.Path) -> str:
  steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
  num_steps = training.read_config(workdir).get("num_steps")
  return (f"{workdir} (finished: {training.is_finished(workdir)}, step "
          f"{max(steps) if steps else None} of {num_steps})")


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
  import httpx

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
# Statistics (jaxcoded.serving.tails).


def _key(q: float) -> str:
  return f"p{q:g}".replace(".", "")


def summarize(key: str, name: str, client: str, run: dict, stats: dict, workers: int,
              boot: np.ndarray) -> dict:
  """One row: counters, and each quantile with its interval and the samples above it."""
  latencies = run["latencies"]
  values = np.percentile(latencies, QUANTILES)
  intervals = tails.percentile_interval(boot)
  answered = run["answered"]
  row = dict(
      key=key, scheme=name, client=client, workers=workers, queries=len(latencies),
      answered=float(answered.mean()),
      accuracy=float(run["correct"].sum() / max(1, answered.sum())),
      mean_ms=1e3 * float(np.mean(latencies)),
      throughput=float(answered.sum() / run["elapsed_s"]),
      worker_failures=stats.get("worker_failures", 0),
      worker_restarts=stats.get("worker_restarts", 0), groups=stats.get("groups", 0),
      client_stall_ms=1e3 * run["stall_s"], redone_segments=run["redone"],
      transport_errors=run["transport_errors"],
  )
  for j, q in enumerate(QUANTILES):
    row[f"{_key(q)}_ms"] = 1e3 * float(values[j])
    row[f"{_key(q)}_ci_ms"] = [1e3 * float(v) for v in intervals[:, j]]
    row[f"{_key(q)}_above"] = tails.samples_above(latencies, q)
  return row


def analyse(rows: list[dict], boots: list[np.ndarray], reference: str) -> dict:
  """The tail quantile, tail and gap ratios to the reference (same client), overlaps, HTTP."""
  tail = tails.tail_quantile(min(r["queries"] for r in rows), candidates=(99.9, 99.0))
  t, key = QUANTILES.index(tail), _key(tail)
  for row, boot in zip(rows, boots):
    row["tail"] = f"p{tail:g}"
    row["tail_rests_on"] = row[f"{key}_above"]
    row["gap_ms"] = row[f"{key}_ms"] - row["p50_ms"]
    row["gap_ci_ms"] = [1e3 * float(v) for v in
                        tails.percentile_interval(tails.gap_replicates(boot, t))]
  for row, boot in zip(rows, boots):
    found = [(r, b) for r, b in zip(rows, boots)
             if r["client"] == row["client"] and r["key"] == reference]
    row["tail_ratio"] = row["tail_ratio_ci"] = row["gap_ratio"] = row["gap_ratio_ci"] = None
    row["vs_reference"] = None
    if found and found[0][0] is not row:
      ref, ref_boot = found[0]
      row["tail_ratio"] = row[f"{key}_ms"] / ref[f"{key}_ms"]
      row["tail_ratio_ci"] = tails.percentile_interval(
          tails.ratio_replicates(boot[:, t], ref_boot[:, t])).tolist()
      row["gap_ratio"] = row["gap_ms"] / ref["gap_ms"]
      row["gap_ratio_ci"] = tails.percentile_interval(tails.ratio_replicates(
          tails.gap_replicates(boot, t), tails.gap_replicates(ref_boot, t))).tolist()
      row["vs_reference"] = tails.compare(row[f"{key}_ci_ms"], ref[f"{key}_ci_ms"])
    row["tail_ci_overlaps"] = [
        other["scheme"] for other in rows if other is not row
        and other["client"] == row["client"]
        and tails.overlap(row[f"{key}_ci_ms"], other[f"{key}_ci_ms"])
    ]
  added = []
  for row, boot in zip(rows, boots):
    if row["client"] != "HTTP":
      continue
    for base, base_boot in zip(rows, boots):
      if base["client"] == "in-process" and base["key"] == row["key"]:
        entry = dict(scheme=row["scheme"])
        for q, name in ((0, "p50"), (1, "p99")):
          entry[f"{name}_in_process_ms"] = base[f"{name}_ms"]
          entry[f"{name}_http_ms"] = row[f"{name}_ms"]
          entry[f"{name}_added_ms"] = row[f"{name}_ms"] - base[f"{name}_ms"]
          entry[f"{name}_added_ci_ms"] = [
              1e3 * float(v) for v in tails.percentile_interval(boot[:, q] - base_boot[:, q])]
        added.append(entry)
  return dict(tail=f"p{tail:g}", reference=reference, http_added=added)


def markdown_table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def _ci(value: float, interval, digits: int = 1) -> str:
  return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


_VERDICT = {"lower": "yes, lower", "higher": "yes, higher", "overlap": "no (overlap)"}


def _samples(count: int) -> str:
  return f"{count} sample" + ("" if count == 1 else "s")


def markdown(rows: list[dict], analysis: dict, settings: dict) -> str:
  tail, reference = analysis["tail"], analysis["reference"]
  ref_names = {r["client"]: r["scheme"] for r in rows if r["key"] == reference}
  ref_short = ref_names.get("in-process", reference).split(" ")[0]
  needed = tails.required_samples(99.9)
  table = []
  for r in rows:
    if tail == "p99.9":
      p999 = _ci(r["p999_ms"], r["p999_ci_ms"])
    else:
      p999 = f"— ({r['p999_above']} above; {needed} queries needed)"
    is_ref = r["key"] == reference
    table.append([
        r["scheme"], r["client"], r["queries"], _ci(r["p50_ms"], r["p50_ci_ms"]),
        _ci(r["p99_ms"], r["p99_ci_ms"]), p999, r["tail_rests_on"],
        _ci(r["gap_ms"], r["gap_ci_ms"]),
        "reference" if is_ref else ("-" if r["tail_ratio"] is None
                                    else _ci(r["tail_ratio"], r["tail_ratio_ci"], 2)),
        "reference" if is_ref else ("-" if r["gap_ratio"] is None
                                    else _ci(r["gap_ratio"], r["gap_ratio_ci"], 2)),
        "reference" if is_ref else _VERDICT.get(r["vs_reference"], "-"),
        ", ".join(name.split(" ")[0] for name in r["tail_ci_overlaps"]) or "none",
        f"{r['throughput']:.1f}", f"{r['answered']:.4f}", f"{r['accuracy']:.3f}", r["groups"],
        f"{r['worker_failures']}/{r['worker_restarts']}", f"{r['client_stall_ms']:.0f}",
        r["redone_segments"],
    ])
  queries = min(r["queries"] for r in rows)
  if tail == "p99.9":
    why = (f"p99.9: every row has >= {queries} queries, at least {tails.MIN_TAIL_SAMPLES} "
           "samples above its p99.9")
  else:
    why = (f"p99, not p99.9: {queries} queries per row put only "
           f"{_samples(tails.expected_above(queries, 99.9))} above p99.9 (p99.9 needs {needed}); "
           f"p99 rests on {tails.expected_above(queries, 99.0)}"
           + ("" if tails.expected_above(queries, 99.0) >= tails.MIN_TAIL_SAMPLES else
              f", fewer than {tails.MIN_TAIL_SAMPLES}: read the p99 columns as indicative only"))
  block = settings["bootstrap_block"]
  text = "\n".join([
      f"Tail quantile of the gaps: {why}. \"{tail} rests on\": samples above it in that row.",
      f"Intervals: 95% bootstrap, percentile method, {settings['bootstrap']} resamples, "
      + ("i.i.d." if block == 1 else f"circular blocks of {block} consecutive queries")
      + f", seed {settings['seed']} + row index. Ratios: the row's {tail} (or gap {tail} - p50) "
      f"over {ref_short}'s of the same client, from independent resamples; \"separated\": the "
      f"two {tail} intervals do not overlap.",
      "",
  ])
  text += markdown_table(
      ["scheme", "client", "queries", "p50 ms [95% CI]", "p99 ms [95% CI]", "p99.9 ms [95% CI]",
       f"{tail} rests on", f"gap {tail}-p50 ms [95% CI]", f"{tail} / {ref_short}'s [95% CI]",
       f"gap / {ref_short}'s [95% CI]", f"{tail} separated from {ref_short}?",
       f"{tail} CI overlaps", "answers/s", "answered", "accuracy", "groups",
       "failures/restarts", "client stall ms", "redone"],
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


def _header(loads: list[float], command: str, settings: dict, notes: dict) -> str:
  lines = [
      f"Command: `{command}`",
      "",
      f"Load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}",
      "",
      f"Settings: `{json.dumps(settings)}`",
  ]
  if notes:
    lines += ["", "Trained parts: " + "; ".join(f"{k}: {v}" for k, v in notes.items())]
  return "\n".join(lines)


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
  print(environment.markdown(), flush=True)
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  num_queries, rounds = _setting("num_queries"), _setting("rounds")
  warmup, num_resamples = _setting("warmup_queries"), _setting("bootstrap")
  if rounds < 1 or num_queries < rounds:
    raise app.UsageError("--rounds must be >= 1 and at most --num_queries.")
  keys = _schemes()
  http_keys = [name for name in _HTTP_SCHEMES.value if name]
  unknown = set(http_keys + keys) - set(SCHEMES)
  if unknown:
    raise app.UsageError(f"Unknown schemes {sorted(unknown)}; use some of {SCHEMES}.")
  if _REFERENCE.value not in keys:
    raise app.UsageError(f"--reference={_REFERENCE.value} is not among the schemes {keys}.")
  names = list(dict.fromkeys(keys + http_keys))
  if _DATASET.value == "fashion_mnist":
    models = fmnist_models(names, _NUM_STRAGGLERS.value, workdir)
  else:
    models = digits_models(names, _NUM_WORKERS.value, workdir)
  deployments, notes = build_deployments(models, names, workdir)
  pairs = [(key, "in-process") for key in keys] + [(key, "HTTP") for key in http_keys]
  test = data.load(_DATASET.value, "test", seed=None)
  loads = [os.getloadavg()[0]]
  total = len(pairs) * (num_queries + warmup) / _RATE.value
  print(f"{len(pairs)} (scheme, client) pairs x ({warmup} warm-up + {num_queries}) queries at "
        f"{_RATE.value:g}/s: about {total / 60:.1f} minutes of arrivals, "
        f"{sum(d.num_workers for d in deployments.values())} worker actors", flush=True)
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
  started_run = time.monotonic()
  startup_s = float("nan")
  try:
    # Every service stays up for the whole run; a scheme's HTTP copy has the
    # same injected latencies (same seed) on its own worker actors.
    for key in keys:
      started = time.monotonic()
      d = deployments[key]
      services[key] = serving.CodedService.start(
          d, input_shape=test.image_shape, latency=latency_profile(d.num_workers, seeds[key]),
          **options,
      )
      print(f"{d.name}: {d.num_workers} workers ready in {time.monotonic() - started:.1f} s",
            flush=True)
    if http_keys:
      from jaxcoded.serving import http

      started = time.monotonic()
      server = http.start(
          {key: http.build_app(deployments[key], input_shape=test.image_shape,
                               latency=latency_profile(deployments[key].num_workers, seeds[key]),
                               freeze_gc=_FREEZE_GC.value, **options) for key in http_keys},
          port=_HTTP_PORT.value or http.free_port(),
      )
      print(f"HTTP ({', '.join(server.urls.values())}): ready in "
            f"{time.monotonic() - started:.1f} s", flush=True)
    if _FREEZE_GC.value:
      gc.collect()
      gc.freeze()
    startup_s = time.monotonic() - started_run

    def serve(pair, count, seed):
      key, client = pair
      if client == "HTTP":
        return serve_poisson_http(server.urls[key], test.images, test.labels, _RATE.value,
                                  count, seed)
      return serve_poisson(services[key], test.images, test.labels, _RATE.value, count, seed)

    def counters(pair):
      key, client = pair
      return server.stats(key) if client == "HTTP" else services[key].stats()

    if warmup:
      for pair in pairs:  # served and discarded
        serve(pair, warmup, _SEED.value)
    per_round = num_queries // rounds
    print(f"serving {per_round * rounds} queries per scheme and client at {_RATE.value:g}/s in "
          f"{rounds} rounds (after {warmup} warm-up queries each, discarded)", flush=True)
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
      print(f"  round {r + 1}/{rounds} done (load average {loads[-1]:.1f}, "
            f"{(time.monotonic() - started_run) / 60:.1f} min)", flush=True)
  finally:
    for service in services.values():
      service.shutdown()
    if server is not None:
      server.shutdown()
    gc.unfreeze()
    ray.shutdown()
  settings = dict(
      dataset=_DATASET.value, schemes=keys, reference=_REFERENCE.value,
      workers={key: d.num_workers for key, d in deployments.items()},
      num_stragglers=_NUM_STRAGGLERS.value if _DATASET.value == "fashion_mnist" else None,
      rate=_RATE.value, num_queries=per_round * rounds, rounds=rounds,
      latency=_LATENCY.value, base_s=_BASE_S.value, exp_mean_s=_EXP_MEAN_S.value,
      alpha=_ALPHA.value, slow_workers=_SLOW.value, slow_extra_s=_SLOW_EXTRA_S.value,
      death_probability=_DEATH.value, max_wait_s=_MAX_WAIT_S.value, timeout_s=_TIMEOUT_S.value,
      warmup_queries=warmup, seed=_SEED.value, address=_ADDRESS.value,
      freeze_gc=_FREEZE_GC.value, max_stall_ms=_MAX_STALL_MS.value, max_redos=_MAX_REDOS.value,
      bootstrap=num_resamples, bootstrap_block=_BLOCK.value, http_schemes=http_keys,
      quick=_QUICK.value,
  )
  rows, boots, raw = [], [], {}
  for index, pair in enumerate(pairs):
    merged = _merge(segments[pair])
    raw[f"{pair[0]}_{pair[1].replace('-', '_')}"] = merged["latencies"]
    boot = tails.bootstrap_quantiles(merged["latencies"], QUANTILES, num_resamples,
                                     seed=_SEED.value + index, block=_BLOCK.value)
    rows.append(summarize(pair[0], deployments[pair[0]].name, pair[1], merged, stats[pair],
                          deployments[pair[0]].num_workers, boot))
    boots.append(boot)
  analysis = analyse(rows, boots, _REFERENCE.value)
  command = "python " + " ".join(sys.argv)
  minutes = (time.monotonic() - started_run) / 60
  report = "\n\n".join([
      environment.markdown().rstrip(),
      _header(loads, command, settings, notes) + f"\n\nWall time: {minutes:.1f} min "
      f"({startup_s / 60:.1f} min starting the services)",
      markdown(rows, analysis, settings),
  ])
  print("\n" + report)
  (workdir / "results.md").write_text(report + "\n")
  (workdir / "results.json").write_text(json.dumps(
      dict(settings=settings, environment=environment.describe(), load_average=loads,
           command=command, notes=notes, rows=rows, **analysis), indent=2))
  np.savez_compressed(workdir / "latencies.npz", **raw)  # seconds, in arrival order
  print(f"\nwrote {workdir / 'results.md'}, results.json and latencies.npz")


if __name__ == "__main__":
  app.run(main)
