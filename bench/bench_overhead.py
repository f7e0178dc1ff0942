r"""Coding overhead of every scheme: (encode + decode) time over the workers' time.

Builds each scheme of the equal-resource comparison (``configs/eval_fmnist_equal.py``,
K = 8 by default) through the scheme builders (jaxcoded.comparison.builders), exactly as the harness deploys
it at each S, but with untrained networks of the trained shapes (LeNet-5 for f
and ParM's parity model, the learned codes' own networks): timings do not
depend on the weights. For G groups of Fashion-MNIST-shaped queries it times,
interleaved and jitted, vmapped over the groups:

* encode: the master's (K, ...) -> (N, ...) for every group;
* workers: all N workers of every group (each role's task, ``Deployment.run_workers``);
* decode: (N, ...) outputs and a mask with S random stragglers -> (K, C) logits.

* f on N workers: the base classifier on N G inputs of its own shape, the
  cost of the same N workers running f itself;

and prints (encode + decode) over the workers' time and over f's time on N
workers, beside the FLOP ratio from XLA's cost analysis
(``comparison.metrics.node_load``). The second ratio differs from the first
only for codes whose workers do not run f (the learned codes): it measures
the master's work against a worker that costs f in time, as the first does in
FLOPs.

  python bench/bench_overhead.py                       # every scheme, S = 1..3, G = 1, 16, 64, 256
  python bench/bench_overhead.py --schemes=Berrut,"learned polynomial" --groups=64 --repeats=9
  # plot a table printed earlier (no measuring): overhead against G, one line per scheme
  python bench/bench_overhead.py --from_table=docs/results/bench/overhead_k8.md \
      --plot=docs/figures/coding_overhead_k8.png

A few minutes on 2 cores (about 100 compilations). ``--plot`` also works on a
measuring run (needs matplotlib).
"""

from __future__ import annotations

import pathlib

import environment  # bench/environment.py (bench/ is on sys.path when run as a script)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx
from timing import interleaved  # bench/timing.py

from configs import eval_fmnist_equal
from jaxcoded import comparison, deployment, models, stragglers, training
from jaxcoded.comparison import builders

_VARIANT = flags.DEFINE_enum("variant", "k8", ["k8", "k12"], "configs/eval_fmnist_equal.py variant.")
_SCHEMES = flags.DEFINE_list("schemes", None, "Scheme names of the config (default: all).")
_STRAGGLERS = flags.DEFINE_list("stragglers", ["1", "2", "3"], "Numbers of stragglers S.")
_GROUPS = flags.DEFINE_list("groups", ["1", "16", "64", "256"], "Groups coded per call (G).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Interleaved timed repeats (median reported).")
_PLOT = flags.DEFINE_string("plot", None, "Write a PNG of overhead against G to this path.")
_FROM_TABLE = flags.DEFINE_string(
    "from_table", None, "Read the rows from this earlier output instead of measuring.")
# A fixed smoothing stands in for the fitted one: the spline code's cost does not depend on it.
_SPLINE_SMOOTHING = 1e-3


def untrained_base(config: ml_collections.ConfigDict) -> tuple[nnx.Module, deployment.WorkerTask]:
  """An untrained base classifier of the comparison's architecture, and it as a worker task."""
  classifier = models.create(config.base.model, rngs=nnx.Rngs(0))
  return classifier, deployment.WorkerTask(*training.parity.as_worker_fn(classifier))


def untrained_context(config: ml_collections.ConfigDict, name: str) -> builders.BuildContext:
  """The build context of scheme ``name`` with untrained parts of the trained shapes."""
  entry = config.schemes[name]
  kind = builders.get(entry.kind)
  shape = models.INPUT_SHAPES[config.base.model]
  classifier, base_task = untrained_base(config)
  trained = None
  if kind.trains == "parity":
    parity = models.create(entry.config.model, rngs=nnx.Rngs(1), **entry.config.model_kwargs)
    trained = deployment.WorkerTask(*training.parity.as_worker_fn(parity, entry.config.target))
  elif kind.trains == "coder":
    coder_config = ml_collections.ConfigDict(entry.config.to_dict())
    coder_config.num_queries = config.num_queries
    trained = training.coder.build_code(coder_config, shape, 10, classifier=classifier,
                                        rngs=nnx.Rngs(2))
  elif kind.trains is not None:
    raise ValueError(f"{name}: no untrained stand-in for a {kind.trains!r} part.")
  return builders.BuildContext(num_queries=config.num_queries, base_task=base_task,
                               num_classes=10, train_labels=np.arange(10), trained=trained)


def _entry_for_timing(entry: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  entry = ml_collections.ConfigDict(entry.to_dict())
  if entry.get("smoothing") == "fit":
    entry.smoothing = None
    entry.encoder_smoothing = entry.decoder_smoothing = _SPLINE_SMOOTHING
  return entry


def deployments(config, names, straggler_counts):
  """[(name, S, Deployment)] in table order, each as the harness builds it at S."""
  built = []
  for name in names:
    entry = _entry_for_timing(config.schemes[name])
    kind = builders.get(entry.kind)
    ctx = untrained_context(config, name)
    fixed = None if kind.sized_for(entry) else kind.build(entry, 0, ctx)
    for s in straggler_counts:
      scheme_tasks_roles = fixed or kind.build(entry, s, ctx)
      if scheme_tasks_roles is None:
        continue
      served = deployment.Deployment(name, *scheme_tasks_roles)
      if s < served.num_workers:
        built.append((name, s, served))
  return built


def flop_ratio(served, shape, base_flops) -> float:
  """The master's FLOPs per group over the workers' (XLA's cost analysis; independent of G)."""
  load = comparison.metrics.node_load(served, shape, base_flops)
  k, n = served.num_queries, served.num_workers
  return load["master_fraction"] * k / (load["worker_fraction"] * n)


def time_deployment(served, base_task, shape, num_stragglers, groups, repeats, rng):
  """Seconds of encode, workers, decode and f on N workers for G groups.

  ``shape`` is one query's (H, W, C), f's input shape.
  """
  queries = jnp.asarray(rng.random((groups, served.num_queries, *shape)), jnp.float32)
  masks = stragglers.random_masks(jax.random.key(groups + num_stragglers), groups,
                                  served.num_workers, num_stragglers)
  encode = jax.jit(jax.vmap(served.encode))
  run = jax.jit(jax.vmap(served.run_workers))
  decode = jax.jit(jax.vmap(lambda y, m: served.decode(y, m).values))
  run_f = jax.jit(jax.vmap(jax.vmap(base_task.fn, in_axes=(None, 0)), in_axes=(None, 0)))
  f_inputs = jnp.asarray(rng.random((groups, served.num_workers, *shape)), jnp.float32)
  coded = encode(queries)
  outputs = run(coded)
  seconds = interleaved({
      "f": lambda: run_f(base_task.params, f_inputs),
      "encode": lambda: encode(queries),
      "workers": lambda: run(coded),
      "decode": lambda: decode(outputs, masks),
  }, repeats, calls=3)
  return seconds


HEADER = ["scheme", "S", "N", "G", "encode ms", "workers ms", "decode ms", "f on N workers ms",
          "(encode + decode) / workers", "/ f on N workers", "/ workers in FLOPs"]


def read_table(path: str) -> list[dict[str, str]]:
  """The rows of an earlier output of this script, as header -> cell."""
  rows = []
  for line in pathlib.Path(path).read_text().splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == len(HEADER) and cells[0] not in ("scheme", "---") and cells[1].isdigit():
      rows.append(dict(zip(HEADER, cells)))
  if not rows:
    raise app.UsageError(f"{path} holds no table of bench/bench_overhead.py.")
  return rows


def plot(rows: list[dict[str, str]], path: str) -> None:
  """(encode + decode) / workers against G, the median over S, one line per scheme."""
  try:
    import matplotlib
  except ImportError as error:
    raise app.UsageError("--plot needs matplotlib: pip install matplotlib") from error
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  percent = lambda cell: float(cell.rstrip("%"))  # noqa: E731
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name in dict.fromkeys(r["scheme"] for r in rows):
    mine = [r for r in rows if r["scheme"] == name]
    groups = sorted({int(r["G"]) for r in mine})
    ratios = [np.median([percent(r[HEADER[8]]) for r in mine if int(r["G"]) == g]) for g in groups]
    ax.plot(groups, ratios, marker="o", label=name)
  ax.axhline(10, color="gray", linestyle="--", linewidth=1)
  ax.set_xscale("log", base=2)
  ticks = sorted({int(r["G"]) for r in rows})
  ax.set_xticks(ticks, [str(g) for g in ticks])
  ax.set_yscale("log")
  ax.set_xlabel("groups per call G")
  ax.set_ylabel("(encode + decode) / workers' time, %")
  ax.set_title("Coding overhead (median over S = 1..3); dashed: 10%")
  ax.legend(fontsize=8)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  print(f"wrote {path}")


def main(argv):
  del argv
  if _FROM_TABLE.value:
    if not _PLOT.value:
      raise app.UsageError("--from_table only makes a plot: give --plot=PATH too.")
    plot(read_table(_FROM_TABLE.value), _PLOT.value)
    return
  print(environment.markdown(), flush=True)
  config = eval_fmnist_equal.get_config(_VARIANT.value)
  names = _SCHEMES.value or comparison.plan.scheme_names(config)
  unknown = [n for n in names if n not in config.schemes]
  if unknown:
    raise app.UsageError(f"Unknown schemes {unknown}; configs/eval_fmnist_equal.py has "
                         f"{comparison.plan.scheme_names(config)}.")
  straggler_counts = [int(s) for s in _STRAGGLERS.value]
  group_counts = [int(g) for g in _GROUPS.value]
  base_flops = models.flops_per_example(config.base.model, model_kwargs=config.base.get("model_kwargs"))
  shape = models.INPUT_SHAPES[config.base.model]
  print(f"Coding overhead, K = {config.num_queries}, untrained networks of the equal-resource "
        f"comparison's shapes (configs/eval_fmnist_equal.py:{_VARIANT.value}), LeNet-5 for f; "
        f"median of {_REPEATS.value} interleaved repeats of 3 calls, each jitted and vmapped "
        "over G groups; S random stragglers per group at decode.\n")
  print("| " + " | ".join(HEADER) + " |")
  print("|" + "---|" * len(HEADER), flush=True)
  rows = []
  rng = np.random.default_rng(0)
  _, base_task = untrained_base(config)
  for name, s, served in deployments(config, names, straggler_counts):
    flops = flop_ratio(served, shape, base_flops)
    for groups in group_counts:
      seconds = time_deployment(served, base_task, shape, s, groups, _REPEATS.value, rng)
      enc, work, dec, f = (seconds[k] for k in ("encode", "workers", "decode", "f"))
      cells = [name, str(s), str(served.num_workers), str(groups), f"{1e3 * enc:.3f}",
               f"{1e3 * work:.2f}", f"{1e3 * dec:.3f}", f"{1e3 * f:.2f}",
               f"{100 * (enc + dec) / work:.1f}%", f"{100 * (enc + dec) / f:.1f}%",
               f"{100 * flops:.1f}%"]
      rows.append(dict(zip(HEADER, cells)))
      print("| " + " | ".join(cells) + " |", flush=True)
  if _PLOT.value:
    plot(rows, _PLOT.value)


if __name__ == "__main__":
  app.run(main)
