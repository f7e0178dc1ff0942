"""Byzantine workers for tests and evaluation (docs/design.md section 4.4).

An adversarial worker returns something other than f of its coded input.
Three models, from crude to subtle:

  ``"random"``     large random outputs: Gaussian noise with a standard
                   deviation ``scale`` times the RMS of the honest outputs;
  ``"sign_flip"``  the negated true output (same magnitude, wrong direction);
  ``"plausible"``  the true output of another, honest, available worker: a
                   value that looks like a genuine model output, only at the
                   wrong evaluation point.

Everything is a pure function of a PRNG key and arrays, with fixed shapes, so
it can be ``jit``-ed and ``vmap``-ed over keys and masks.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcoded import adversaries
  >>> outputs = jnp.arange(12.0).reshape(6, 2)
  >>> bad = adversaries.random_adversary_mask(jax.random.key(0), 6, 2)
  >>> corrupted = adversaries.corrupt(jax.random.key(1), outputs, bad, "sign_flip")
  >>> bool(jnp.all(jnp.where(bad[:, None], -outputs, outputs) == corrupted))
  True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["MODELS", "corrupt", "random_adversary_mask"]

MODELS = ("random", "sign_flip", "plausible")


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def random_adversary_mask(
    key: jax.Array,
    num_workers: int,
    num_adversaries: int,
    available_mask: ArrayLike | None = None,
) -> jax.Array:
  """E adversaries drawn uniformly among the available workers.

  Every set of E available workers is equally likely. If fewer than E workers
  are available (only possible under jit), all available ones are chosen.

  Args:
    key: a JAX PRNG key.
    num_workers: N >= 1 (static).
    num_adversaries: E with 0 <= E <= N (static).
    available_mask: optional (N,) bool, the workers that returned; default all.

  Returns:
    (N,) bool, True for the E adversarial workers (a subset of the available).
  """
  if not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
    raise ValueError(f"random_adversary_mask: num_workers must be an integer >= 1, got {num_workers!r}.")
  if not isinstance(num_adversaries, (int, np.integer)) or not 0 <= num_adversaries <= num_workers:
    raise ValueError(
        f"random_adversary_mask: num_adversaries must be an integer in [0, {num_workers}], "
        f"got {num_adversaries!r}."
    )
  if available_mask is None:
    available = jnp.ones((num_workers,), bool)
  else:
    available = jnp.asarray(available_mask)
    if available.shape != (num_workers,) or available.dtype != jnp.bool_:
      raise ValueError(
          f"random_adversary_mask: available_mask must be ({num_workers},) bool, "
          f"got {available.shape} {available.dtype}."
      )
    if _is_concrete(available) and int(available.sum()) < num_adversaries:
      raise ValueError(
          f"random_adversary_mask: cannot choose {num_adversaries} adversaries among "
          f"{int(available.sum())} available workers."
      )
  # The E available workers with the smallest uniform scores.
  scores = jnp.where(available, jax.random.uniform(key, (num_workers,)), jnp.inf)
  rank = jnp.argsort(jnp.argsort(scores))
  return (rank < num_adversaries) & available


def corrupt(
    key: jax.Array,
    outputs: ArrayLike,
    adversary_mask: ArrayLike,
    model: str,
    *,
    available_mask: ArrayLike | None = None,
    scale: float = 100.0,
) -> jax.Array:
  """Replaces the adversaries' rows of ``outputs`` according to ``model``.

  Args:
    key: a JAX PRNG key.
    outputs: (N, ...) honest worker outputs.
    adversary_mask: (N,) bool, True for adversarial workers.
    model: one of ``MODELS``: "random", "sign_flip" or "plausible".
    available_mask: optional (N,) bool; "plausible" adversaries copy only
      available honest workers (a straggler's row holds no real output).
    scale: for "random", the noise's standard deviation in units of the RMS
      of the honest outputs.

  Returns:
    (N, ...) outputs, honest rows unchanged. A "plausible" adversary with no
    honest available worker to copy keeps its own output.
  """
  if model not in MODELS:
    raise ValueError(f"corrupt: unknown adversary model {model!r}; choose one of {MODELS}.")
  outputs, adversary_mask = jnp.asarray(outputs), jnp.asarray(adversary_mask)
  num_workers = adversary_mask.shape[0] if adversary_mask.ndim == 1 else None
  if num_workers is None or outputs.shape[:1] != (num_workers,) or adversary_mask.dtype != jnp.bool_:
    raise ValueError(
        f"corrupt: adversary_mask must be (N,) bool and outputs (N, ...), got "
        f"{adversary_mask.shape} {adversary_mask.dtype} and {outputs.shape}."
    )
  available = (
      jnp.ones((num_workers,), bool) if available_mask is None else jnp.asarray(available_mask, bool)
  )
  if available.shape != (num_workers,):
    raise ValueError(f"corrupt: available_mask must have shape ({num_workers},), got {available.shape}.")
  rows = adversary_mask.reshape((num_workers,) + (1,) * (outputs.ndim - 1))
  honest = available & ~adversary_mask

  if model == "sign_flip":
    replacement = -outputs
  elif model == "random":
    honest_rows = honest.reshape(rows.shape)
    squares = jnp.where(honest_rows, jnp.square(outputs), 0.0)
    count = jnp.maximum(jnp.sum(honest) * (outputs.size // num_workers), 1)
    rms = jnp.sqrt(jnp.sum(squares) / count)
    rms = jnp.where(rms > 0, rms, 1.0)
    float_dtype = outputs.dtype if jnp.issubdtype(outputs.dtype, jnp.floating) else jnp.zeros(()).dtype
    noise = jax.random.normal(key, outputs.shape, float_dtype)
    replacement = (scale * rms * noise).astype(outputs.dtype)
  else:  # "plausible"
    logits = jnp.where(honest, 0.0, -jnp.inf)
    source = jax.random.categorical(key, logits, shape=(num_workers,))
    source = jnp.where(jnp.any(honest), source, jnp.arange(num_workers))
    replacement = outputs[source]
  return jnp.where(rows, replacement, outputs)
