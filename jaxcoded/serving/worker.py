"""One coded worker: a Ray actor that runs a deployment's worker task on coded inputs.

The actor holds its task's function, jitted, and its parameters (docs/design.md
section 5: a worker computes ``fn(params, x)`` on ONE coded input). It is
built from a *task source*: a ``WorkerTask`` shipped by the master, or a
callable that builds the task inside the actor (e.g. reads a checkpoint on
the worker's own machine). Ray restarts a dead actor by calling the
constructor again with the same arguments, so a restarted worker reloads its
task, compiles again, and serves on.

Every answer carries the worker's *incarnation* (a fresh id per process), so
the master can count restarts without Ray's state API.
"""

from __future__ import annotations

import time
import uuid
import warnings
from typing import Any, Callable

import jax
import numpy as np
import ray

from jaxcoded import deployment
from jaxcoded.serving import latency

__all__ = ["CodedWorker", "TaskSource"]

TaskSource = deployment.WorkerTask | Callable[[], deployment.WorkerTask]


def resolve_task(source: TaskSource) -> deployment.WorkerTask:
  """The worker task of a source: the task itself, or what the callable builds."""
  task = source if isinstance(source, deployment.WorkerTask) else source()
  if not isinstance(task, deployment.WorkerTask):
    raise TypeError(f"A task source must give a deployment.WorkerTask, got {type(task).__name__}.")
  return task


class CodedWorker:
  """Worker ``index``: injected latency, then ``fn(params, x)``; wrap with ``ray.remote``.

  Args:
    index: the worker's index n.
    source: its task (or a callable that builds it, run inside the actor).
    injected: the worker's injected latency and failures.
    example: one coded input of the right shape and dtype; the task is
      compiled on it at construction, so the first real call is not slow.
    enable_x64: JAX's x64 flag of the master, so both compute in the same
      precision.
  """

  def __init__(
      self,
      index: int,
      source: TaskSource,
      injected: latency.WorkerLatency,
      example: np.ndarray,
      enable_x64: bool,
  ):
    jax.config.update("jax_enable_x64", enable_x64)
    self.index = index
    self.incarnation = uuid.uuid4().hex
    task = resolve_task(source)
    self._run = jax.jit(task.fn)
    self._params = jax.device_put(task.params)
    self._example = example
    self._example_output = np.asarray(self._run(self._params, example))
    first_life = not _was_restarted()
    self._injector = latency.LatencyInjector(injected, index, first_life=first_life)
    self.skipped = 0

  def run(
      self, coded_input: np.ndarray, deadline: float | None = None
  ) -> tuple[np.ndarray | None, str]:
    """(injected delay or death) ``fn(params, x)``; returns (output, incarnation).

    Args:
      coded_input: this worker's coded input for one group.
      deadline: the group's deadline (``time.time()`` seconds) or None. A call
        that starts after it is skipped (output None): its group no longer
        waits, and a slow worker's backlog would otherwise grow without end.
    """
    if deadline is not None and time.time() > deadline:
      self.skipped += 1
      return None, self.incarnation
    self._injector.before_call()
    return np.asarray(self._run(self._params, coded_input)), self.incarnation

  def probe(self) -> tuple[np.ndarray, str]:
    """The output on the construction example, without injection: readiness and output shape."""
    return self._example_output, self.incarnation

  def info(self) -> dict[str, Any]:
    """Index, incarnation, calls served and skipped in this life, whether Ray restarted it."""
    return dict(
        index=self.index, incarnation=self.incarnation, calls=self._injector.calls,
        skipped=self.skipped, restarted=not self._injector.first_life,
    )


def _was_restarted() -> bool:
  """Whether Ray restarted this actor (False outside an actor)."""
  context = ray.get_runtime_context()
  if context.get_actor_id() is None:
    return False
  with warnings.catch_warnings():
    # Ray 2.x implements this public method with its own deprecated actor_id property.
    warnings.simplefilter("ignore", DeprecationWarning)
    return bool(context.was_current_actor_reconstructed)
