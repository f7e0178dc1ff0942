"""The service's worker actors on a Ray cluster: placement, a resource check, death you can wait for.

* :func:`actor_options` — the workers' Ray options: ``num_cpus=0`` (simulated
  workers), ``max_restarts=-1``, ``max_task_retries=0`` and the placement
  policy ``scheduling_strategy="SPREAD"`` (Ray places each actor on the
  least-loaded feasible node, so N workers spread over the cluster's nodes
  instead of filling the driver's node first), overridden by the caller's.
* :func:`check_resources` — refuses at once, naming what is needed and what
  the cluster has, a set of actors that cannot all be placed (otherwise Ray
  would queue them and the start would wait out ``ready_timeout_s``).
* :func:`kill_and_wait` — ``ray.kill`` is asynchronous: the call returns
  before the actor is gone, and even Ray's ``ActorDiedError`` for a call on
  the handle arrives before the process has exited (both measured here). This
  waits, with a deadline, until a call on every handle fails with
  ``ActorDiedError`` and the actor's last process has exited (its pid on this
  node, or checked by a zero-CPU task pinned to its node; a node that is gone
  took its processes with it).
* :func:`kill_and_wait_restartable` — the same for one actor that Ray will
  restart (chaos testing): waits until its old process has exited.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping, Sequence

import ray

__all__ = [
    "DEFAULT_WORKER_OPTIONS",
    "actor_options",
    "check_resources",
    "kill_and_wait",
    "kill_and_wait_restartable",
    "process_of",
]

_LOG = logging.getLogger(__name__)

DEFAULT_WORKER_OPTIONS = {
    "num_cpus": 0, "max_restarts": -1, "max_task_retries": 0, "scheduling_strategy": "SPREAD",
}
_POLL_S = 0.02


def actor_options(worker_options: Mapping[str, Any] | None) -> dict[str, Any]:
  """The workers' Ray actor options: the defaults above, then ``worker_options``."""
  return {**DEFAULT_WORKER_OPTIONS, **(worker_options or {})}


def _demand(options: Mapping[str, Any]) -> dict[str, float]:
  """The resources one actor with these options holds."""
  demand = {"CPU": float(options.get("num_cpus") or 0), "GPU": float(options.get("num_gpus") or 0)}
  if options.get("memory"):
    demand["memory"] = float(options["memory"])
  for name, amount in (options.get("resources") or {}).items():
    demand[name] = float(amount)
  return {name: amount for name, amount in demand.items() if amount > 0}


def _nodes() -> list[dict[str, Any]]:
  return [node for node in ray.nodes() if node.get("Alive")]


def check_resources(options: Mapping[str, Any], count: int, what: str = "workers") -> None:
  """Raises ValueError when ``count`` actors with ``options`` cannot all be placed now.

  Counts, for every resource an actor holds, how many actors fit on each
  alive node at the node's *available* amount (what other actors leave),
  and compares the total with ``count``. Placement groups and custom
  scheduling strategies other than SPREAD are not modelled: pass
  ``check_resources=False`` to ``CodedService.start`` for those (and for an
  autoscaling cluster that adds nodes on demand).

  Raises:
    ValueError: naming the resources needed, available and in total.
  """
  demand = _demand(options)
  if not demand or count == 0:
    return
  available = ray.available_resources()
  total = ray.cluster_resources()
  nodes = _nodes()
  strategy = options.get("scheduling_strategy")
  if strategy not in (None, "DEFAULT", "SPREAD"):
    return  # Pinned to a node or a placement group: Ray decides; not modelled here.
  fits = 0
  for node in nodes:
    node_free = _node_available(node, available, len(nodes))
    fits += int(min(node_free.get(name, 0.0) // amount for name, amount in demand.items()))
  if fits >= count:
    return
  needed = ", ".join(f"{count * amount:g} {name}" for name, amount in demand.items())
  have = ", ".join(
      f"{available.get(name, 0.0):g} of {total.get(name, 0.0):g} {name}" for name in demand
  )
  raise ValueError(
      f"The cluster cannot place {count} {what} now: they need {needed} "
      f"({', '.join(f'{a:g} {n}' for n, a in demand.items())} each), and its {len(nodes)} alive "
      f"node(s) have {have} available; only {fits} would start and Ray would queue the rest. "
      f"Add nodes, or lower the {what}' resources (worker_options, e.g. {{'num_cpus': 0}} for "
      f"simulated workers)."
  )


def _node_available(node: Mapping[str, Any], available: Mapping[str, float],
                    num_nodes: int) -> dict[str, float]:
  """A node's available resources: exact on one node, else its totals capped by the cluster's."""
  resources = dict(node.get("Resources") or {})
  if num_nodes == 1:
    return {name: available.get(name, 0.0) for name in resources}
  # ray.nodes() gives totals per node; the cluster-wide available amount caps them.
  return {name: min(amount, available.get(name, 0.0)) for name, amount in resources.items()}


def process_of(handle) -> tuple[str, int] | None:
  """(node id, pid) of the actor's current process from Ray's actor table, or None if unknown."""
  try:
    from ray._private import state

    info = state.actors(handle._actor_id.hex())
  except Exception:  # Ray Client, or another Ray version
    return None
  pid = info.get("Pid") if isinstance(info, dict) else None
  node = (info.get("Address") or {}).get("NodeID") if isinstance(info, dict) else None
  if not pid or not node:
    return None
  return node, int(pid)


def _alive_here(pid: int) -> bool:
  """Whether process ``pid`` of this machine still runs (a zombie has exited)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
      return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
  except (FileNotFoundError, ProcessLookupError, IndexError):
    return False
  except OSError:  # No /proc: ask the kernel.
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      return True
    return True


def _wait_pids_here(pids: Sequence[int], deadline: float) -> list[int]:
  """Waits until none of ``pids`` runs on this machine or the deadline; returns the survivors."""
  left = [pid for pid in pids if _alive_here(pid)]
  while left and time.time() < deadline:
    time.sleep(_POLL_S)
    left = [pid for pid in left if _alive_here(pid)]
  return left


@ray.remote(num_cpus=0, max_retries=0)
def _wait_pids_on_node(pids: Sequence[int], deadline: float) -> list[int]:
  return _wait_pids_here(pids, deadline)


def _wait_processes_gone(processes: Sequence[tuple[str, int]], deadline: float) -> list[int]:
  """Waits until the processes (node id, pid) have exited; returns the pids still running."""
  here = ray.get_runtime_context().get_node_id()
  by_node: dict[str, list[int]] = {}
  for node, pid in processes:
    by_node.setdefault(node, []).append(pid)
  alive_nodes = {node["NodeID"] for node in _nodes()}
  survivors, remote = [], []
  for node, pids in by_node.items():
    if node == here:
      continue
    if node not in alive_nodes:
      continue  # The node is gone, and its processes with it.
    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=False)
    remote.append((node, pids, _wait_pids_on_node.options(
        scheduling_strategy=strategy).remote(pids, deadline)))
  survivors += _wait_pids_here(by_node.get(here, []), deadline)
  for node, pids, ref in remote:
    try:
      survivors += ray.get(ref, timeout=max(1.0, deadline - time.time() + 5.0))
    except ray.exceptions.GetTimeoutError:
      survivors += pids
    except ray.exceptions.RayError:
      if node in {n["NodeID"] for n in _nodes()}:
        survivors += pids  # Could not look: count them as alive.
  return survivors


def _died(handle, deadline: float) -> bool:
  """Waits until a call on ``handle`` fails with ActorDiedError (True) or the deadline (False)."""
  while True:
    remaining = deadline - time.time()
    if remaining <= 0:
      return False
    try:
      ray.get(handle.__ray_ready__.remote(), timeout=remaining)
    except ray.exceptions.ActorDiedError:
      return True
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
      pass  # Unavailable for now (dying, restarting): ask again.
    time.sleep(_POLL_S)


def kill_and_wait(handles: Sequence[Any], timeout_s: float = 30.0) -> list[int]:
  """Kills the actors for good and waits until they are dead; returns the indices still alive.

  Dead means: a call on the handle fails with ``ActorDiedError`` and the
  actor's last known process has exited. Waits at most ``timeout_s`` in all.
  """
  deadline = time.time() + timeout_s
  processes = [process_of(h) for h in handles]
  for handle in handles:
    try:
      ray.kill(handle, no_restart=True)
    except Exception:  # already gone
      pass
  alive = [i for i, h in enumerate(handles) if not _died(h, deadline)]
  known = [(i, p) for i, p in enumerate(processes) if p is not None and i not in alive]
  running = set(_wait_processes_gone([p for _, p in known], deadline))
  alive += [i for i, (_, pid) in known if pid in running]
  if alive:
    _LOG.error("actors %s still alive %.0f s after ray.kill", sorted(alive), timeout_s)
  return sorted(alive)


def kill_and_wait_restartable(handle, timeout_s: float = 30.0) -> bool:
  """Kills the actor's process (Ray restarts it); True once that process has exited.

  Without a known process (Ray Client), waits until a call on the handle
  fails or the actor answers from a new process, whichever Ray reports.
  """
  deadline = time.time() + timeout_s
  process = process_of(handle)
  ray.kill(handle, no_restart=False)
  if process is not None:
    return not _wait_processes_gone([process], deadline)
  try:
    ray.get(handle.__ray_ready__.remote(), timeout=timeout_s)
  except ray.exceptions.RayError:
    pass
  return True
