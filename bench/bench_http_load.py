r"""The HTTP front end under a real load generator (hey), against the number of Serve replicas.

  python bench/bench_http_load.py --workdir=/tmp/bench_http      # about 8 minutes here
  python bench/bench_http_load.py --quick                         # a smoke run, about 3 minutes

Serves the digits MLP as ``eval/serve.py --http`` does (Berrut K = 4, S = 2,
N = 6; shifted-exponential delays of 10 ms + Exp(5 ms) per call, the last
worker always late; ``max_wait_s`` 0.25, ``timeout_s`` 1) through
``jaxcoded.serving.http`` on 127.0.0.1, with R = ``--replicas`` Serve replicas
(each the master of its own 6 worker actors). For each R it drives
``POST /predict`` with one image per request with ``hey`` (Debian package
``hey``) in closed loop at each ``--concurrency`` for ``--duration_s``
seconds, then stops everything. Also the c = 1 row with ``flush="timer"``
(the front end before adaptive batching: a lone request waits ``max_wait_s``).

Prints (and writes to ``--out``, markdown):

- throughput (answered requests/s) and p50 / p99 / p99.9 latency with 95%
  bootstrap intervals (``jaxcoded.serving.tails``: percentile method, circular
  blocks of 50 requests in completion order), per R and concurrency;
- the rate at which one master saturates (the largest throughput of R = 1);
- where the time goes at that point: the master's stages (``/stats``
  ``profile``: read, parse, submit, encode, dispatch, fetch, decode, release,
  reply; ms per request) and CPU seconds per request of each kind of process
  (Serve's proxy, the replicas, the coded workers, hey itself), from psutil.

Needs ``pip install 'jaxcoded[ray]'``, psutil (a Ray dependency) and ``hey``.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import environment  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_http", "Where the base classifier is.")
_REPLICAS = flags.DEFINE_list("replicas", ["1", "2"], "Serve replica counts to measure.")
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "4", "16", "64"], "hey -c levels.")
_DURATION = flags.DEFINE_float("duration_s", 12.0, "Seconds of load per level (hey -z).")
_WARMUP = flags.DEFINE_integer("warmup_requests", 100, "Requests sent first, discarded.")
_MAX_WAIT = flags.DEFINE_float("max_wait_s", 0.25, "The service's max_wait_s (eval/serve.py's).")
_TIMEOUT = flags.DEFINE_float("timeout_s", 1.0, "The groups' deadline.")
_TIMER_ROW = flags.DEFINE_bool("timer_row", True, "Also c = 1 with flush='timer' (before).")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples.")
_BLOCK = flags.DEFINE_integer("bootstrap_block", 50, "Circular block length (requests).")
_OUT = flags.DEFINE_string("out", None, "Write the markdown report here too.")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke run: R = 1, c = 1 and 16, 5 s each.")
_CPUS = flags.DEFINE_integer("ray_cpus", 2, "num_cpus of the local Ray instance.")

PROCESS_KINDS = (("proxy", "ProxyActor"), ("replica", "ServeReplica"),
                 ("workers", "CodedWorker"), ("controller", "ServeController"))
STAGES = ("read_s", "parse_s", "submit_s", "encode_s", "dispatch_s", "fetch_s", "decode_s",
          "release_s", "reply_s")


def build_served(workdir: pathlib.Path):

  from jaxcoded import data, deployment, schemes, training

  base = workdir / "base"
  if not training.is_finished(base):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from configs import digits

    config = digits.get_config()
    config.progress_bar = False
    training.train(config, base)
  model, _ = training.load_model(base)
  served = deployment.Deployment.homogeneous(
      "berrut", schemes.BerrutCode.create(4, 2), *training.classifier.as_worker_fn(model),
      query_range=data.query_spec("digits"))
  return served, data.load("digits", "test", seed=None).images


def process_cpu() -> dict[str, float]:
  """CPU seconds (user + system) so far of each kind of Ray process, and of hey's."""
  import psutil

  totals = collections.Counter()
  for process in psutil.process_iter(["cmdline", "name"]):
    try:
      line = " ".join(process.info["cmdline"] or []) or process.info["name"] or ""
      kind = next((k for k, marker in PROCESS_KINDS if marker in line), None)
      if kind is None:
        continue
      times = process.cpu_times()
      totals[kind] += times.user + times.system
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
  children = resource.getrusage(resource.RUSAGE_CHILDREN)  # hey, once it has exited
  totals["hey"] = children.ru_utime + children.ru_stime
  return dict(totals)


def all_stats(url: str, replicas: int, timeout_s: float = 60.0) -> dict[str, dict]:
  """/stats of every replica (Serve routes each GET to one; ask until each was seen)."""
  import httpx

  seen, deadline = {}, time.monotonic() + timeout_s
  with httpx.Client(timeout=30.0) as client:
    while len(seen) < replicas:
      if time.monotonic() > deadline:
        raise TimeoutError(f"saw {len(seen)} of {replicas} replicas' /stats")
      stats = client.get(f"{url}/stats").json()
      seen[stats["replica"]["id"]] = stats
  return seen


def summed(stats: dict[str, dict]) -> collections.Counter:
  total = collections.Counter()
  for one in stats.values():
    for key in ("answered", "not_decoded", "groups", "padded_slots", "submitted"):
      total[key] += one[key]
    for key, value in one["profile"].items():
      total[key] += value
    total["predicted"] += one["http"]["predicted"]
  return total


def run_hey(url: str, body: pathlib.Path, concurrency: int, duration_s: float | None,
            requests: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
  """(latencies s in completion order, status codes, wall seconds) of one hey run."""
  command = ["hey", "-c", str(concurrency), "-m", "POST", "-T", "application/json",
             "-D", str(body), "-o", "csv", "-t", "30"]
  command += ["-z", f"{duration_s:g}s"] if duration_s else ["-n", str(requests)]
  started = time.monotonic()
  result = subprocess.run(command + [f"{url}/predict"], capture_output=True, text=True,
                          check=True, timeout=(duration_s or 60) + 120)
  wall = time.monotonic() - started
  rows = list(csv.DictReader(io.StringIO(result.stdout)))
  rows.sort(key=lambda r: float(r["offset"]) + float(r["response-time"]))
  latencies = np.array([float(r["response-time"]) for r in rows])
  codes = np.array([int(r["status-code"]) for r in rows])
  if rows:
    span = max(float(r["offset"]) + float(r["response-time"]) for r in rows) - min(
        float(r["offset"]) for r in rows)
    wall = span
  return latencies, codes, wall


def quantile_cells(latencies: np.ndarray, seed: int) -> list[str]:
  from jaxcoded.serving import tails

  ms = 1e3 * latencies
  replicates = tails.bootstrap_quantiles(ms, (50, 99, 99.9), _BOOTSTRAP.value, seed,
                                         block=_BLOCK.value)
  low, high = tails.percentile_interval(replicates)
  point = np.percentile(ms, (50, 99, 99.9))
  cells = []
  for i, q in enumerate((50, 99, 99.9)):
    above = tails.expected_above(len(ms), q)
    if above == 0:
      cells.append("— (0 above)")
    elif q != 50 and above < tails.MIN_TAIL_SAMPLES:  # reported, with what it rests on
      cells.append(f"{point[i]:.1f} [{low[i]:.1f}, {high[i]:.1f}] ({above} above)")
    else:
      cells.append(f"{point[i]:.1f} [{low[i]:.1f}, {high[i]:.1f}]")
  return cells


def measure(served, images, url, replicas, levels, body, rows, profiles, seed0):
  before_warm = time.monotonic()
  run_hey(url, body, 4, None, requests=_WARMUP.value)
  logging.info("warm-up %.1f s", time.monotonic() - before_warm)
  for concurrency in levels:
    stats0, cpu0 = summed(all_stats(url, replicas)), process_cpu()
    latencies, codes, wall = run_hey(url, body, concurrency, _DURATION.value)
    stats1, cpu1 = summed(all_stats(url, replicas)), process_cpu()
    ok = codes == 200
    answered = stats1["answered"] - stats0["answered"]
    row = dict(replicas=replicas, concurrency=concurrency, requests=len(codes),
               ok=int(ok.sum()), throughput=ok.sum() / wall if wall else 0.0,
               not_decoded=stats1["not_decoded"] - stats0["not_decoded"],
               groups=stats1["groups"] - stats0["groups"], answered=answered,
               padded=stats1["padded_slots"] - stats0["padded_slots"],
               cells=quantile_cells(latencies[ok], seed0 + len(rows)) if ok.any() else ["—"] * 3,
               load=os.getloadavg()[0])
    rows.append(row)
    predicted = max(1, stats1["predicted"] - stats0["predicted"])
    profiles.append(dict(
        replicas=replicas, concurrency=concurrency, requests=predicted,
        stages={s: 1e3 * (stats1[s] - stats0[s]) / predicted for s in STAGES},
        replica_cpu_ms=1e3 * (stats1["process_cpu_s"] - stats0["process_cpu_s"]) / predicted,
        cpu_ms={k: 1e3 * (cpu1.get(k, 0) - cpu0.get(k, 0)) / predicted
                for k in ("proxy", "replica", "workers", "controller", "hey")},
        wall_s=wall))
    print(f"R={replicas} c={concurrency}: {row['throughput']:.1f} req/s, p50/p99/p99.9 "
          f"{row['cells']}, {row['ok']}/{row['requests']} 200s", flush=True)


def report(rows, profiles, timer_rows, command: str, minutes: float, loads) -> str:
  lines = [environment.markdown(), "", "```", command, "```", "",
           f"{minutes:.1f} minutes; load average (1 min) {min(loads):.1f} to {max(loads):.1f} "
           "during the run. One image per request; hey in closed loop (c clients, each sends "
           "its next request when the last one returns); latency as hey measures it "
           "(connection reuse on). Intervals: 95% bootstrap, percentile method, "
           f"{_BOOTSTRAP.value} resamples, circular blocks of {_BLOCK.value} requests. p99.9 "
           "and p99 rest on 20 samples above them from 20,000 and 2,000 requests on; below that "
           "the cell says on how many samples above it the value rests (read such tails as "
           "rough), and \"—\" where none.", ""]
  lines += ["| replicas | flush | concurrency | requests | non-200 | answers/s | "
            "p50 ms [95% CI] | p99 ms [95% CI] | p99.9 ms [95% CI] | QueryNotDecoded | "
            "groups | padded slots | load |", "|" + "---|" * 13]
  for row in rows + timer_rows:
    lines.append(
        f"| {row['replicas']} | {row.get('flush', 'adaptive')} | {row['concurrency']} | "
        f"{row['requests']} | {row['requests'] - row['ok']} | {row['throughput']:.1f} | "
        f"{' | '.join(row['cells'])} | {row['not_decoded']} | {row['groups']} | {row['padded']} | "
        f"{row['load']:.1f} |")
  one = [r for r in rows if r["replicas"] == 1]
  if one:
    best = max(one, key=lambda r: r["throughput"])
    lines += ["", f"One master (R = 1) saturates at about {best['throughput']:.0f} answered "
              f"requests/s (its largest throughput, at c = {best['concurrency']})."]
  lines += ["", "Where the time goes (ms per request; the master's stages from `/stats` "
            "`profile`, summed over its threads; CPU ms per request of each kind of process "
            "from psutil):", "",
            "| replicas | c | " + " | ".join(s[:-2] for s in STAGES) +
            " | replica CPU | proxy CPU | workers CPU | controller CPU | hey CPU |",
            "|" + "---|" * (len(STAGES) + 7)]
  for p in profiles:
    lines.append(f"| {p['replicas']} | {p['concurrency']} | " +
                 " | ".join(f"{p['stages'][s]:.2f}" for s in STAGES) +
                 f" | {p['replica_cpu_ms']:.2f} | " +
                 " | ".join(f"{p['cpu_ms'][k]:.2f}" for k in
                            ("proxy", "workers", "controller", "hey")) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if shutil.which("hey") is None:
    raise app.UsageError("hey is not installed: apt-get install -y hey")
  import ray

  from jaxcoded import serving
  from jaxcoded.serving import http

  replicas_list = [1] if _QUICK.value else [int(r) for r in _REPLICAS.value]
  levels = [1, 16] if _QUICK.value else [int(c) for c in _CONCURRENCY.value]
  if _QUICK.value:
    flags.FLAGS.duration_s = 5.0
  started = time.monotonic()
  workdir = pathlib.Path(_WORKDIR.value)
  served, images = build_served(workdir)
  body = pathlib.Path(tempfile.mkdtemp()) / "body.json"
  # Two decimals toward zero: within the range the service accepts (rounding may leave it).
  image = np.trunc(images[0] * 100) / 100
  body.write_text(json.dumps({"images": [[float(f"{v:.2f}") for v in image.ravel()]]}))
  from jaxcoded import stragglers

  n = served.num_workers
  latency = serving.latency_profile(
      n, stragglers.ShiftedExponential(shift=0.01, rate=200.0), slow_workers=(n - 1,),
      slow_extra_s=2 * _TIMEOUT.value)
  ray.init(num_cpus=_CPUS.value, include_dashboard=False)
  rows, profiles, timer_rows, loads = [], [], [], [os.getloadavg()[0]]
  try:
    configs = [(r, "adaptive", levels) for r in replicas_list]
    if _TIMER_ROW.value:
      configs.append((1, "timer", [1]))
    for replicas, flush, config_levels in configs:
      app_ = http.build_app(served, input_shape=(8, 8, 1), num_replicas=replicas,
                            timeout_s=_TIMEOUT.value, max_wait_s=_MAX_WAIT.value,
                            latency=latency, flush=flush, freeze_gc=True)
      server = http.start(app_, port=http.free_port(), request_timeout_s=30.0)
      try:
        import httpx

        reply = httpx.post(f"{server.url}/predict", content=body.read_bytes(),
                           headers={"content-type": "application/json"}, timeout=30.0).json()
        if reply.get("num_answered") != 1:
          raise RuntimeError(f"the request body is not answered: {reply}")
        target = timer_rows if flush == "timer" else rows
        before = len(target)
        measure(served, images, server.url, replicas, config_levels, body, target,
                profiles if flush == "adaptive" else [], 1000 * replicas)
        for row in target[before:]:
          row["flush"] = flush
        loads.append(os.getloadavg()[0])
      finally:
        server.shutdown()
  finally:
    ray.shutdown()
  command = "python bench/bench_http_load.py " + " ".join(sys.argv[1:])
  text = report(rows, profiles, timer_rows, command, (time.monotonic() - started) / 60, loads)
  print(text)
  if _OUT.value:
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(text + "\n")


if __name__ == "__main__":
  app.run(main)
