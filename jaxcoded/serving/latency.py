"""Straggler injection: the latency and failures of each worker, applied inside its actor.

Real stragglers come from contention, garbage collection, slow disks and
crashes; for experiments the service injects them, one :class:`WorkerLatency`
per worker, with the latency models of :mod:`jaxcoded.stragglers`:

  model              a random delay per call, in seconds: ``ShiftedExponential``
                     (shift + exponential) or ``Pareto`` (heavy tail);
  extra_s            a fixed extra delay per call: a permanently slow worker;
  death_probability  per call, the worker's process exits (``os._exit``) before
                     answering; Ray restarts it and the call raises
                     ``RayActorError`` at the master, which counts it a straggler;
  die_on_call        a deterministic death on that call (1-based) of the
                     worker's first life only (tests, demonstrations).

A worker serves calls one at a time, so a delay also holds back the calls
queued behind it, as on a real overloaded machine.

Example:
  >>> from jaxcoded import stragglers
  >>> from jaxcoded.serving import latency
  >>> profile = latency.latency_profile(
  ...     4, stragglers.ShiftedExponential(shift=0.01, rate=100.0),
  ...     slow_workers=(2,), slow_extra_s=0.1)
  >>> [round(p.extra_s, 2) for p in profile]
  [0.0, 0.0, 0.1, 0.0]
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import jax
import numpy as np

from jaxcoded import stragglers

__all__ = ["LatencyInjector", "WorkerLatency", "latency_profile"]

_BLOCK = 1024  # latencies drawn at once, so a call costs no JAX dispatch


@dataclasses.dataclass(frozen=True)
class WorkerLatency:
  """The injected behaviour of one worker.

  Attributes:
    model: a latency model with ``sample(key, shape)`` and scalar parameters,
      in seconds (e.g. ``stragglers.ShiftedExponential(shift=0.02, rate=100.)``:
      20 ms plus an exponential delay of mean 10 ms), or None for no delay.
    extra_s: a fixed delay added to every call, >= 0 (a slow worker).
    death_probability: probability in [0, 1) that a call kills the worker.
    die_on_call: if set, the worker dies on this call (1-based) of its first
      life; after Ray restarts it, it does not die again by this rule.
    seed: seed of the delays and deaths (combined with the worker's index).
  """

  model: stragglers.LatencyModel | None = None
  extra_s: float = 0.0
  death_probability: float = 0.0
  die_on_call: int | None = None
  seed: int = 0

  def __post_init__(self):
    if not np.isfinite(self.extra_s) or self.extra_s < 0:
      raise ValueError(f"WorkerLatency: extra_s must be finite and >= 0, got {self.extra_s!r}.")
    if not 0 <= self.death_probability < 1:
      raise ValueError(
          f"WorkerLatency: death_probability must be in [0, 1), got {self.death_probability!r}."
      )
    if self.die_on_call is not None and (
        isinstance(self.die_on_call, bool) or not isinstance(self.die_on_call, int)
        or self.die_on_call < 1
    ):
      raise ValueError(
          f"WorkerLatency: die_on_call must be an integer >= 1, got {self.die_on_call!r}."
      )
    if self.model is not None:
      shapes = [np.shape(leaf) for leaf in jax.tree.leaves(self.model)]
      if any(shapes):
        raise ValueError(
            f"WorkerLatency: the latency model of one worker needs scalar parameters, got "
            f"shapes {shapes} (latency_profile splits per-worker parameters)."
        )


def _worker_model(model: stragglers.LatencyModel, index: int, num_workers: int):
  """Worker ``index``'s scalar model out of one with scalar or (N,) parameters."""

  def pick(leaf):
    leaf = np.asarray(leaf)
    if leaf.ndim == 0:
      return float(leaf)
    if leaf.shape != (num_workers,):
      raise ValueError(
          f"latency_profile: per-worker model parameters need shape ({num_workers},), got "
          f"{leaf.shape}."
      )
    return float(leaf[index])

  return jax.tree.map(pick, model)


def latency_profile(
    num_workers: int,
    model: stragglers.LatencyModel | None = None,
    *,
    slow_workers: Sequence[int] = (),
    slow_extra_s: float = 0.0,
    death_probability: float = 0.0,
    die_on_call: dict[int, int] | None = None,
    seed: int = 0,
) -> tuple[WorkerLatency, ...]:
  """One :class:`WorkerLatency` per worker from a few experiment settings.

  Args:
    num_workers: N.
    model: latency model in seconds, scalar parameters (all workers alike) or
      (N,) parameters (heterogeneous workers); None for no random delay.
    slow_workers: indices of permanently slow workers.
    slow_extra_s: their extra delay per call, seconds.
    death_probability: per call, for every worker.
    die_on_call: ``{worker index: call number}`` deterministic deaths.
    seed: base seed (each worker also folds in its index).

  Returns:
    A tuple of N ``WorkerLatency``.
  """
  if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
    raise ValueError(f"latency_profile: num_workers must be an integer >= 1, got {num_workers!r}.")
  die_on_call = dict(die_on_call or {})
  for index in list(slow_workers) + list(die_on_call):
    if not 0 <= index < num_workers:
      raise ValueError(f"latency_profile: worker {index} is not in 0..{num_workers - 1}.")
  return tuple(
      WorkerLatency(
          model=None if model is None else _worker_model(model, n, num_workers),
          extra_s=float(slow_extra_s) if n in slow_workers else 0.0,
          death_probability=death_probability,
          die_on_call=die_on_call.get(n),
          seed=seed,
      )
      for n in range(num_workers)
  )


class LatencyInjector:
  """Applies a :class:`WorkerLatency` to the calls of one worker (inside its actor).

  Args:
    spec: the worker's latency.
    index: the worker's index n (decorrelates the workers' random streams).
    first_life: False after Ray restarted the worker (``die_on_call`` then no
      longer applies, and the random streams change).
  """

  def __init__(self, spec: WorkerLatency, index: int, first_life: bool = True):
    self.spec = spec
    self.first_life = first_life
    life = 0 if first_life else int.from_bytes(os.urandom(4), "little")
    seeds = np.random.SeedSequence((spec.seed, index, life))
    self._key = jax.random.key(int(seeds.generate_state(1)[0]))
    self._rng = np.random.default_rng(seeds)
    self._delays = np.zeros(0)
    self._block = 0
    self.calls = 0
    self._refill()  # Compiles the sampler now rather than on the first call.

  def _refill(self) -> None:
    if self.spec.model is not None:
      key = jax.random.fold_in(self._key, self._block)
      self._delays = np.asarray(self.spec.model.sample(key, (_BLOCK,)), np.float64)
      self._block += 1

  def _next_delay(self) -> float:
    if self.spec.model is None:
      return 0.0
    if not len(self._delays):
      self._refill()
    delay, self._delays = float(self._delays[0]), self._delays[1:]
    return delay

  def before_call(self) -> float:
    """Sleeps the injected delay of this call, or kills the process; returns the delay."""
    self.calls += 1
    dies = self.first_life and self.spec.die_on_call == self.calls
    dies |= self.spec.death_probability > 0 and self._rng.random() < self.spec.death_probability
    if dies:
      os._exit(1)  # A crash, not a clean exit: Ray sees the process die and restarts it.
    delay = self._next_delay() + self.spec.extra_s
    if delay > 0:
      time.sleep(delay)
    return delay
