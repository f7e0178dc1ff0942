r"""Smoothing-spline coding (LeTCC) against Berrut coding on the same masks and groups.

  PYTHONPATH=. .venv/bin/python bench/bench_spline.py --base_workdir /work/runs/fmnist_lenet
  PYTHONPATH=. .venv/bin/python bench/bench_spline.py --base_workdir /tmp/fmnist \
      --stragglers=1 --num_masks=4 --fit_images=800 --worker_points=default   # a quick look

For K = 8 queries per group and S = 1, 2, 3 stragglers (N = K + S workers), the
two smoothings of ``schemes.spline.SplineCode`` are fitted with
``fit_smoothing`` on a held-out part of the TRAIN split (the last
``--fit_images`` images; only f's outputs are used, no labels), once per
worker-point family of ``--worker_points`` ("default": the points BerrutCode
uses, ``points.default_points``; "first_kind": N first-kind Chebyshev points);
the family with the lowest held-out RMSE is the selected spline code for that
S (marked "*"). Then Berrut coding (default points) and every fitted spline
code are evaluated on the whole test split (groups of K in the split's order)
under the same ``--num_masks`` random masks with exactly S stragglers.

Printed, as a Markdown table: top-1 accuracy against the labels (mean ± std
over masks), relative accuracy (argmax agreement with f on the same queries),
RMSE of the decoded logits against f(x_k), the RMSE ratio spline / Berrut
(NeRCC reports up to 23% lower MSE than BACC), the fitted smoothings and the
held-out RMSE they reached; then the machine, its load average and versions.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import environment  # bench/environment.py (bench/ is on sys.path when run as a script)
import jax
import jax.numpy as jnp
import numpy as np
import scipy
from absl import app, flags, logging
from flax import nnx

from jaxcoded import data, interp, stragglers, training
from jaxcoded.comparison import spline_fit
from jaxcoded.schemes import berrut, points

_BASE = flags.DEFINE_string("base_workdir", None, "Workdir of a trained base classifier.")
_K = flags.DEFINE_integer("group_size", 8, "K, queries per group.")
_STRAGGLERS = flags.DEFINE_list("stragglers", ["1", "2", "3"], "S values.")
_MASKS = flags.DEFINE_integer("num_masks", 16, "Random straggler masks per S (evaluation).")
_FIT_IMAGES = flags.DEFINE_integer("fit_images", 4000, "Held-out train images for the fit.")
_FIT_MASKS = flags.DEFINE_integer("fit_masks", 16, "Random masks per grid point in the fit.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the masks.")
_POINTS = flags.DEFINE_list("worker_points", ["default", "first_kind"], "Worker-point families.")
flags.mark_flag_as_required("base_workdir")

WORKER_POINTS = {
    "default": lambda k, n: points.default_points(k, n)[1],
    "first_kind": lambda k, n: interp.chebyshev_points(n, kind=1),
}


def worker_fn_of(model: nnx.Module):
  """The classifier as ``worker_fn(params, x)`` for one image, and its params."""
  eval_model = nnx.view(
      model, deterministic=True, use_running_average=True, raise_if_not_found=False
  )
  graphdef, state = nnx.split(eval_model)

  def worker_fn(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  return worker_fn, state


def evaluate(code, forward, groups, labels, reference, masks):
  """Per-mask accuracy, relative accuracy and RMSE of one code on all groups."""
  num_groups, k = labels.shape
  coded = jax.vmap(code.encode)(groups)  # (G, N, ...)
  outputs = forward(coded.reshape((-1,) + groups.shape[2:]))
  outputs = outputs.reshape((num_groups, code.num_workers) + outputs.shape[1:])
  decode = jax.jit(jax.vmap(jax.vmap(code.decode, in_axes=(None, 0)), in_axes=(0, None)))
  decoded = decode(outputs, masks)  # values (G, M, K, C)
  values = np.asarray(decoded.values)
  assert np.asarray(decoded.answered).all()
  predicted = values.argmax(-1)
  accuracy = (predicted == labels[:, None]).mean(axis=(0, 2))  # per mask
  relative = (predicted == reference.argmax(-1)[:, None]).mean(axis=(0, 2))
  rmse = np.sqrt(np.mean((values - reference[:, None]) ** 2))
  return accuracy, relative, rmse


def markdown_table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  print(environment.markdown(), flush=True)
  logging.set_verbosity(logging.WARNING)  # orbax's restore log
  start = time.time()
  model, config = training.load_model(_BASE.value)
  worker_fn, params = worker_fn_of(model)
  batched = jax.jit(jax.vmap(worker_fn, in_axes=(None, 0)))

  def forward(images, batch=2000):
    return np.concatenate(
        [np.asarray(batched(params, images[i : i + batch])) for i in range(0, len(images), batch)]
    )

  k = _K.value
  train = data.load(config.dataset, "train", seed=None)
  test = data.load(config.dataset, "test", seed=None)
  held_out = train.images[-_FIT_IMAGES.value :]
  num_groups = len(test.images) // k
  groups = jnp.asarray(test.images[: num_groups * k].reshape((num_groups, k) + test.images.shape[1:]))
  labels = np.asarray(test.labels[: num_groups * k]).reshape(num_groups, k)
  reference = forward(np.asarray(groups).reshape((-1,) + test.images.shape[1:]))
  reference = reference.reshape(num_groups, k, -1)
  base_accuracy = float((reference.argmax(-1) == labels).mean())

  rows = []
  for s in (int(v) for v in _STRAGGLERS.value):
    n = k + s
    masks = stragglers.random_masks(jax.random.key(1000 * _SEED.value + s), _MASKS.value, n, s)
    fits = {}
    for family in _POINTS.value:
      worker_points = WORKER_POINTS[family](k, n)
      fits[family] = (worker_points, spline_fit.fit_smoothing(
          worker_fn, params, held_out, k, s, num_masks=_FIT_MASKS.value,
          worker_points=worker_points, key=jax.random.key(7919 + 1000 * _SEED.value + s),
      ))
    selected = min(fits, key=lambda family: fits[family][1].rmse)
    berrut_result = evaluate(berrut.BerrutCode.create(k, s), forward, groups, labels, reference, masks)
    berrut_rmse = berrut_result[2]
    results = [("Berrut", "default", None, berrut_result)]
    for family, (worker_points, fit) in fits.items():
      code = fit.create(k, s, worker_points=worker_points)
      name = "spline (LeTCC)" + (" *" if family == selected else "")
      results.append((name, family, fit, evaluate(code, forward, groups, labels, reference, masks)))
    for name, family, fit, (accuracy, relative, rmse) in results:
      rows.append([
          s, n, name, family,
          f"{accuracy.mean():.3f} ± {accuracy.std():.3f}",
          f"{relative.mean():.3f}",
          f"{rmse:.3f}",
          f"{rmse / berrut_rmse:.3f}" if fit else "1",
          f"{fit.encoder_smoothing:.2g} / {fit.decoder_smoothing:.2g}" if fit else "-",
          f"{fit.rmse:.3f}" if fit else "-",
      ])
    print(f"S = {s} done ({time.time() - start:.0f} s)", flush=True)

  print()
  print(f"Base classifier {_BASE.value}: test accuracy {base_accuracy:.4f}; K = {k}, "
        f"{num_groups} test groups, {_MASKS.value} masks per S (the same for both codes); "
        f"smoothing fitted on the last {len(held_out)} train images with {_FIT_MASKS.value} "
        f"masks per grid point, grid {{0}} U 10^[-6, 1] in half decades; * = the worker "
        f"points with the lowest held-out RMSE.")
  print()
  print(markdown_table(
      ["S", "N", "code", "worker points", "accuracy", "relative accuracy", "RMSE (logits)",
       "RMSE / Berrut", "λ_e / λ_d", "held-out RMSE"],
      rows,
  ))
  print()
  print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'n/a'}), "
        f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())}; "
        f"python {sys.version.split()[0]}, jax {jax.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}; {time.time() - start:.0f} s wall.")


if __name__ == "__main__":
  app.run(main)
