"""Decoding cost and accuracy of the interpolation matrices as N grows.

Run by hand (CPU is fine; numbers are noisy on a shared machine, so the times
are also reported as ratios to the smallest N):

  /work/venv/bin/python bench/bench_interp.py           # N = 8, 32, 128, 512
  /work/venv/bin/python bench/bench_interp.py --quick   # N = 8, 32, a few seconds

Setting (docs/design.md sections 2-3): N workers at Chebyshev points of the second
kind, K = N/2 queries at Chebyshev points of the first kind, S = N/4 random
stragglers, R = N - S available workers. One decode of a *batch* of groups
builds the (K, N) matrix for each group's mask (``vmap`` over masks) and applies
it to the workers' outputs of trailing shape (10,) (logits).

Table 1 (cost): median wall time of one jitted decode of the whole batch after a
warm-up, for Lagrange (degree R - 1 through the available workers), polyfit of
a moderate degree d = min(N/4, 31) (least squares through the R available
workers), and Berrut.

Table 2 (accuracy): decoding ten smooth outputs f_c(z) = exp(sin(3 z + c / 2)),
max over outputs, queries and masks of
  * "vs f64 ref": |jaxcoded - float64 reference of the same interpolant|
    (scipy BarycentricInterpolator, numpy chebfit/chebval, a direct Berrut
    formula), i.e. the rounding error of the implementation;
  * "vs f": |jaxcoded in float64 - f(a_k)|, the approximation error of the code;
for equally spaced versus Chebyshev worker points.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.interpolate import BarycentricInterpolator  # noqa: E402

from jaxcoded import interp  # noqa: E402

NUM_OUTPUTS = 10
MAX_FIT_DEGREE = 31
METHODS = ("lagrange", "polyfit", "berrut")


def smooth_outputs(z: np.ndarray) -> np.ndarray:
  """(len(z), NUM_OUTPUTS) values of f_c(z) = exp(sin(3 z + c / 2))."""
  return np.exp(np.sin(3 * z[:, None] + 0.5 * np.arange(NUM_OUTPUTS)[None, :]))


def problem(n: int) -> tuple[int, int, int]:
  """(K, S, fit degree) for N workers."""
  k, s = max(1, n // 2), n // 4
  return k, s, min(n // 4, MAX_FIT_DEGREE)


def worker_points(n: int, spacing: str) -> np.ndarray:
  if spacing == "chebyshev":
    return np.asarray(interp.chebyshev_points(n, kind=2, dtype=jnp.float64))
  return np.linspace(-1.0, 1.0, n)


def random_masks(rng: np.random.Generator, groups: int, n: int, s: int) -> np.ndarray:
  masks = np.ones((groups, n), dtype=bool)
  for mask in masks:
    mask[rng.choice(n, s, replace=False)] = False
  return masks


def matrix_fn(method: str, degree: int):
  if method == "lagrange":
    return interp.lagrange_matrix
  if method == "berrut":
    return interp.berrut_matrix
  return lambda nodes, targets, mask: interp.polyfit_matrix(nodes, targets, degree, mask)


def batched_decoder(method: str, degree: int):
  """jit(vmap over groups) of: build the mask's decoding matrix, apply it."""
  build = matrix_fn(method, degree)

  @jax.jit
  def decode(nodes, targets, masks, values):
    one = lambda mask, y: interp.apply_matrix(build(nodes, targets, mask), y)
    return jax.vmap(one)(masks, values)

  return decode


# ---------------------------------------------------------------------------
# Cost.


def time_decode(method, n, dtype, groups, repeats, rng) -> float:
  """Median seconds of one batched decode (after a warm-up call)."""
  k, s, degree = problem(n)
  nodes = jnp.asarray(worker_points(n, "chebyshev"), dtype)
  targets = interp.chebyshev_points(k, kind=1, dtype=dtype)
  masks = jnp.asarray(random_masks(rng, groups, n, s))
  values = jnp.asarray(rng.normal(size=(groups, n, NUM_OUTPUTS)), dtype)
  decode = batched_decoder(method, degree)
  decode(nodes, targets, masks, values).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    decode(nodes, targets, masks, values).block_until_ready()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def cost_table(sizes, groups, repeats, rng) -> Iterator[str]:
  """Markdown rows, yielded as they are measured."""
  yield f"| N | K | S | fit d | dtype | method | ms / batch of {groups} | us / group | ratio to N = {sizes[0]} |"
  yield "|---|---|---|---|---|---|---|---|---|"
  for dtype in (jnp.float32, jnp.float64):
    for method in METHODS:
      base = None
      for n in sizes:
        k, s, degree = problem(n)
        seconds = time_decode(method, n, dtype, groups, repeats, rng)
        base = base or seconds
        yield (
            f"| {n} | {k} | {s} | {degree if method == 'polyfit' else '-'} | "
            f"{jnp.dtype(dtype).name} | {method} | {1e3 * seconds:.2f} | "
            f"{1e6 * seconds / groups:.1f} | {seconds / base:.1f} |"
        )


# ---------------------------------------------------------------------------
# Accuracy.


def reference_matrix(method: str, nodes, targets, mask, degree) -> np.ndarray:
  """float64 (K, N) reference, independent of jaxcoded."""
  xa = nodes[mask]
  if method == "lagrange":
    sub = BarycentricInterpolator(xa, np.eye(xa.size))(targets)
  elif method == "polyfit":
    lo, hi = min(nodes.min(), targets.min()), max(nodes.max(), targets.max())
    to_unit = lambda x: (2 * x - (hi + lo)) / (hi - lo)
    coeffs = np.polynomial.chebyshev.chebfit(to_unit(xa), np.eye(xa.size), degree)
    sub = np.polynomial.chebyshev.chebval(to_unit(targets), coeffs).T
  else:
    signs = np.empty(xa.size)
    signs[np.argsort(xa)] = (-1.0) ** np.arange(xa.size)
    terms = signs / (targets[:, None] - xa[None, :])
    sub = terms / terms.sum(axis=1, keepdims=True)
  full = np.zeros((targets.size, nodes.size))
  full[:, mask] = sub
  return full


def decode_errors(method, n, spacing, num_masks, rng) -> tuple[float, float, float]:
  """(float32 vs ref, float64 vs ref, float64 vs f), maxima over masks, queries, outputs."""
  k, s, degree = problem(n)
  nodes = worker_points(n, spacing)
  targets = np.asarray(interp.chebyshev_points(k, kind=1, dtype=jnp.float64))
  outputs = smooth_outputs(nodes)
  truth = smooth_outputs(targets)
  stragglers = 0 if method == "lagrange" else s
  masks = random_masks(rng, num_masks, n, stragglers)
  decode = batched_decoder(method, degree)
  errors = []  # (f32 vs ref, f64 vs ref, f64 vs f) per mask; np.max keeps a NaN visible
  with np.errstate(all="ignore"):  # equally spaced Lagrange overflows on purpose at large N
    for mask in masks:
      reference = reference_matrix(method, nodes, targets, mask, degree) @ outputs
      decoded = [
          np.asarray(
              decode(
                  jnp.asarray(nodes, dtype), jnp.asarray(targets, dtype),
                  jnp.asarray(mask[None]), jnp.asarray(outputs[None], dtype),
              )[0],
              np.float64,
          )
          for dtype in (np.float32, np.float64)
      ]
      errors.append([
          np.max(np.abs(decoded[0] - reference)),
          np.max(np.abs(decoded[1] - reference)),
          np.max(np.abs(decoded[1] - truth)),
      ])
  return tuple(np.max(np.asarray(errors), axis=0))


def accuracy_table(sizes, num_masks, rng) -> Iterator[str]:
  """Markdown rows, yielded as they are measured."""
  yield "| N | workers at | method | stragglers | f32 vs f64 ref | f64 vs f64 ref | f64 vs f |"
  yield "|---|---|---|---|---|---|---|"
  for spacing in ("equispaced", "chebyshev"):
    for method in METHODS:
      for n in sizes:
        _, s, degree = problem(n)
        name = f"polyfit d={degree}" if method == "polyfit" else method
        stragglers = 0 if method == "lagrange" else s
        errs = decode_errors(method, n, spacing, num_masks, rng)
        yield (
            f"| {n} | {spacing} | {name} | {stragglers} | "
            + " | ".join(f"{e:.1e}" for e in errs) + " |"
        )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny run: N = 8, 32, few repeats")
  parser.add_argument("--groups", type=int, default=256, help="groups (masks) decoded at once")
  parser.add_argument("--repeats", type=int, default=7, help="timed repeats after a warm-up")
  parser.add_argument("--masks", type=int, default=8, help="masks per accuracy measurement")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--only", choices=("cost", "accuracy"), help="print one table only")
  args = parser.parse_args()
  sizes = (8, 32) if args.quick else (8, 32, 128, 512)
  groups = min(args.groups, 16) if args.quick else args.groups
  repeats = min(args.repeats, 3) if args.quick else args.repeats
  num_masks = min(args.masks, 2) if args.quick else args.masks
  rng = np.random.default_rng(args.seed)

  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, K = N/2, S = N/4, "
        f"outputs of shape ({NUM_OUTPUTS},)\n")
  if args.only != "accuracy":
    print("Decoding cost (build the masked matrix and apply it, vmapped over groups):\n")
    for line in cost_table(sizes, groups, repeats, rng):
      print(line, flush=True)
  if args.only == "cost":
    return
  print("\nDecoding accuracy for f_c(z) = exp(sin(3 z + c / 2)), c = 0..9 "
        "(Lagrange through all N workers; polyfit and Berrut with S stragglers):\n")
  for line in accuracy_table(sizes, num_masks, rng):
    print(line, flush=True)


if __name__ == "__main__":
  main()
