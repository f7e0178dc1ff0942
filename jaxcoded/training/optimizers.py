"""Optax optimizers and learning-rate schedules from a config (docs/training.md)."""

from __future__ import annotations

import functools

import ml_collections
import optax

__all__ = ["make_optimizer", "make_schedule"]
def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate as a function of the optimizer step.

  Config fields: ``learning_rate`` (peak), ``schedule`` ("constant" or
  "warmup_cosine": linear warmup from 0 over ``warmup_steps``, then cosine
  decay to 0 at ``num_steps``), ``warmup_steps``, ``num_steps``.
  """
  return _schedule(config.schedule, config.learning_rate, config.warmup_steps, config.num_steps)


def make_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The Optax transformation and its learning-rate schedule.

  Config fields: ``optimizer`` ("adamw", or "sgd" with Nesterov momentum
  ``momentum``), ``weight_decay`` (decoupled, on all parameters), and the
  schedule's fields (:func:`make_schedule`). Equal settings give the same
  (cached) objects: ``nnx.Optimizer`` keeps the transformation in its static
  structure, so this lets repeated runs in one process share the compiled
  train step.
  """
  return _optimizer(
      config.optimizer,
      config.weight_decay,
      config.momentum,
      config.schedule,
      config.learning_rate,
      config.warmup_steps,
      config.num_steps,
  )


@functools.lru_cache(maxsize=32)
def _schedule(kind: str, learning_rate: float, warmup_steps: int, num_steps: int) -> optax.Schedule:
  if kind == "constant":
    return optax.constant_schedule(learning_rate)
  if kind == "warmup_cosine":
    if not 0 <= warmup_steps < num_steps:
      raise ValueError(f"warmup_steps must be in [0, num_steps={num_steps}), got {warmup_steps}.")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=num_steps,
        end_value=0.0,
    )
  raise ValueError(f"Unknown schedule {kind!r}; use 'constant' or 'warmup_cosine'.")


@functools.lru_cache(maxsize=32)
def _optimizer(
    kind: str, weight_decay: float, momentum: float, *schedule_args
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = _schedule(*schedule_args)
  if kind == "adamw":
    tx = optax.adamw(schedule, weight_decay=weight_decay)
  elif kind == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(schedule, momentum=momentum, nesterov=True),
    )
  else:
    raise ValueError(f"Unknown optimizer {kind!r}; use 'adamw' or 'sgd'.")
  return tx, schedule


# ---------------------------------------------------------------------------
# The loop.
