"""The coded service on a real multi-node Ray cluster on this machine (``ray.cluster_utils``).

A head node without CPUs (the driver's) and two worker nodes of 2 CPUs each,
all on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from
rewriting 127.0.0.1 to another interface). The service runs Berrut K = 2,
S = 2 (N = 4, R = 2) with one CPU per worker, so the placement is forced: two
workers on each worker node, none on the head. Then:

- a node is killed while queries are in flight: every query resolves (an
  answer or an explicit error), the counters add up, and its two workers are
  stragglers of every group until a new node joins, where Ray restarts them;
- a cluster without enough CPUs is refused at once, naming them;
- ``eval/serve.py --address=...`` serves against the cluster.

Every wait has a deadline. About 60-80 s on a quiet 2-core machine.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the cluster tests need Ray: pip install 'jaxcoded[ray]'")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from flax import nnx  # noqa: E402
from ray._private import ray_constants  # noqa: E402

from configs import digits  # noqa: E402
from jaxcoded import data, deployment, schemes, serving, stragglers, training  # noqa: E402

INPUT_SHAPE = (8, 8, 1)
LOOPBACK = "127.0.0.1"
REPO = pathlib.Path(__file__).resolve().parents[1]
# Node death is noticed by missed health checks: 3 of 1 s here, not Ray's 5 of 3 s.
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                 "health_check_timeout_ms": 1000}


@pytest.fixture(scope="module")
def cluster():
  if ray.is_initialized():
    pytest.skip("another Ray instance is initialised in this process")
  previous = os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
  os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"  # for the subprocesses
  patched = ray_constants.ENABLE_RAY_CLUSTER
  ray_constants.ENABLE_RAY_CLUSTER = False  # read when an address is resolved: this process
  cluster = cluster_utils.Cluster(
      initialize_head=True,
      head_node_args=dict(num_cpus=0, node_ip_address=LOOPBACK, include_dashboard=False,
                          _system_config=SYSTEM_CONFIG),
  )
  try:
    nodes = [cluster.add_node(num_cpus=2, node_ip_address=LOOPBACK) for _ in range(2)]
    cluster.wait_for_nodes(timeout=60)
    ray.init(address=cluster.address, _node_ip_address=LOOPBACK)
    cluster.lost_and_new = nodes
    yield cluster
  finally:
    ray.shutdown()
    cluster.shutdown()
    ray_constants.ENABLE_RAY_CLUSTER = patched
    if previous is None:
      os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
    else:
      os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = previous


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
  """A briefly trained digits MLP in ``workdir/base`` (where eval/serve.py looks)."""
  config = digits.get_config()
  config.num_steps = 60
  config.eval_every = config.checkpoint_every = 60
  config.progress_bar = False
  workdir = tmp_path_factory.mktemp("serve")
  training.train(config, workdir / "base")
  model, _ = training.load_model(workdir / "base")
  graphdef, params = nnx.split(model)

  def classify(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  served = deployment.Deployment.homogeneous(
      "Berrut", schemes.BerrutCode.create(2, 2), classify, params,
      query_range=data.query_spec("digits"),
  )
  return served, workdir, data.load("digits", "test", seed=None).images


def node_of(cluster_node) -> str:
  return cluster_node.node_id


def wait_until(condition, what, timeout_s=60.0):
  deadline = time.monotonic() + timeout_s
  while not condition():
    if time.monotonic() > deadline:
      pytest.fail(f"{what}: not within {timeout_s} s")
    time.sleep(0.1)


def test_a_lost_node_s_workers_are_stragglers_until_a_new_node_takes_them(cluster, classifier):
  served, _, images = classifier
  first, second = cluster.lost_and_new
  service = serving.CodedService.start(
      served, input_shape=INPUT_SHAPE, worker_options={"num_cpus": 1}, timeout_s=2.0,
      max_wait_s=0.02, flush="adaptive", keep_groups=10_000,
      latency=serving.latency_profile(4, stragglers.ShiftedExponential(shift=0.002, rate=500.0)),
  )
  try:
    processes = service.worker_processes()
    assert all(processes)
    on_node = [node for node, _ in processes]
    # The stated placement: SPREAD, forced by 1 CPU per worker and 2 per node.
    assert sorted(on_node) == sorted([node_of(first)] * 2 + [node_of(second)] * 2)
    lost = [i for i, node in enumerate(on_node) if node == node_of(second)]

    futures, stop = [], threading.Event()

    def client():  # 2 queries every 40 ms, until stopped
      i = 0
      while not stop.is_set():
        futures.extend(service.submit(images[i % 300 : i % 300 + 2]))
        i += 2
        time.sleep(0.04)

    sender = threading.Thread(target=client, daemon=True)
    sender.start()
    try:
      wait_until(lambda: service.stats().answered >= 20, "first answers")
      cluster.remove_node(second, allow_graceful=False)  # a crash, not a drain
      # The node's worker processes notice their raylet's death and exit; from
      # then on no call can reach them (same machine: their pids are visible).
      pids = [processes[i][1] for i in lost]
      wait_until(lambda: not any(serving.actors._alive_here(p) for p in pids),
                 "the lost node's worker processes exited")
      gone = service.stats().groups
      wait_until(lambda: service.stats().groups >= gone + 20, "20 groups after the loss")
    finally:
      stop.set()
      sender.join(30)
    assert not sender.is_alive()

    # Every query resolves, with an answer or an explicit error, by its deadline.
    outcomes = [f.exception(timeout=60) or f.result() for f in futures]
    answered = [o for o in outcomes if isinstance(o, serving.Answer)]
    errors = [o for o in outcomes if not isinstance(o, serving.Answer)]
    assert all(isinstance(e, serving.QueryNotDecoded) for e in errors), errors[:3]
    stats = service.stats()
    assert stats.submitted == len(futures) == stats.answered + stats.not_decoded
    assert (stats.answered, stats.not_decoded) == (len(answered), len(errors))
    assert stats.pending == 0 and stats.rejected == 0
    # R = 2 and the first node's two workers live: the groups after the loss
    # decode without the lost workers, which are stragglers of each one.
    records = {r.group: r for r in service.group_records()}
    after = [records[g] for g in sorted(records) if g > gone]
    assert after
    for record in after:
      assert all(record.worker_status[i] in (serving.WorkerStatus.FAILED,
                                             serving.WorkerStatus.LATE) for i in lost)
      assert not record.mask[lost].any() and record.answered[: record.num_real].all()

    # A new node joins: Ray restarts the lost workers there; they answer again.
    third = cluster.add_node(num_cpus=2, node_ip_address=LOOPBACK)
    # Back: each answers from a new process (a restart), and their outputs
    # decode queries again (R = 2: a decode uses the first two outputs in).
    deadline = time.monotonic() + 60
    while True:
      answers = [f.result(timeout=60) for f in service.submit(images[:2])]
      if service.stats().worker_restarts >= len(lost) and any(
          a.mask[lost].any() for a in answers):
        break
      assert time.monotonic() < deadline, f"the lost workers never came back: {service.stats()}"
      time.sleep(0.1)
    now_on = [p[0] for p in service.worker_processes()]
    assert [now_on[i] for i in lost] == [node_of(third)] * len(lost)
  finally:
    service.shutdown()


def test_too_few_cpus_on_the_cluster_are_refused_at_once(cluster, classifier):
  served, _, _ = classifier
  total = int(ray.cluster_resources().get("CPU", 0))
  with pytest.raises(ValueError, match=rf"cannot place 4 coded workers now: they need 12 CPU "
                     rf"\(3 CPU each\).*node\(s\) have {total} of {total} CPU available"):
    serving.CodedService.start(served, input_shape=INPUT_SHAPE, worker_options={"num_cpus": 3})


@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")
def test_eval_serve_runs_against_the_cluster_address(cluster, classifier):
  _, workdir, _ = classifier
  env = {**os.environ, ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
  command = [sys.executable, str(REPO / "eval" / "serve.py"), f"--address={cluster.address}",
             f"--workdir={workdir}", "--num_queries=2", "--num_stragglers=2", "--num_images=40",
             "--rate=40", "--worker_cpus=1", "--timeout_s=2"]
  result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=240, check=False)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-3000:]
  assert "answered 40 of 40 (0 explicit errors)" in result.stdout, output[-3000:]
  # 1 CPU each, 2 per node, no CPU on the head: 2 workers on each of two nodes.
  placement = next(line for line in result.stdout.splitlines() if line.startswith("workers:"))
  assert placement.count("2 on node") == 2, placement
  # The script's workers are gone with it: every CPU is free again.
  wait_until(lambda: ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"],
             "the script's workers' CPUs back", timeout_s=30)
  np.testing.assert_equal(ray.available_resources().get("CPU"), ray.cluster_resources()["CPU"])
