"""The learned codes' fit-and-evaluate decode through one (K, N) matrix per mask.

``learned._masked_fit_decode`` fits the degree-(R - 1) polynomial through the
available (N, D) worker outputs by a Householder least-squares solve that
carries all D output columns through each of its R reflections (about
5 N R D FLOPs), then evaluates it at the K data points. The fitted values
are linear in the outputs: they are ``M @ outputs`` with M the (K, N)
``interp.polyfit_matrix`` of the mask, whose cost (a QR of the (N, R)
design, a back substitution with K right-hand sides, a (K, R) @ (R, N)
product) does not grow with D. Applying it costs 2 K N D. Same values to
rounding, same contract (stragglers' rows never read, nothing answered below
R); at the equal-resource K = 12 shapes (N = 13..15, R = 11, D = 64) it
takes the master from 9.9 / 10.1 / 10.4% of f per query to 9.4 / 9.7 / 9.9%
(docs/performance.md, counted with every loop iteration), so no retraining is
needed: the trained code decodes to the same logits.

The matrix depends on the mask only, so a decoder that sees many groups with
one straggler pattern can build it once (``decoding_matrix``) and apply it to
every group; the count above builds it for every group.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcoded import interp

__all__ = ["decoding_matrix", "masked_matrix_decode"]


def decoding_matrix(
    mask: ArrayLike, worker_points: ArrayLike, data_points: ArrayLike, threshold: int
) -> tuple[jax.Array, jax.Array]:
  """(K, N) least-squares fit of degree R - 1 through the available worker points, at a_k.

  Args:
    mask: (N,) bool, True where the worker returned.
    worker_points: (N,) b_n.
    data_points: (K,) a_k.
    threshold: R, the number of outputs the fit needs (degree R - 1).

  Returns:
    ``(matrix, enough)``: the (K, N) matrix (columns of absent workers are
    zero; a full mask's matrix when fewer than R returned, so that it stays
    finite) and a bool scalar, at least R returned.
  """
  mask = jnp.asarray(mask)
  enough = jnp.sum(mask) >= threshold
  safe_mask = jnp.where(enough, mask, True)
  matrix = interp.polyfit_matrix(worker_points, data_points, threshold - 1, safe_mask)
  return matrix, enough


def masked_matrix_decode(
    outputs: ArrayLike, mask: ArrayLike, worker_points, data_points, threshold: int
) -> tuple[jax.Array, jax.Array]:
  """Drop-in for ``learned._masked_fit_decode``: the fit through a (K, N) matrix.

  Args:
    outputs: (N, ...) worker outputs; rows of absent workers are never read.
    mask: (N,) bool.
    worker_points: (N,) b_n.
    data_points: (K,) a_k.
    threshold: R.

  Returns:
    ``(values, enough)``: (K, ...) fitted values at the a_k (zeros when fewer
    than R returned) and the bool scalar ``enough``.
  """
  matrix, enough = decoding_matrix(mask, worker_points, data_points, threshold)
  values = interp.apply_matrix(matrix.astype(jnp.result_type(matrix, outputs)), outputs)
  return jnp.where(enough, values, jnp.zeros((), values.dtype)), enough
