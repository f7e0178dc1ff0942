"""Learned codes on Fashion-MNIST: accuracy at S stragglers, master budget, per-node load.

Run from the repository root (CPU: a few minutes per variant):

  # per-node FLOPs/bytes and the master budget of each variant (no training)
  PYTHONPATH=. python bench/bench_learned.py --mode=load
  # train and evaluate the variants (sharing one base LeNet-5 workdir)
  PYTHONPATH=. python bench/bench_learned.py --mode=train --base_workdir=/tmp/fmnist_lenet \
      --out=/tmp/bench_learned --variants=k8,k8_features3

Each variant is a config of configs/ with overrides; results go to
<out>/<variant>/results.json and a Markdown table is printed.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app, flags
from flax import nnx

from configs import coder_fmnist_k4, coder_fmnist_k8, coder_fmnist_k8_lagrange, coder_fmnist_k12
from jaxcoded import load, models, training

_MODE = flags.DEFINE_enum("mode", "load", ["load", "train"], "What to measure.")
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
  base = models.flops_per_example(config.base.model)
  loads = [load.code_load(code, d, base) for d in ("A", "B")]
  print(f"\n### {name}: K = {code.num_queries}, N = {code.num_workers}, "
        f"R = {code.recovery_threshold}, master budget (A) {100 * loads[0].master_fraction:.1f}% "
        f"(declared {100 * config.master_budget:.0f}%)\n")
  print(load.format_load_table(loads))


def main(argv):
  del argv
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
