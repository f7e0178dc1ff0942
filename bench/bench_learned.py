"""Learned codes on Fashion-MNIST: accuracy at S stragglers, master budget, per-node load.

Run from the repository root (CPU: a few minutes per variant):

  # per-node FLOPs/bytes and the master budget of each variant (no training)
  PYTHONPATH=. python bench/bench_learned.py --mode=load
  # coding overhead: (encode + decode) / worker compute of the learned
  # polynomial code (untrained, configs/coder_fmnist_k8_equal.py's networks),
  # the current encoder and decoder against the previous formulation
  PYTHONPATH=. python bench/bench_learned.py --mode=overhead
  # train and evaluate the variants (sharing one base LeNet-5 workdir)
  PYTHONPATH=. python bench/bench_learned.py --mode=train --base_workdir=/tmp/fmnist_lenet \
      --out=/tmp/bench_learned --variants=k8,k8_features3

Each variant is a config of configs/ with overrides; results go to
<out>/<variant>/results.json and a Markdown table is printed.
"""

from __future__ import annotations

import json
import os

import environment  # bench/environment.py (bench/ is on sys.path when run as a script)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from timing import interleaved  # bench/timing.py

from configs import (
  coder_fmnist_k4,
  coder_fmnist_k8,
  coder_fmnist_k8_equal,
  coder_fmnist_k8_lagrange,
  coder_fmnist_k12,
)
from jaxcoded import interp, load, models, stragglers, training

_MODE = flags.DEFINE_enum("mode", "load", ["load", "train", "overhead"], "What to measure.")
_GROUPS = flags.DEFINE_list("groups", ["1", "16", "64"], "Groups coded at once (overhead mode).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Interleaved timed repeats (overhead mode).")
_VARIANTS = flags.DEFINE_list("variants", None, "Variant names (default: all).")
_OUT = flags.DEFINE_string("out", "/tmp/bench_learned", "Workdirs of the trained variants.")
_BASE = flags.DEFINE_string("base_workdir", "/tmp/fmnist_lenet", "Shared base classifier workdir.")
_STEPS = flags.DEFINE_integer("num_steps", 0, "Override num_steps (0: the config's).")


def _with(module, **overrides):
  config = module.get_config()
  config.update(overrides)
  return config


# The master budget curve: more master compute = more per-query encoder features.
VARIANTS = {
    "k8": lambda: _with(coder_fmnist_k8),
    "k8_features3": lambda: _with(coder_fmnist_k8, encoder_features=3),
    "k8_features15": lambda: _with(coder_fmnist_k8, encoder_features=15, master_budget=0.25),
    # A wider worker network (about 3.5x LeNet-5's FLOPs per worker).
    "k8_wide": lambda: _with(coder_fmnist_k8, worker_features=(32, 64)),
    # dh = 4 (two square layers) with de = 1: R = 5, more expressive workers.
    "k8_deg4": lambda: _with(coder_fmnist_k8, encoder_degree=1, num_activations=2),
    # The budget curve's ends: the cheapest master of this code shape (4.1%:
    # the linear encoder alone costs about 3.6%, so 2% is out of reach at K = 8,
    # de = 3) and a master nearly as heavy as the base classifier (86.5%).
    "k8_head16": lambda: _with(coder_fmnist_k8, head_hidden=16, master_budget=0.05),
    "k8_features64": lambda: _with(coder_fmnist_k8, encoder_features=64, master_budget=1.0),
    # Training-limited (train accuracy = test accuracy): the wide worker, 4x longer.
    "k8_wide_long": lambda: _with(coder_fmnist_k8, worker_features=(32, 64), num_steps=12000),
    "k12_wide_long": lambda: _with(coder_fmnist_k12, worker_features=(32, 64), num_steps=12000),
    "k8_lagrange": lambda: _with(coder_fmnist_k8_lagrange),
    "k12": lambda: _with(coder_fmnist_k12),
    "k4": lambda: _with(coder_fmnist_k4),
}


def measure_load(name, config):
  train_shape = models.INPUT_SHAPES[config.base.model]
  classifier = models.create(config.base.model, rngs=nnx.Rngs(0))
  code = training.coder.build_code(config, train_shape, 10, classifier=classifier,
                                   rngs=nnx.Rngs(0))
  base = models.flops_per_example(config.base.model, model_kwargs=config.base.get("model_kwargs"))
  loads = [load.code_load(code, d, base) for d in ("A", "B")]
  print(f"\n### {name}: K = {code.num_queries}, N = {code.num_workers}, "
        f"R = {code.recovery_threshold}, master budget (A) {100 * loads[0].master_fraction:.1f}% "
        f"(declared {100 * config.master_budget:.0f}%)\n")
  print(load.format_load_table(loads))


# ---------------------------------------------------------------------------
# Coding overhead of the learned polynomial code.


def _old_encode(code, queries):
  """The previous formulation (reference for the ratio): two einsums.

  The per-channel mixing as an einsum batched over the channel axis, and
  e(b_n) as ``einsum("tj,j...->t...")``: XLA transposes the data around both.
  """
  encoder = code.encoder
  phi = jnp.tile(encoder.features(queries), (1, 1, 1, encoder.num_groups))
  coefficients = jnp.einsum("jmc,mhwc->jhwc", encoder.mixing[...], phi)
  at = code.worker_points[...]
  power = at[:, None] ** jnp.arange(encoder.degree + 1, dtype=at.dtype)[None, :]
  return jnp.einsum("tj,j...->t...", power, coefficients)


def _old_apply(matrix, values):
  used = jnp.any(matrix != 0, axis=-2)
  values = jnp.where(used.reshape(used.shape + (1,) * (values.ndim - 1)), values, 0.0)
  return jnp.einsum("tn,n...->t...", matrix, values)


def _old_decode(code, outputs, mask):
  """The previous decoder: a (K, N) polyfit matrix per mask, then an einsum."""
  threshold = code.interpolation_threshold
  enough = jnp.sum(mask) >= threshold
  safe_mask = jnp.where(enough, mask, True)
  matrix = interp.polyfit_matrix(
      code.worker_points[...], code.data_points[...], threshold - 1, safe_mask)
  logits = code.head(_old_apply(matrix, jnp.where(mask[:, None], outputs, 0.0)))
  return jnp.where(enough, logits, 0.0)


def measure_overhead(group_counts, repeats: int) -> None:
  """(encode + decode) / worker compute, now and with the previous formulation."""
  config = coder_fmnist_k8_equal.get_config()
  shape = models.INPUT_SHAPES[config.base.model]
  code = training.coder.build_code(config, shape, 10, rngs=nnx.Rngs(0))
  k, n, r = code.num_queries, code.num_workers, code.recovery_threshold
  worker_fn, params = code.worker_fn()
  run = jax.jit(jax.vmap(jax.vmap(worker_fn, in_axes=(None, 0)), in_axes=(None, 0)))
  encode = jax.jit(jax.vmap(code.encode))
  decode = jax.jit(jax.vmap(lambda y, m: code.decode(y, m).values))
  old_encode = jax.jit(jax.vmap(lambda q: _old_encode(code, q)))
  old_decode = jax.jit(jax.vmap(lambda y, m: _old_decode(code, y, m)))
  print(f"Learned polynomial code, configs/coder_fmnist_k8_equal.py networks (untrained): "
        f"K = {k}, N = {n}, R = {r}, G groups of Fashion-MNIST-shaped queries, "
        f"{n - r} random stragglers per group; median of {repeats} interleaved repeats, "
        "each jitted and vmapped over the groups.\n")
  print("| G | formulation | encode ms | decode ms | workers ms (N G evaluations) | "
        "(encode + decode) / worker compute |")
  print("|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for groups in group_counts:
    queries = jnp.asarray(rng.random((groups, k, *shape)), jnp.float32)
    masks = stragglers.random_masks(jax.random.key(groups), groups, n, n - r)
    coded = encode(queries)
    outputs = run(params, coded)
    np.testing.assert_allclose(old_encode(queries), coded, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        old_decode(outputs, masks), decode(outputs, masks), rtol=2e-3, atol=2e-3)
    seconds = interleaved({
        "worker": lambda: run(params, coded),
        "encode": lambda: encode(queries),
        "decode": lambda: decode(outputs, masks),
        "encode (previous)": lambda: old_encode(queries),
        "decode (previous)": lambda: old_decode(outputs, masks),
    }, repeats, calls=3)
    worker = seconds["worker"]
    for label, suffix in (("previous (einsums, polyfit matrix per mask)", " (previous)"),
                          ("current (GEMM layout, matrix-free decode)", "")):
      enc, dec = seconds["encode" + suffix], seconds["decode" + suffix]
      print(f"| {groups} | {label} | {1e3 * enc:.3f} | {1e3 * dec:.3f} | {1e3 * worker:.2f} | "
            f"{100 * (enc + dec) / worker:.1f}% |", flush=True)


def main(argv):
  del argv
  print(environment.markdown())
  if _MODE.value == "overhead":
    measure_overhead([int(g) for g in _GROUPS.value], _REPEATS.value)
    return
  names = _VARIANTS.value or list(VARIANTS)
  rows = []
  for name in names:
    config = VARIANTS[name]()
    if _MODE.value == "load":
      measure_load(name, config)
      continue
    config.base_workdir = _BASE.value
    config.progress_bar = False
    if _STEPS.value:
      config.num_steps = _STEPS.value
    results = training.coder.train(config, os.path.join(_OUT.value, name)).report
    by_s = results["accuracy_by_stragglers"]
    rows.append(
        f"| {name} | {results['num_queries']} | {results['num_workers']} | "
        f"{results['recovery_threshold']} | {100 * results['master_fraction']['A']:.1f}% | "
        f"{results['base_accuracy']:.4f} | "
        + " | ".join(f"{by_s[s]['mean']:.4f}" for s in sorted(by_s, key=int)[1:4])
        + f" | {results['train_seconds']:.0f} |"
    )
    print(json.dumps({k: v for k, v in results.items() if k != "load_table"}, indent=2))
  if rows:
    print("| variant | K | N | R | master (A) | base | S=1 | S=2 | S=3 | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
