"""Blocks every training config shares: the optimiser, the loop's logging, the smoke shrink.

  config = ml_collections.ConfigDict()
  ...
  common.optimizer(config, learning_rate=3e-3, warmup_steps=20)
  common.loop(config, log_every=50, eval_every=100, checkpoint_every=100)
  if variant == "smoke":
    common.smoke(config)

The fields are those of ``jaxcoded.training.make_optimizer`` and
``jaxcoded.training.fit``; a config may still override any of them after.
"""

import ml_collections


def optimizer(
    config: ml_collections.ConfigDict,
    *,
    learning_rate: float,
    warmup_steps: int,
    kind: str = "adamw",
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    schedule: str = "warmup_cosine",
) -> ml_collections.ConfigDict:
  """The optimiser block: AdamW (or Nesterov SGD) with a warmup-cosine schedule."""
  config.optimizer = kind
  config.learning_rate = learning_rate
  config.momentum = momentum  # sgd only
  config.weight_decay = weight_decay
  config.schedule = schedule
  config.warmup_steps = warmup_steps
  return config


def loop(
    config: ml_collections.ConfigDict,
    *,
    log_every: int,
    eval_every: int,
    checkpoint_every: int,
    keep_checkpoints: int = 2,
    seed: int = 0,
    progress_bar: bool = True,
) -> ml_collections.ConfigDict:
  """The training loop's block: seed, logging, evaluation and checkpoint cadence."""
  config.seed = seed
  config.log_every = log_every
  config.eval_every = eval_every
  config.checkpoint_every = checkpoint_every
  config.keep_checkpoints = keep_checkpoints
  config.progress_bar = progress_bar
  config.stop_after_steps = 0  # > 0 stops there, as if interrupted (tests)
  return config


def smoke(config: ml_collections.ConfigDict, num_steps: int = 4) -> ml_collections.ConfigDict:
  """Shrinks a run to a few steps (tests and ``:smoke`` variants)."""
  config.num_steps = num_steps
  config.warmup_steps = 1
  config.log_every = 1
  config.eval_every = 2
  config.checkpoint_every = 2
  config.progress_bar = False
  return config
