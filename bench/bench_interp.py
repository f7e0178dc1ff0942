"""Encoding and decoding cost of the coding matrices, and decoding accuracy, as N grows.

Run by hand from the repository root (CPU is fine; the machine is shared, so
every timing is reported as a ratio to another one measured in the same run,
the median of interleaved repeats):

  .venv/bin/python bench/bench_interp.py                 # everything (about 10 minutes)
  .venv/bin/python bench/bench_interp.py --quick         # N = 8, 32, a few seconds
  .venv/bin/python bench/bench_interp.py --only encode   # or decode, compile, accuracy

Tables (docs/design.md sections 2-3 for the notation):

1. Encode: Berrut, K = 8, S = 2 (N = 10; ``--encode_queries``,
   ``--encode_stragglers``), G = 16 and 256 groups (``--encode_groups``),
   ``jit(vmap(code.encode))`` against the same GEMM on a pre-transposed input,
   (N, K) @ (K, G P), for every query layout the library encodes: (28, 28, 1),
   (32, 32, 3), (28, 28) and flat (784,); also apply_matrix's GEMM route
   for every layout and the vmapped ``einsum`` before it (``old_apply``).
   Outputs above 32 MiB (K = 12, G = 256, (32, 32, 3): 45 MiB) are fresh
   ``mmap`` pages for glibc's malloc on every call, which the kernel zeroes
   on first touch (the page-fault column) for the GEMM and the encode alike;
   ``--recycle_buffers`` keeps them in the heap, to time the arithmetic alone.
2. Decode: N workers at Chebyshev points of the second kind, K = N/2 queries
   at first-kind points, S = N/4 random stragglers, a different mask per
   group, 256 groups of (10,) outputs (logits). Lagrange (degree R - 1 through
   the R available workers), polyfit of degree d = min(N/4, 31), Berrut:
   the previous decoder (the (K, N) matrix of each group's mask, then
   ``old_apply``), the current one (``interp.*_interpolate``: no per-group
   matrix) and a per-group numpy float64 loop.
3. Compile: ``polyfit`` at N = 512, d = 31 and d = K - 1 = 255, seconds to
   compile the batched decoder, and milliseconds per group, previous against
   current.
4. Accuracy: decoding ten smooth outputs f_c(z) = exp(sin(3 z + c / 2)),
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

import environment  # bench/environment.py (bench/ is on sys.path when run as a script)
import jax
import timing  # bench/timing.py (bench/ is on sys.path when run as a script)
from timing import interleaved

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.interpolate import BarycentricInterpolator  # noqa: E402

from jaxcoded import interp, schemes  # noqa: E402
from jaxcoded.interp import apply as interp_apply  # noqa: E402
from jaxcoded.interp import decoders as interp_decoders  # noqa: E402
from jaxcoded.interp import matrices as interp_matrices  # noqa: E402

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


# ---------------------------------------------------------------------------
# The previous formulation, kept as the reference for the ratios.


def old_apply(matrix, values):
  """The previous ``interp.apply_matrix``: an einsum along the leading axis.

  Under vmap with one matrix for all groups it compiles to transpose, dot,
  transpose; with a matrix per group, to a batched dot.
  """
  used = jnp.any(matrix != 0, axis=-2)
  values = jnp.where(used.reshape(used.shape + (1,) * (values.ndim - 1)), values, 0.0)
  return jnp.einsum("tn,n...->t...", matrix, values.astype(matrix.dtype))


def matrix_fn(method: str, degree: int):
  if method == "lagrange":
    return interp.lagrange_matrix
  if method == "berrut":
    return interp.berrut_matrix
  return lambda nodes, targets, mask: interp.polyfit_matrix(nodes, targets, degree, mask)


def interpolate_fn(method: str, degree: int):
  if method == "lagrange":
    return interp.lagrange_interpolate
  if method == "berrut":
    return interp.berrut_interpolate
  return lambda nodes, values, targets, mask: interp.polyfit_interpolate(
      nodes, values, targets, degree, mask)


def batched_decoder(method: str, degree: int, previous: bool = False):
  """jit(vmap over groups) of one group's decode: (nodes, targets, masks, values) -> (G, K, ...)."""
  if previous:
    build = matrix_fn(method, degree)
    one = lambda nodes, targets, mask, y: old_apply(build(nodes, targets, mask), y)
  else:
    fit = interpolate_fn(method, degree)
    one = lambda nodes, targets, mask, y: fit(nodes, y, targets, mask)
  return jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0)))


def numpy_decoder(method: str, degree: int):
  """A per-group numpy float64 loop: each group's (K, N) matrix, then a matmul."""

  def decode(nodes, targets, masks, values):
    out = np.empty((masks.shape[0], targets.size) + values.shape[2:])
    for g, mask in enumerate(masks):
      xa = nodes[mask]
      if method == "polyfit":
        lo, hi = min(nodes.min(), targets.min()), max(nodes.max(), targets.max())
        unit = lambda x: (2 * x - (hi + lo)) / (hi - lo)
        design = np.polynomial.chebyshev.chebvander(unit(xa), degree)
        coefficients = np.linalg.lstsq(design, values[g][mask], rcond=None)[0]
        out[g] = np.polynomial.chebyshev.chebvander(unit(targets), degree) @ coefficients
        continue
      if method == "lagrange":
        diff = xa[:, None] - xa[None, :]
        np.fill_diagonal(diff, 1.0)
        logs = -np.log(np.abs(diff)).sum(axis=1)
        weights = np.where((diff < 0).sum(axis=1) % 2, -1.0, 1.0) * np.exp(logs - logs.max())
      else:
        weights = np.empty(xa.size)
        weights[np.argsort(xa)] = (-1.0) ** np.arange(xa.size)
      terms = weights / (targets[:, None] - xa[None, :])
      out[g] = (terms / terms.sum(axis=1, keepdims=True)) @ values[g][mask]
    return out

  return decode


# ---------------------------------------------------------------------------
# Tables.


ENCODE_SHAPES = ((28, 28, 1), (32, 32, 3), (28, 28), (784,))


def gemm_path_apply(matrix, values):
  """``interp.apply_matrix`` forced onto its GEMM route (its only route before the
  multiply-add forms): flatten, one (batched) dot, reshape."""
  flat = values.reshape(values.shape[:1] + (-1,))
  return interp_apply._apply_dot(matrix, flat).reshape(matrix.shape[:1] + values.shape[1:])


def encode_table(group_counts, repeats: int, rng, num_queries: int = 8,
                 num_stragglers: int = 2, buffer_note: str = "glibc's default malloc"
                 ) -> Iterator[str]:
  code = schemes.BerrutCode.create(num_queries, num_stragglers, dtype=jnp.float32)
  k, n = code.num_queries, code.num_workers
  matrix = interp.berrut_matrix(code.data_points, code.worker_points)
  yield (f"Berrut encode, K = {k}, N = {n}, float32, ``jit(vmap(code.encode))`` on (G, K, ...) "
         f"queries; median of {repeats} interleaved repeats of 5 calls (min in brackets); ratios "
         "to the same GEMM (N, K) @ (K, G P) on a pre-transposed input (same dtype, FLOPs and "
         "output size). \"GEMM route\": apply_matrix's batched dot for every layout (the code "
         "before the multiply-add forms); \"einsum\": the formulation before that. Faults: "
         "minor page faults per call of the GEMM, current and GEMM route (4 KiB pages the "
         f"kernel zeroes for a fresh output buffer; {buffer_note}); CPU / wall: CPU seconds of "
         "the process per second of their calls (1: one core; 2: both), over 0.25 s more of "
         "each.\n")
  yield ("| query shape | G | GEMM ms | current ms | current / GEMM | GEMM route / GEMM | "
         "einsum / GEMM | faults (GEMM, current, route) | CPU / wall (GEMM, current, route) |")
  yield "|---|---|---|---|---|---|---|---|---|"
  for groups in group_counts:
    for shape in ENCODE_SHAPES:
      size = int(np.prod(shape))
      queries = jnp.asarray(rng.normal(size=(groups, k, *shape)), jnp.float32)
      transposed = jnp.asarray(rng.normal(size=(k, groups * size)), jnp.float32)
      gemm = jax.jit(lambda m, x: m @ x)
      previous = jax.jit(jax.vmap(lambda q: old_apply(matrix, q)))
      gemm_route = jax.jit(jax.vmap(lambda q: gemm_path_apply(matrix, q)))
      current = jax.jit(jax.vmap(code.encode))
      np.testing.assert_allclose(previous(queries), current(queries), rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(gemm_route(queries), current(queries), rtol=1e-5, atol=1e-5)
      seconds, fastest = interleaved_with_min({
          "gemm": lambda: gemm(matrix, transposed),
          "previous": lambda: previous(queries),
          "gemm_route": lambda: gemm_route(queries),
          "current": lambda: current(queries),
      }, repeats, calls=5)
      ratio = lambda name: (f"{seconds[name] / seconds['gemm']:.2f} "  # noqa: E731
                            f"({fastest[name] / fastest['gemm']:.2f})")
      costs = [timing.process_cost(fn) for fn in (
          lambda: gemm(matrix, transposed), lambda: current(queries), lambda: gemm_route(queries))]
      yield (f"| {shape} | {groups} | {1e3 * seconds['gemm']:.3f} | "
             f"{1e3 * seconds['current']:.3f} | **{ratio('current')}** | {ratio('gemm_route')} | "
             f"{ratio('previous')} | {', '.join(f'{f:.0f}' for f, _ in costs)} | "
             f"{', '.join(f'{c:.1f}' for _, c in costs)} |")


def interleaved_with_min(functions, repeats: int, calls: int):
  """``timing.interleaved``'s medians, and the fastest repeat of each (seconds per call)."""
  times = timing.interleaved_times(functions, repeats, calls)
  return ({name: float(np.median(t)) for name, t in times.items()},
          {name: float(np.min(t)) for name, t in times.items()})


def decode_table(sizes, groups: int, repeats: int, rng, dtype=jnp.float32) -> Iterator[str]:
  yield (f"Decode, {groups} groups (a different mask each), outputs ({NUM_OUTPUTS},), "
         f"{jnp.dtype(dtype).name}; median of {repeats} interleaved repeats (numpy: float64 "
         "loop over groups):\n")
  yield ("| N | K | S | method | previous ms | current ms | numpy loop ms | "
         "previous / current | numpy / current |")
  yield "|---|---|---|---|---|---|---|---|---|"
  for n in sizes:
    k, s, degree = problem(n)
    nodes64 = worker_points(n, "chebyshev")
    targets64 = np.asarray(interp.chebyshev_points(k, kind=1, dtype=jnp.float64))
    nodes, targets = jnp.asarray(nodes64, dtype), jnp.asarray(targets64, dtype)
    masks_np = random_masks(rng, groups, n, s)
    values_np = rng.normal(size=(groups, n, NUM_OUTPUTS))
    masks, values = jnp.asarray(masks_np), jnp.asarray(values_np, dtype)
    for method in METHODS:
      previous = batched_decoder(method, degree, previous=True)
      current = batched_decoder(method, degree)
      loop = numpy_decoder(method, degree)
      seconds = interleaved({
          "previous": lambda: previous(nodes, targets, masks, values),
          "current": lambda: current(nodes, targets, masks, values),
          "numpy": lambda: loop(nodes64, targets64, masks_np, values_np),
      }, repeats)
      name = f"polyfit d={degree}" if method == "polyfit" else method
      now = seconds["current"]
      yield (f"| {n} | {k} | {s} | {name} | {1e3 * seconds['previous']:.2f} | {1e3 * now:.2f} | "
             f"{1e3 * seconds['numpy']:.2f} | {seconds['previous'] / now:.1f} | "
             f"{seconds['numpy'] / now:.1f} |")


def _loop_vandermonde(x, degree):
  """The previous ``interp.matrices._chebyshev_vandermonde``: the recurrence as a Python loop.

  XLA fuses its d steps into one expression, and compile time grows about
  quadratically with d (the ~70-100 s compiles at N = 512, d = R - 1).
  """
  columns = [jnp.ones_like(x)]
  if degree >= 1:
    columns.append(x)
  for _ in range(2, degree + 1):
    columns.append(2 * x * columns[-1] - columns[-2])
  return jnp.stack(columns, axis=-1)


def compile_table(n: int, groups: int, repeats: int, rng) -> Iterator[str]:
  k, s, _ = problem(n)
  yield (f"polyfit decode at N = {n}, K = {k}, S = {s}: seconds to lower and compile the "
         "batched decoder (points as arguments, as above), and the median per-group cost of "
         f"{repeats} interleaved runs. Previous: polyfit_matrix (QR, Q, solve, matrix per mask) "
         "with the Chebyshev recurrence as a Python loop, then the einsum; current: "
         "polyfit_interpolate (householder_lstsq on [design | values], recurrence in a scan). "
         f"d = 31 with {groups} groups; d = K - 1 = {k - 1} (LCC's fit degree for a linear "
         "worker, R = K) with 32 groups, float32 only:\n")
  yield "| dtype | d | groups | formulation | compile s | ms / group |"
  yield "|---|---|---|---|---|---|"
  cases = [(jnp.float32, min(n // 4, MAX_FIT_DEGREE), groups),
           (jnp.float64, min(n // 4, MAX_FIT_DEGREE), groups),
           (jnp.float32, k - 1, 32)]
  for dtype, degree, count in cases:
    nodes = jnp.asarray(worker_points(n, "chebyshev"), dtype)
    targets = interp.chebyshev_points(k, kind=1, dtype=dtype)
    masks = jnp.asarray(random_masks(rng, count, n, s))
    values = jnp.asarray(rng.normal(size=(count, n, NUM_OUTPUTS)), dtype)
    compiled, seconds = {}, {}
    for label, previous in (("previous", True), ("current", False)):
      decoder = batched_decoder("polyfit", degree, previous=previous)
      current_vandermonde = interp_matrices._chebyshev_vandermonde
      if previous:  # traced with the old recurrence, wherever the fit reads it
        interp_matrices._chebyshev_vandermonde = _loop_vandermonde
        interp_decoders._chebyshev_vandermonde = _loop_vandermonde
      try:
        start = time.perf_counter()
        compiled[label] = decoder.lower(nodes, targets, masks, values).compile()
        seconds[label] = time.perf_counter() - start
      finally:
        interp_matrices._chebyshev_vandermonde = current_vandermonde
        interp_decoders._chebyshev_vandermonde = current_vandermonde
    np.testing.assert_allclose(compiled["previous"](nodes, targets, masks, values),
                               compiled["current"](nodes, targets, masks, values),
                               rtol=1e-3, atol=1e-3)
    runs = interleaved({label: (lambda c=c: c(nodes, targets, masks, values))
                        for label, c in compiled.items()}, repeats)
    for label, run in runs.items():
      yield (f"| {jnp.dtype(dtype).name} | {degree} | {count} | {label} | {seconds[label]:.1f} | "
             f"{1e3 * run / count:.2f} |")


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
  yield ("Decoding accuracy (current decoders) for f_c(z) = exp(sin(3 z + c / 2)), c = 0..9 "
         "(Lagrange through all N workers; polyfit and Berrut with S stragglers):\n")
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
  parser.add_argument("--encode_groups", default="16,256",
                      help="comma-separated G of the encode table")
  parser.add_argument("--encode_queries", type=int, default=8, help="K of the encode table")
  parser.add_argument("--encode_stragglers", type=int, default=2, help="S of the encode table")
  parser.add_argument("--sizes", default=None,
                      help="comma-separated N of the decode and accuracy tables")
  parser.add_argument("--only", choices=("encode", "decode", "compile", "accuracy"),
                      help="print one table only")
  parser.add_argument("--recycle_buffers", action="store_true",
                      help="keep freed buffers in malloc's heap (timing.recycle_buffers) so that "
                           "large outputs are not fresh pages zeroed by the kernel on every call")
  args = parser.parse_args()
  sizes = (8, 32) if args.quick else (8, 32, 128, 512)
  if args.sizes:
    sizes = tuple(int(x) for x in args.sizes.split(","))
  encode_groups = [int(g) for g in args.encode_groups.split(",")]
  if args.quick:
    encode_groups = [min(g, 16) for g in encode_groups[:1]]
  groups = min(args.groups, 16) if args.quick else args.groups
  repeats = max(5, min(args.repeats, 5) if args.quick else args.repeats)
  num_masks = min(args.masks, 2) if args.quick else args.masks
  rng = np.random.default_rng(args.seed)
  buffer_note = "glibc's default malloc"
  if args.recycle_buffers:
    timing.recycle_buffers()
    buffer_note = "--recycle_buffers: freed buffers kept in malloc's heap"

  print(environment.markdown())
  tables = {
      "encode": lambda: encode_table(encode_groups, repeats, rng, args.encode_queries,
                                     args.encode_stragglers, buffer_note),
      "decode": lambda: decode_table(sizes, groups, repeats, rng),
      "compile": lambda: compile_table(sizes[-1], groups, 5, rng),
      "accuracy": lambda: accuracy_table(sizes, num_masks, rng),
  }
  for name, table in tables.items():
    if args.only in (None, name):
      for line in table():
        print(line, flush=True)
      print()


if __name__ == "__main__":
  main()
