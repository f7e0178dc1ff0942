"""Training speed: ``training.fit`` against a bare ``jax.jit`` + Optax step, and JAX against PyTorch.

Run from the repository root (about 5 minutes on the project's 2-core CPU):

  python bench/bench_training.py               # all parts
  python bench/bench_training.py --parts=fit   # only (a)

What it times, interleaved in rounds (the median of ``--repeats`` rounds; ratios
within one run, on synthetic data of the configs' shapes):

(a) ``training.fit`` against a bare step (one ``jax.jit`` of a pure function of
    a plain-dict parameter pytree and the Optax state, donated; no logging,
    checkpoints or NaN check), for the LeNet-5 classifier of
    ``configs/fashion_mnist_lenet.py`` (batch 128, AdamW, random flips) and the
    learned code of ``configs/coder_fmnist_k8.py`` (through the coder task's own
    loss, ``coder.make_loss_fn``). ``fit`` is timed twice: in its loop (the
    ``steps_per_second`` it logs to ``metrics.jsonl``, the first log window
    left out) and end to end (the whole call, its setup and its one checkpoint
    included: a fixed cost of a fraction of a second per call, which a real
    run of thousands of steps amortises). Target: fit >= 0.95x of the bare
    step. Each ratio is the median over rounds of the ratio within a round
    (the two timings of a round are adjacent in time, so slow drifts of the
    machine's load cancel); its min-max over rounds is printed beside it.
(b) the same LeNet-5 step (no augmentation) against a plain PyTorch loop:
    same layers, batch, loss and AdamW, ``torch.set_num_threads(2)`` and XLA
    on the same 2 cores; and, to say where the time goes, the convolutions
    alone (forward, and forward + backward) in both. Target: JAX >= 0.8x
    PyTorch, or the measured reason.

PyTorch is optional (not a dependency of the project): without it part (b)
prints how to get it. Its CPU wheel, in a separate venv:

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  /tmp/torchvenv/bin/pip install -e .          # jaxcoded and the JAX stack
  /tmp/torchvenv/bin/python bench/bench_training.py

(On PyPI's default index ``pip install torch`` pulls several GB of CUDA
libraries; a local ``torch-*+cpu-*.whl`` file installs the same way.)

``--xla_flags_variants`` times the JAX LeNet-5 step once more per XLA_FLAGS
value in a subprocess each (the CPU backend reads its flags at start-up),
e.g. ``--xla_flags_variants=--xla_cpu_use_onednn=true``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import environment  # noqa: E402  (bench/environment.py)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import logging  # noqa: E402
from flax import nnx  # noqa: E402

from configs import coder_fmnist_k8, fashion_mnist_lenet  # noqa: E402
from jaxcoded import data, training  # noqa: E402
from jaxcoded.schemes import learned  # noqa: E402
from jaxcoded.training import classifier, coder  # noqa: E402

THREADS = 2


# ---------------------------------------------------------------------------
# Synthetic data of the configs' shapes.


def _fmnist_like(n: int, seed: int = 0) -> data.Dataset:
  rng = np.random.default_rng(seed)
  return data.Dataset(
      images=rng.normal(size=(n, 28, 28, 1)).astype(np.float32),
      labels=rng.integers(0, 10, size=n).astype(np.int32),
      num_classes=10, name="fashion_mnist", split="train",
  )


# ---------------------------------------------------------------------------
# The two ways of training: a bare jitted step, and training.fit.


def bare_runner(model, tx, loss_fn, wrt, seed=0):
  """``run(batches, n) -> seconds`` of n bare steps.

  The minimal functional loop: the trained parameters and the rest of the
  model's state as flat lists of arrays (the cheapest pytrees to pass), one
  ``jax.jit`` of a pure step, the parameters and Optax state donated, the
  per-step key folded in inside. No metrics leave the device.
  """
  graphdef, params, rest = nnx.split(model, wrt, ...)
  param_leaves, param_def = jax.tree.flatten(params)
  rest_leaves, rest_def = jax.tree.flatten(rest)
  state = (param_leaves, tx.init(param_leaves), jnp.zeros((), jnp.int32))
  key = jax.random.key(seed)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, rest_leaves, batch):
    leaves, opt_state, number = state
    number = number + 1
    rng = jax.random.fold_in(key, number)

    def loss(leaves):
      module = nnx.merge(graphdef, jax.tree.unflatten(param_def, leaves),
                         jax.tree.unflatten(rest_def, rest_leaves))
      return loss_fn(module, batch, rng)[0]

    value, grads = jax.value_and_grad(loss)(leaves)
    updates, opt_state = tx.update(grads, opt_state, leaves)
    return (optax.apply_updates(leaves, updates), opt_state, number), value

  def run(batches, n):
    nonlocal state
    start = time.perf_counter()
    value = None
    for batch in itertools.islice(batches, n):
      state, value = step(state, rest_leaves, batch)
    jax.block_until_ready((state, value))
    return time.perf_counter() - start

  return run


def fit_runner(model, tx, loss_fn, wrt, config):
  """``run(batches_fn, n) -> (end-to-end seconds, in-loop steps/s)`` of ``training.fit``."""

  def run(batches_fn, n):
    workdir = tempfile.mkdtemp(prefix="bench_fit_")
    try:
      run_config = ml_collections.ConfigDict(config.to_dict())
      # The config's own log_every and checkpoint_every: they size the on-device metrics
      # history, part of the compiled step, so the warm-up run compiles what is timed. With
      # n below checkpoint_every only the last step is saved.
      run_config.update(num_steps=n, eval_every=0, progress_bar=False, stop_after_steps=0)
      start = time.perf_counter()
      training.fit(model, tx, loss_fn, batches_fn, num_steps=n, workdir=workdir,
                   config=run_config, wrt=wrt)
      seconds = time.perf_counter() - start
      records = training.read_metrics(workdir)
      counts = np.diff([r["step"] for r in records])  # the first window holds the start-up
      seconds_in_loop = sum(c / r["steps_per_second"] for c, r in zip(counts, records[1:]))
      in_loop = sum(counts) / seconds_in_loop if len(counts) else float("nan")
      return seconds, in_loop
    finally:
      shutil.rmtree(workdir, ignore_errors=True)

  return run


# ---------------------------------------------------------------------------
# The cases of part (a).


def classifier_case():
  """(bare run, fit run, batches_fn): LeNet-5 of configs/fashion_mnist_lenet.py."""
  config = fashion_mnist_lenet.get_config()
  dataset = _fmnist_like(config.batch_size * 40)
  tx, _ = training.make_optimizer(config)
  loss_fn = functools.partial(training.classification_loss, crop_padding=config.crop_padding)

  def batches_fn(start):
    return training.batch_stream(dataset, config.batch_size, seed=0, start_step=start)

  bare = bare_runner(classifier.build_model(config), tx, loss_fn, nnx.Param)
  fit = fit_runner(classifier.build_model(config), tx, loss_fn, nnx.Param, config)
  return bare, fit, batches_fn


def coder_case():
  """(bare run, fit run, batches_fn): the learned code of configs/coder_fmnist_k8.py."""
  config = coder_fmnist_k8.get_config()
  k = config.num_queries
  dataset = _fmnist_like(config.groups_per_batch * k * 20)
  teacher = np.zeros((len(dataset), 10), np.float32)
  # As coder.train builds them.
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, min(200, config.num_steps // 10 + 1), config.num_steps
  )
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
  loss_fn = coder.make_loss_fn(float(config.distill_weight), float(config.temperature), None, False)

  def build():
    base = classifier.build_model(config.base)
    return coder.build_code(config, (28, 28, 1), 10, classifier=base,
                            rngs=nnx.Rngs(config.seed + 1))

  def batches_fn(start):
    return coder.group_stream(dataset.images, dataset.labels, teacher, k,
                              config.groups_per_batch, seed=0, start_step=start)

  code = build()
  bare = bare_runner(code, tx, loss_fn, learned.trainable(code))
  code = build()
  fit = fit_runner(code, tx, loss_fn, learned.trainable(code), config)
  return bare, fit, batches_fn


# ---------------------------------------------------------------------------
# Part (b): JAX against PyTorch.


def _lenet_batches(batch_size=128, count=20):
  dataset = _fmnist_like(batch_size * count, seed=1)
  return [(dataset.images[i * batch_size:(i + 1) * batch_size],
           dataset.labels[i * batch_size:(i + 1) * batch_size]) for i in range(count)]


def jax_lenet_runner(batches):
  """``run(n) -> seconds``: the bare JAX LeNet-5 step, no augmentation, AdamW 3e-3."""
  config = fashion_mnist_lenet.get_config()
  model = classifier.build_model(config)
  run = bare_runner(model, optax.adamw(3e-3, weight_decay=1e-4), training.classification_loss,
                    nnx.Param)
  return lambda n: run(itertools.cycle(batches), n)


def torch_import():
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(THREADS)
  return torch


def torch_lenet_runner(torch, batches):
  """``run(n) -> seconds``: the same LeNet-5 step in plain PyTorch (NCHW, eager)."""
  nn, functional = torch.nn, torch.nn.functional
  torch.manual_seed(0)
  net = nn.Sequential(
      nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
      nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
  )
  opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
  prepared = [(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
               torch.from_numpy(y.astype(np.int64))) for x, y in batches]

  def run(n):
    start = time.perf_counter()
    for x, y in itertools.islice(itertools.cycle(prepared), n):
      opt.zero_grad(set_to_none=True)
      loss = functional.cross_entropy(net(x), y)
      loss.backward()
      opt.step()
    return time.perf_counter() - start

  return run


def _time_calls(fn, *, repeats, number):
  """Best seconds per call of fn() (each of ``repeats`` timings averages ``number`` calls).

  The minimum, not the median: an op's own cost is its fastest timing, and on a loaded
  machine the others measure the load.
  """
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(number):
      fn()
    times.append((time.perf_counter() - start) / number)
  return min(times)


def conv_im2col(x, w, padding):
  """The same convolution as kh * kw shifted slices concatenated on the channels, then one GEMM.

  (B, H, W, Cin) NHWC and (kh, kw, Cin, Cout) HWIO, stride 1: what a convolution
  costs on XLA's CPU when it is a plain dot (its backward: pads, adds and a dot).
  """
  kh, kw, cin, cout = w.shape
  if padding == "SAME":
    x = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
  batch, height, width, _ = x.shape
  out_h, out_w = height - kh + 1, width - kw + 1
  patches = jnp.concatenate(
      [x[:, i:i + out_h, j:j + out_w, :] for i in range(kh) for j in range(kw)], axis=-1)
  out = jnp.dot(patches.reshape(-1, kh * kw * cin), w.reshape(kh * kw * cin, cout))
  return out.reshape(batch, out_h, out_w, cout)


def conv_profile(torch, repeats, batch=128):
  """Per-op times of LeNet-5's two convolutions (batch 128), forward and forward + backward.

  Also the same two convolutions as ``conv_im2col`` (JAX only). Returns rows
  (name, JAX ms, PyTorch ms or None, GFLOP per call).
  """
  rng = np.random.default_rng(0)
  shapes = {  # (input NHWC, kernel HWIO, padding)
      "conv1 5x5, 1->6, 28x28 SAME": ((batch, 28, 28, 1), (5, 5, 1, 6), "SAME"),
      "conv2 5x5, 6->16, 14x14 VALID": ((batch, 14, 14, 6), (5, 5, 6, 16), "VALID"),
  }
  rows = []
  for name, (x_shape, w_shape, padding) in shapes.items():
    x = rng.normal(size=x_shape).astype(np.float32)
    w = rng.normal(size=w_shape).astype(np.float32)
    out_hw = x_shape[1] if padding == "SAME" else x_shape[1] - w_shape[0] + 1
    gflop = 2 * batch * out_hw * out_hw * np.prod(w_shape) / 1e9

    def conv(x, w, padding=padding):
      return jax.lax.conv_general_dilated(x, w, (1, 1), padding,
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))

    needs_dx = name.startswith("conv2")  # conv1's input is the image: no gradient needed
    fwd = jax.jit(conv)
    # A squared loss: its gradient is the conv's output, so the forward conv must run (the
    # gradient of a plain sum is ones, and XLA would drop the forward, which PyTorch runs).
    loss = lambda x, w: 0.5 * jnp.sum(conv(x, w) ** 2)  # noqa: E731
    bwd = jax.jit(jax.grad(loss, argnums=(0, 1) if needs_dx else 1))
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    jax_fwd = _time_calls(lambda: fwd(xj, wj).block_until_ready(), repeats=repeats, number=20)
    jax_bwd = _time_calls(lambda: jax.block_until_ready(bwd(xj, wj)), repeats=repeats, number=20)
    torch_fwd = torch_bwd = None
    if torch is not None:
      xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
      wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
      pad = w_shape[0] // 2 if padding == "SAME" else 0
      with torch.no_grad():
        torch_fwd = _time_calls(lambda: torch.nn.functional.conv2d(xt, wt, padding=pad),
                                repeats=repeats, number=20)
      xg = xt.clone().requires_grad_(needs_dx)
      wg = wt.clone().requires_grad_(True)

      def torch_step():
        xg.grad = wg.grad = None
        (0.5 * torch.nn.functional.conv2d(xg, wg, padding=pad).square().sum()).backward()

      torch_bwd = _time_calls(torch_step, repeats=repeats, number=20)
    rows.append((f"{name}: forward", jax_fwd, torch_fwd, gflop))
    rows.append((f"{name}: forward + backward", jax_bwd, torch_bwd, gflop * (3 if needs_dx else 2)))
    im2col = functools.partial(conv_im2col, padding=padding)
    np.testing.assert_allclose(jax.jit(im2col)(xj, wj), fwd(xj, wj), rtol=1e-4, atol=1e-3)
    im2col_bwd = jax.jit(jax.grad(lambda x, w: 0.5 * jnp.sum(im2col(x, w) ** 2),
                                  argnums=(0, 1) if needs_dx else 1))
    rows.append((f"{name}: forward + backward, as im2col + one GEMM (JAX only)",
                 _time_calls(lambda: jax.block_until_ready(im2col_bwd(xj, wj)), repeats=repeats,
                             number=20), None, gflop * (3 if needs_dx else 2)))
  return rows


# ---------------------------------------------------------------------------
# Tables.


def _median(values):
  return statistics.median(values)


def _ratio(a, b):
  return f"{a / b:.2f}x"


def _paired(numerators, denominators):
  """The median over rounds of the within-round ratio, with its min-max (a table cell)."""
  ratios = [a / b for a, b in zip(numerators, denominators)]
  return f"{_median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def run_fit_part(repeats, steps, coder_steps):
  cases = {"LeNet-5 classifier (fashion_mnist_lenet)": (classifier_case(), steps),
           "learned code (coder_fmnist_k8)": (coder_case(), coder_steps)}
  results = {name: {"bare": [], "fit": [], "fit_loop": []} for name in cases}
  for (bare, fit, batches_fn), _ in cases.values():  # compile both (not timed)
    bare(batches_fn(0), 3)
    fit(batches_fn, 3)
  for round_ in range(repeats):
    for name, ((bare, fit, batches_fn), n) in cases.items():
      order = ("bare", "fit") if round_ % 2 == 0 else ("fit", "bare")
      for which in order:
        if which == "bare":
          results[name]["bare"].append(n / bare(batches_fn(0), n))
        else:
          seconds, in_loop = fit(batches_fn, n)
          results[name]["fit"].append(n / seconds)
          results[name]["fit_loop"].append(in_loop)
  lines = [
      f"### (a) training.fit against a bare jax.jit + Optax step (median of {repeats} interleaved "
      "rounds)\n",
      "| model | steps per timing | bare step (steps/s) | fit, in its loop (steps/s) | "
      "fit / bare, in loop (min-max) | fit, end to end (steps/s) | fit / bare, end to end |",
      "|---|---|---|---|---|---|---|",
  ]
  for name, ((_, _, _), n) in cases.items():
    values = results[name]
    r = {k: _median(v) for k, v in values.items()}
    lines.append(
        f"| {name} | {n} | {r['bare']:.1f} | {r['fit_loop']:.1f} | "
        f"{_paired(values['fit_loop'], values['bare'])} | {r['fit']:.1f} | "
        f"{_paired(values['fit'], values['bare'])} |"
    )
  return "\n".join(lines) + "\n", results


def run_torch_part(repeats, steps):
  torch = torch_import()
  batches = _lenet_batches()
  jax_run = jax_lenet_runner(batches)
  jax_run(3)
  lines = []
  if torch is None:
    lines.append(
        "### (b) JAX against PyTorch\n\nPyTorch is not installed: see this script's docstring "
        "(`python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu && /tmp/torchvenv/bin/pip install -e .`, then run "
        "this script with /tmp/torchvenv/bin/python).\n"
    )
    jax_rates = [steps / jax_run(steps) for _ in range(repeats)]
    lines.append(f"JAX LeNet-5 step alone: {_median(jax_rates):.1f} steps/s\n")
  else:
    torch_run = torch_lenet_runner(torch, batches)
    torch_run(3)
    jax_rates, torch_rates = [], []
    for round_ in range(repeats):
      for which in (("jax", "torch") if round_ % 2 == 0 else ("torch", "jax")):
        if which == "jax":
          jax_rates.append(steps / jax_run(steps))
        else:
          torch_rates.append(steps / torch_run(steps))
    j, t = _median(jax_rates), _median(torch_rates)
    lines += [
        f"### (b) LeNet-5 training step, batch 128, AdamW, {THREADS} threads: JAX against "
        f"PyTorch (median of {repeats} interleaved rounds of {steps} steps)\n",
        "| loop | steps/s | JAX / PyTorch (min-max over rounds) |",
        "|---|---|---|",
        f"| JAX (bare jax.jit + optax step, XLA CPU) | {j:.1f} | "
        f"{_paired(jax_rates, torch_rates)} |",
        f"| PyTorch {torch.__version__} (eager, torch.set_num_threads({THREADS})) | {t:.1f} | |",
    ]
    lines.append("")
  rows = conv_profile(torch, repeats)
  lines += [
      f"### (b') LeNet-5's convolutions alone, batch 128 (best of {repeats}; ms per call)\n",
      "| op | JAX ms | JAX GFLOP/s | PyTorch ms | PyTorch GFLOP/s | JAX time / PyTorch time |",
      "|---|---|---|---|---|---|",
  ]
  for name, jax_s, torch_s, gflop in rows:
    if torch_s is None:
      lines.append(f"| {name} | {jax_s * 1e3:.2f} | {gflop / jax_s:.1f} | - | - | - |")
    else:
      lines.append(
          f"| {name} | {jax_s * 1e3:.2f} | {gflop / jax_s:.1f} | {torch_s * 1e3:.2f} | "
          f"{gflop / torch_s:.1f} | {jax_s / torch_s:.2f} |"
      )
  return "\n".join(lines) + "\n"


def run_flag_variants(variants, repeats, steps):
  """The JAX LeNet-5 step under other XLA_FLAGS (one subprocess per value, default first)."""
  lines = [
      f"### (b'') The JAX LeNet-5 step under other XLA flags (a subprocess each; median of "
      f"{repeats} timings of {steps} steps)\n",
      "| XLA_FLAGS | steps/s | vs default |", "|---|---|---|",
  ]
  default = None
  for flags in ["", *variants]:
    env = dict(os.environ, XLA_FLAGS=flags)
    out = subprocess.run(
        [sys.executable, __file__, "--_child", f"--repeats={repeats}", f"--torch_steps={steps}"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    if out.returncode != 0:
      lines.append(f"| `{flags or '(none)'}` | failed: {out.stderr.strip().splitlines()[-1]} | |")
      continue
    rate = json.loads(out.stdout.strip().splitlines()[-1])["steps_per_second"]
    default = rate if default is None else default
    lines.append(f"| `{flags or '(none)'}` | {rate:.1f} | {_ratio(rate, default)} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="fit,torch", help="comma-separated: fit, torch")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=300, help="LeNet-5 steps per fit timing")
  parser.add_argument("--coder_steps", type=int, default=200, help="coder steps per fit timing")
  parser.add_argument("--torch_steps", type=int, default=100, help="steps per JAX/PyTorch timing")
  parser.add_argument("--xla_flags_variants", default="",
                      help="';'-separated XLA_FLAGS values to time the JAX step under")
  parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  if args._child:
    run = jax_lenet_runner(_lenet_batches())
    run(3)
    rate = _median([args.torch_steps / run(args.torch_steps) for _ in range(args.repeats)])
    print(json.dumps({"steps_per_second": rate}))
    return

  print(environment.markdown())
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {os.cpu_count()} CPUs; "
        f"`uptime`: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}\n")
  parts = set(args.parts.split(","))
  if "fit" in parts:
    table, _ = run_fit_part(args.repeats, args.steps, args.coder_steps)
    print(table, flush=True)
  if "torch" in parts:
    print(run_torch_part(args.repeats, args.torch_steps), flush=True)
  if args.xla_flags_variants:
    print(run_flag_variants(args.xla_flags_variants.split(";"), args.repeats, args.torch_steps))
  load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
  print(f"Load average at the end (1 / 5 / 15 min): {load}")


if __name__ == "__main__":
  main()
