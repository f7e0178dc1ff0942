"""The masked-straggler comparison of every scheme (DESIGN.md section 6).

:func:`run_comparison` evaluates a list of schemes, configured as in
``configs/eval_digits.py``, on the test set cut into groups of K:

* one base classifier f for everyone (trained on demand, or reloaded);
* trained parts (ParM's parity model, learned codes) loaded from their
  workdirs, or trained there first when missing;
* for each S of ``config.stragglers`` and each scheme, the masks of S
  stragglers among its N workers: all of them when there are few
  (``masks.exhaustive_limit``), else ``masks.num_random`` random ones; the
  worst mask of each scheme is reported too. Masks depend only on (N, S) and
  the seed, so schemes with the same N see the very same arrays;
* deadline masks: per-worker latencies from a shifted exponential model and a
  fixed deadline; a worker later than the deadline straggles;
* optionally E Byzantine workers per mask (``adversary``), drawn among the
  returned ones, whose outputs an adversary model replaces.

Worker outputs do not depend on the mask, so each group is encoded and run
through the workers once; then each mask is decoded for all groups at once
(``jax.lax.map`` over masks in chunks of ``vmap``). One compilation per
scheme and mask-set shape. With ``config.mesh_devices > 1`` the worker pass
runs under ``shard_map`` over a device mesh.

Metrics per mask: top-1 accuracy against the labels, agreement with f's own
prediction, degraded-mode accuracy (on the queries whose own worker
straggled: worker k for query k, or every replica of it), the fraction
answered; then mean, spread and worst over masks. Per scheme: N, R, N/K,
decode time per group, master FLOPs per query as a fraction of f's, and
worker FLOPs per coded input as a fraction of f's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import platform
import time
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxcoded import (
    adversaries, data, deployment, evaluation, load, models, stragglers, workers,
)
from jaxcoded.schemes import base, berrut, berrut_byzantine, lcc, replication, uncoded
from jaxcoded.schemes import parm as parm_scheme

__all__ = [
    "KINDS",
    "MaskBank",
    "add_scheme",
    "SchemeMetrics",
    "build_deployment",
    "evaluate_deployment",
    "home_workers",
    "node_load",
    "run_comparison",
]

KINDS = ("uncoded", "replication", "lcc", "berrut", "byzantine_berrut", "parm", "learned")
SIZED_KINDS = ("replication", "lcc", "berrut", "byzantine_berrut")  # sized to tolerate S


# ---------------------------------------------------------------------------
# Masks shared by every scheme.


class MaskBank:
  """Straggler masks that depend only on (N, S) and the seed, cached.

  Every scheme with N workers evaluated at S stragglers gets the same array:
  all C(N, S) masks when there are at most ``exhaustive_limit``, else
  ``num_random`` uniform random ones.
  """

  def __init__(self, seed: int, num_random: int, exhaustive_limit: int):
    if num_random < 1 or exhaustive_limit < 1:
      raise ValueError(
          f"MaskBank: num_random and exhaustive_limit must be >= 1, got {num_random} and "
          f"{exhaustive_limit}."
      )
    self.key = jax.random.key(seed)
    self.num_random = num_random
    self.exhaustive_limit = exhaustive_limit
    self._cache: dict[tuple[int, int], np.ndarray] = {}

  def masks(self, num_workers: int, num_stragglers: int) -> np.ndarray:
    """(M, N) boolean masks with exactly S False entries each."""
    if not 0 <= num_stragglers <= num_workers:
      raise ValueError(f"MaskBank: S = {num_stragglers} stragglers among N = {num_workers}.")
    key = (num_workers, num_stragglers)
    if key not in self._cache:
      if math.comb(num_workers, num_stragglers) <= self.exhaustive_limit:
        masks = stragglers.all_masks(num_workers, num_stragglers)
      else:
        sub = jax.random.fold_in(jax.random.fold_in(self.key, num_workers), num_stragglers)
        masks = stragglers.random_masks(sub, self.num_random, num_workers, num_stragglers)
      self._cache[key] = np.asarray(masks, bool)
    return self._cache[key]

  def deadline_masks(
      self, num_workers: int, num_masks: int, shift: float, rate: float, deadline: float
  ) -> np.ndarray:
    """(M, N) masks of the workers whose shifted-exponential latency beats the deadline."""
    key = jax.random.fold_in(jax.random.fold_in(self.key, 10_000 + num_workers), 1)
    model = stragglers.ShiftedExponential(shift=shift, rate=rate)
    masks, _ = stragglers.sample_deadline_masks(key, model, num_masks, num_workers,
                                                deadline=deadline)
    return np.asarray(masks, bool)

  def arrays(self) -> dict[str, np.ndarray]:
    """Every mask set handed out, keyed "N{N}_S{S}" (for ``masks.npz``)."""
    return {f"N{n}_S{s}": m for (n, s), m in sorted(self._cache.items())}


def fingerprint(masks: np.ndarray) -> str:
  """A short hash of a mask array: equal fingerprints mean identical masks."""
  masks = np.ascontiguousarray(np.asarray(masks, bool))
  return hashlib.sha1(masks.tobytes() + str(masks.shape).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Building the deployments.


@dataclasses.dataclass
class Context:
  """What every scheme shares: K, the base classifier, the data, the workdirs."""

  num_queries: int
  base_fn: base.WorkerFn
  base_params: Any
  base_config: ml_collections.ConfigDict
  base_workdir: pathlib.Path
  workdir: pathlib.Path
  train_labels: np.ndarray
  num_classes: int
  log: Callable[[str], None] = print
  trained: dict[str, Any] = dataclasses.field(default_factory=dict)


def _trained_parity(entry: ml_collections.ConfigDict, name: str, ctx: Context):
  from jaxcoded import parity_training  # pylint: disable=g-import-not-at-top

  if name not in ctx.trained:
    workdir = _trained_workdir(entry, name, ctx)
    if not (workdir / "final_metrics.json").exists():
      ctx.log(f"{name}: training the parity model -> {workdir}")
      parity_training.train_parity_model(_sub_config(entry, ctx), workdir)
    else:
      ctx.log(f"{name}: reloading the parity model from {workdir}")
    _check_trained_k(workdir, ctx.num_queries)
    model, _ = parity_training.load_parity_model(workdir)
    graphdef, params = nnx.split(model)
    ctx.trained[name] = (lambda p, x: nnx.merge(graphdef, p)(x[None])[0], params)
  return ctx.trained[name]


def _trained_code(entry: ml_collections.ConfigDict, name: str, ctx: Context):
  from jaxcoded import coder_training  # pylint: disable=g-import-not-at-top

  if name not in ctx.trained:
    workdir = _trained_workdir(entry, name, ctx)
    if not (workdir / "results.json").exists():
      ctx.log(f"{name}: training the learned code -> {workdir}")
      coder_training.train_and_evaluate(_sub_config(entry, ctx), str(workdir))
    else:
      ctx.log(f"{name}: reloading the learned code from {workdir}")
    _check_trained_k(workdir, ctx.num_queries)
    ctx.trained[name] = coder_training.load_code(workdir)
  return ctx.trained[name]


def _trained_workdir(entry, name: str, ctx: Context) -> pathlib.Path:
  if entry.get("workdir"):
    return pathlib.Path(entry.workdir)
  safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
  return ctx.workdir / "trained" / safe


def _sub_config(entry: ml_collections.ConfigDict, ctx: Context) -> ml_collections.ConfigDict:
  if entry.get("config") is None:
    raise ValueError(f"Scheme kind {entry.kind!r} needs entry.config (its training config).")
  config = ml_collections.ConfigDict(entry.config.to_dict())
  config.num_queries = ctx.num_queries
  config.base = ml_collections.ConfigDict(ctx.base_config.to_dict())
  config.base_workdir = str(ctx.base_workdir)
  config.progress_bar = False
  return config


def _check_trained_k(workdir: pathlib.Path, num_queries: int) -> None:
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{config_path} does not exist: {workdir} is not a training workdir.")
  stored = json.loads(config_path.read_text())
  if stored.get("num_queries") != num_queries:
    raise ValueError(
        f"The trained part in {workdir} is for K = {stored.get('num_queries')} queries per group, "
        f"but this comparison uses K = {num_queries}; point its workdir elsewhere."
    )


def build_deployment(
    name: str, entry: ml_collections.ConfigDict, num_stragglers: int, ctx: Context
) -> deployment.Deployment | None:
  """The deployment of one configured scheme at S stragglers.

  Sized kinds (replication, LCC, Berrut, Byzantine Berrut) are built to
  tolerate S; the others have a fixed N and are evaluated with S of their
  workers straggling. Returns None when S >= N (nothing left to evaluate).
  """
  kind = entry.kind
  k = ctx.num_queries
  s = num_stragglers
  f, params = ctx.base_fn, ctx.base_params
  if kind == "uncoded":
    fallback = (
        uncoded.majority_class_logits(ctx.train_labels, ctx.num_classes)
        if entry.get("fallback", False) else None
    )
    scheme = uncoded.Uncoded.create(k, fallback=fallback)
  elif kind == "replication":
    copies = entry.get("copies") or s + 1
    scheme = replication.Replication.create(k, copies - 1)
  elif kind == "lcc":
    scheme = lcc.LagrangeCode.create(k, s, degree=entry.get("degree", 1))
  elif kind == "berrut":
    scheme = berrut.BerrutCode.create(k, s)
  elif kind == "byzantine_berrut":
    scheme = berrut_byzantine.ByzantineBerrutCode.create(
        k, s, entry.num_adversaries, search=entry.get("search", "exhaustive")
    )
  elif kind == "parm":
    parity_fn, parity_params = _trained_parity(entry, name, ctx)
    code = parm_scheme.ParityCode.create(k)
    if s >= code.num_workers:
      return None
    return deployment.Deployment.parity(name, code, f, params, parity_fn, parity_params)
  elif kind == "learned":
    code = _trained_code(entry, name, ctx)
    if s >= code.num_workers:
      return None
    return deployment.Deployment.learned(name, code)
  else:
    raise ValueError(f"Scheme {name!r}: unknown kind {kind!r}; use one of {KINDS}.")
  if s >= scheme.num_workers:
    return None
  return deployment.Deployment.homogeneous(name, scheme, f, params)


def home_workers(scheme: base.Scheme) -> np.ndarray:
  """(K, N) bool: the workers that would serve query k uncoded.

  Query k's own worker is worker k (uncoded, ParM's systematic workers, and
  positionally for the other codes); for replication, every replica of k.
  Degraded-mode accuracy is measured on the queries whose home workers all
  straggled.
  """
  k, n = scheme.num_queries, scheme.num_workers
  if isinstance(scheme, replication.Replication):
    return np.arange(n)[None, :] % k == np.arange(k)[:, None]
  return np.arange(n)[None, :] == np.arange(k)[:, None]


# ---------------------------------------------------------------------------
# Evaluation of one deployment.


@dataclasses.dataclass
class SchemeMetrics:
  """Per-mask metrics, arrays of shape (M,); ``degraded_count`` counts queries."""

  accuracy: np.ndarray
  agreement: np.ndarray
  answered: np.ndarray
  degraded_correct: np.ndarray
  degraded_count: np.ndarray
  rejected: np.ndarray | None = None
  decode_seconds_per_group: float = float("nan")

  def select(self, rows: slice) -> "SchemeMetrics":
    """The metrics of a subset of the masks."""
    pick = lambda a: None if a is None else a[rows]
    return SchemeMetrics(self.accuracy[rows], self.agreement[rows], self.answered[rows],
                         self.degraded_correct[rows], self.degraded_count[rows],
                         pick(self.rejected), self.decode_seconds_per_group)

  def summary(self) -> dict[str, Any]:
    count = float(self.degraded_count.sum())
    per_mask = np.where(self.degraded_count > 0,
                        self.degraded_correct / np.maximum(self.degraded_count, 1), np.nan)
    worst = int(np.argmin(self.accuracy))
    out = dict(
        num_masks=int(self.accuracy.shape[0]),
        accuracy_mean=float(self.accuracy.mean()),
        accuracy_std=float(self.accuracy.std()),
        accuracy_min=float(self.accuracy.min()),
        accuracy_max=float(self.accuracy.max()),
        worst_mask_index=worst,
        agreement_mean=float(self.agreement.mean()),
        agreement_std=float(self.agreement.std()),
        answered_mean=float(self.answered.mean()),
        degraded_accuracy=(float(self.degraded_correct.sum()) / count) if count else None,
        degraded_accuracy_std=(float(np.nanstd(per_mask)) if count else None),
        degraded_queries=int(count),
        decode_us_per_group=1e6 * self.decode_seconds_per_group,
    )
    if self.rejected is not None:
      out["rejected_mean"] = float(self.rejected.mean())
    return out


def _worker_outputs(served: deployment.Deployment, groups: jax.Array, mesh) -> jax.Array:
  """(G, K, ...) groups -> (G, N, ...) outputs of every worker (nobody straggles)."""

  @jax.jit
  def run(groups):
    return jax.lax.map(lambda g: served.run_workers(served.encode(g), mesh=mesh), groups)

  return run(groups)


def evaluate_deployment(
    served: deployment.Deployment,
    groups: jax.Array,
    group_labels: jax.Array,
    base_predictions: jax.Array,
    masks: np.ndarray,
    *,
    mesh: jax.sharding.Mesh | None = None,
    adversary: str | None = None,
    num_adversaries: int = 0,
    key: jax.Array | None = None,
    outputs: jax.Array | None = None,
) -> SchemeMetrics:
  """Metrics of one deployment for each mask, on every group.

  Args:
    served: the deployment (scheme and worker tasks).
    groups: (G, K, ...) test queries.
    group_labels: (G, K) labels.
    base_predictions: (G, K) the base classifier's argmax on each query.
    masks: (M, N) availability.
    mesh: optional device mesh with a "workers" axis for the worker pass.
    adversary: None, or an adversary model of ``jaxcoded.adversaries``; then
      ``num_adversaries`` returned workers per mask and group are corrupted.
    num_adversaries: E.
    key: PRNG key of the adversaries.
    outputs: (G, N, ...) precomputed worker outputs (else computed here).

  Returns:
    SchemeMetrics with (M,) arrays.
  """
  scheme = served.scheme
  masks = jnp.asarray(masks)
  if masks.ndim != 2 or masks.shape[1] != scheme.num_workers:
    raise ValueError(
        f"evaluate_deployment({served.name!r}): masks must have shape (M, {scheme.num_workers}), "
        f"got {masks.shape}."
    )
  if outputs is None:
    outputs = _worker_outputs(served, groups, mesh)
  credit_fallback = bool(getattr(scheme, "has_fallback", False))
  home = jnp.asarray(home_workers(scheme))
  locates = hasattr(scheme, "decode_and_locate") and adversary is not None
  key = jax.random.key(0) if key is None else key

  def run(outputs, masks):
    def one_mask(args):
      index, mask = args

      def one_group(g, out):
        if adversary is not None and num_adversaries:
          group_key = jax.random.fold_in(jax.random.fold_in(key, index), g)
          bad = adversaries.random_adversary_mask(
              group_key, scheme.num_workers, num_adversaries, available_mask=mask
          )
          out = adversaries.corrupt(
              jax.random.fold_in(group_key, 1), out, bad, adversary, available_mask=mask
          )
        out = workers.mask_outputs(out, mask)
        if locates:
          decoded, rejected = scheme.decode_and_locate(out, mask)
          return decoded, jnp.sum(rejected)
        return served.decode(out, mask), jnp.zeros((), jnp.int32)

      decoded, rejected = jax.vmap(one_group)(jnp.arange(outputs.shape[0]), outputs)
      predictions = jnp.argmax(decoded.values, axis=-1)
      # A scheme with a fallback answer (uncoded's majority class) is scored
      # on its values everywhere; otherwise an unanswered query is wrong.
      scored = True if credit_fallback else decoded.answered
      correct = scored & (predictions == group_labels)
      agree = scored & (predictions == base_predictions)
      degraded = ~jnp.any(home & mask[None, :], axis=1)  # (K,)
      return (jnp.mean(correct), jnp.mean(agree), jnp.mean(decoded.answered),
              jnp.sum(correct & degraded[None]), jnp.sum(degraded) * outputs.shape[0],
              jnp.mean(rejected.astype(jnp.float32)))

    return jax.lax.map(one_mask, (jnp.arange(masks.shape[0]), masks), batch_size=16)

  # Compiled ahead of time, so the timed call is execution only: the decode
  # time per group is amortised over every mask and group of the batch.
  compiled = jax.jit(run).lower(outputs, masks).compile()
  values = jax.block_until_ready(compiled(outputs, masks))  # warm-up
  start = time.perf_counter()
  values = jax.block_until_ready(compiled(outputs, masks))
  seconds = (time.perf_counter() - start) / (masks.shape[0] * outputs.shape[0])
  acc, agree, answered, deg_correct, deg_count, rejected = (
      np.asarray(v, np.float64) for v in values
  )
  return SchemeMetrics(acc, agree, answered, deg_correct.astype(float), deg_count.astype(float),
                       rejected if locates else None, seconds)


def node_load(
    served: deployment.Deployment, query_shape: tuple[int, ...], base_flops: float
) -> dict[str, float]:
  """Master FLOPs per query and worker FLOPs per coded input, as fractions of f's FLOPs.

  Counted by XLA's cost analysis of the jitted encode + decode (master; the
  per-group cost divided by K) and of each worker task on one coded input
  (the largest over roles).
  """
  k, n = served.num_queries, served.num_workers
  queries = jax.ShapeDtypeStruct((k, *query_shape), jnp.float32)
  coded = jax.eval_shape(served.encode, queries)
  one_input = jax.ShapeDtypeStruct(coded.shape[1:], coded.dtype)
  worker_flops = max(
      load.xla_flops(lambda x, t=task: t.run(x), one_input, compiled=False)
      for task in served.tasks
  )
  output = jax.eval_shape(served.tasks[0].run, one_input)
  outputs = jax.ShapeDtypeStruct((n, *output.shape), output.dtype)
  mask = jax.ShapeDtypeStruct((n,), jnp.bool_)
  master = load.xla_flops(served.encode, queries, compiled=False) + load.xla_flops(
      lambda y, m: served.decode(y, m).values, outputs, mask, compiled=False
  )
  return dict(master_fraction=master / k / base_flops, worker_fraction=worker_flops / base_flops)


# ---------------------------------------------------------------------------
# The whole comparison.


def _versions() -> dict[str, str]:
  import flax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  import jaxcoded  # pylint: disable=g-import-not-at-top

  return dict(jaxcoded=jaxcoded.__version__, jax=jax.__version__, flax=flax.__version__,
              optax=optax.__version__, numpy=np.__version__, python=platform.python_version(),
              platform=platform.platform(), backend=jax.default_backend())


def _base_classifier(config: ml_collections.ConfigDict, workdir: pathlib.Path, log):
  from jaxcoded import training  # pylint: disable=g-import-not-at-top

  base_workdir = pathlib.Path(config.get("base_workdir") or workdir / "base")
  if (base_workdir / training.FINAL_METRICS_FILE).exists():
    log(f"base classifier: reloading {base_workdir}")
    model, base_config = training.load_model(base_workdir)
  else:
    log(f"base classifier: training {config.base.model} on {config.base.dataset} -> {base_workdir}")
    model = training.train_and_evaluate(config.base, base_workdir).model
    base_config = config.base
  if base_config.dataset != config.dataset:
    raise ValueError(
        f"The base classifier in {base_workdir} was trained on {base_config.dataset}, "
        f"but this comparison is on {config.dataset}."
    )
  model.eval()
  return model, base_config, base_workdir


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a comparison config that cannot run."""
  def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)

  if not is_int(config.num_queries) or config.num_queries < 1:
    raise ValueError(f"config.num_queries (K) must be an integer >= 1, got {config.num_queries!r}.")
  stragglers_ = list(config.stragglers)
  if not stragglers_ or any(not is_int(s) or s < 0 for s in stragglers_):
    raise ValueError(f"config.stragglers must be integers >= 0, got {stragglers_!r}.")
  workers.mesh_for_config(config.get("mesh_devices"))
  if not config.schemes:
    raise ValueError("config.schemes is empty: nothing to compare.")
  for name, entry in config.schemes.items():
    if entry.get("kind") not in KINDS:
      raise ValueError(f"Scheme {name!r}: kind must be one of {KINDS}, got {entry.get('kind')!r}.")
    if entry.kind == "byzantine_berrut" and not entry.get("num_adversaries"):
      raise ValueError(f"Scheme {name!r}: byzantine_berrut needs num_adversaries >= 1.")
    if entry.kind in ("parm", "learned") and entry.get("config") is None:
      raise ValueError(
          f"Scheme {name!r}: kind {entry.kind!r} needs entry.config (its training config)."
      )
    if entry.kind == "lcc":
      lcc.LagrangeCode.sizes_for(config.num_queries, max(stragglers_), entry.get("degree", 1))
    if entry.get("adversary") not in (None, *adversaries.MODELS):
      raise ValueError(
          f"Scheme {name!r}: adversary must be one of {adversaries.MODELS}, got {entry.adversary!r}."
      )


def run_comparison(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
  """Evaluates every configured scheme and writes results.json, results.md, masks.npz, plots.

  Args:
    config: a comparison config (``configs/eval_digits.py`` documents the fields).
    workdir: output directory; trained parts go to ``<workdir>/trained/<name>``
      unless an entry names its own workdir.
    log: where progress lines go.
    progress: show a progress bar over the (scheme, S) sweep.

  Returns:
    The results dict written to ``results.json``.
  """
  from jaxcoded import plots  # pylint: disable=g-import-not-at-top

  check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  started = time.time()
  model, base_config, base_workdir = _base_classifier(config, workdir, log)
  graphdef, base_params = nnx.split(model)

  def classify(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  load_args = dict(data_dir=config.get("data_dir"), source=config.get("data_source") or "auto")
  test = data.load(config.dataset, "test", seed=None, **load_args)
  train_labels = data.load(config.dataset, "train", seed=None, **load_args).labels
  k = config.num_queries
  groups, group_labels = evaluation.make_groups(test.images, test.labels, k)
  if config.get("max_groups"):
    groups, group_labels = groups[: config.max_groups], group_labels[: config.max_groups]
  base_logits = jax.jit(jax.vmap(classify, in_axes=(None, 0)))(base_params, test.images)
  base_accuracy = float(np.mean(np.argmax(base_logits, -1) == test.labels))
  base_predictions = jax.jit(
      jax.vmap(jax.vmap(classify, in_axes=(None, 0)), in_axes=(None, 0))
  )(base_params, groups).argmax(-1)
  base_on_groups = float(jnp.mean(base_predictions == group_labels))
  log(f"base classifier: test accuracy {base_accuracy:.4f} ({len(test.labels)} images); "
      f"{groups.shape[0]} groups of K = {k}")
  base_flops = models.flops_per_example(base_config.model, tuple(test.image_shape))

  ctx = Context(k, classify, base_params, base_config, base_workdir, workdir, train_labels,
                test.num_classes, log)
  bank = MaskBank(config.seed, config.masks.num_random, config.masks.exhaustive_limit)
  mesh = workers.mesh_for_config(config.get("mesh_devices"))
  runs = _plan_runs(config, ctx)
  records, deadline_records = [], []
  deadline = config.masks.get("deadline")
  bar = _progress(runs, progress)
  for name, served, stragglers_ in bar:
    entry = config.schemes[name]
    if hasattr(bar, "set_description"):
      bar.set_description(f"{name}, S = {', '.join(map(str, stragglers_))}")
    sizes = served.scheme.sizes
    # Every mask set of this deployment in one batch: one compilation.
    blocks = [(s, bank.masks(sizes.num_workers, s)) for s in stragglers_]
    if deadline and deadline.num_masks and _deadline_design_s(entry, config) in stragglers_:
      blocks.append(("deadline", bank.deadline_masks(
          sizes.num_workers, deadline.num_masks, deadline.shift, deadline.rate, deadline.deadline
      )))
    outputs = _worker_outputs(served, groups, _usable_mesh(mesh, served))
    metrics = evaluate_deployment(
        served, groups, group_labels, base_predictions, np.concatenate([m for _, m in blocks]),
        outputs=outputs, adversary=entry.get("adversary"),
        num_adversaries=entry.get("num_adversaries") or 0,
        key=_adversary_key(config.seed, name, sizes.num_workers, stragglers_[0]),
    )
    load = node_load(served, tuple(test.image_shape), base_flops)
    start = 0
    for s, masks in blocks:
      summary = metrics.select(slice(start, start + len(masks))).summary()
      start += len(masks)
      common = dict(scheme=name, kind=entry.kind, K=k, N=sizes.num_workers,
                    R=sizes.recovery_threshold, redundancy=sizes.num_workers / k,
                    adversary=entry.get("adversary"),
                    num_adversaries=entry.get("num_adversaries") or 0,
                    masks_fingerprint=fingerprint(masks), **load, **summary)
      if s == "deadline":
        deadline_records.append(dict(
            designed_for_S=_deadline_design_s(entry, config),
            mean_stragglers=float((~masks).sum(1).mean()), **common,
        ))
        continue
      worst = masks[summary["worst_mask_index"]]
      records.append(dict(
          S=s, guaranteed=s <= sizes.max_stragglers,
          masks_kind="all" if len(masks) == math.comb(sizes.num_workers, s) else "random",
          worst_mask_stragglers=np.flatnonzero(~worst).tolist(), **common,
      ))
  np.savez_compressed(workdir / "masks.npz", **bank.arrays())
  results = dict(
      config=config.to_dict(), versions=_versions(), seed=config.seed,
      base=dict(model=base_config.model, workdir=str(base_workdir), accuracy=base_accuracy,
                accuracy_on_groups=base_on_groups, flops_per_query=base_flops),
      num_groups=int(groups.shape[0]), num_queries=k, results=records,
      deadline=deadline_records, seconds=time.time() - started,
  )
  (workdir / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
  (workdir / "results.md").write_text(format_results(results))
  results["plots"] = plots.write_comparison_plots(results, workdir)
  (workdir / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
  log(f"wrote {workdir / 'results.json'}, results.md and {len(results['plots'])} plots "
      f"in {results['seconds']:.0f} s")
  return results


def add_scheme(
    comparison: ml_collections.ConfigDict, name: str, kind: str, /, **options
) -> None:
  """Adds a scheme entry to ``comparison.schemes``; its ``position`` keeps the table order.

  ``options`` are the entry's fields (``config=`` for a trained part's training config).
  """
  if kind not in KINDS:
    raise ValueError(f"add_scheme({name!r}): kind must be one of {KINDS}, got {kind!r}.")
  if "schemes" not in comparison:
    comparison.schemes = ml_collections.ConfigDict()
  if name in comparison.schemes:
    raise ValueError(f"add_scheme: a scheme named {name!r} is already in the comparison.")
  comparison.schemes[name] = ml_collections.ConfigDict(
      dict(kind=kind, position=len(comparison.schemes), **options)
  )


def _adversary_key(seed: int, name: str, num_workers: int, first_s: int) -> jax.Array:
  """Depends on the scheme and its masks only, so reruns and subsets agree."""
  key = jax.random.fold_in(jax.random.key(seed + 1), zlib.crc32(name.encode()) % (1 << 31))
  return jax.random.fold_in(jax.random.fold_in(key, num_workers), first_s)


def _plan_runs(config, ctx) -> list[tuple[str, deployment.Deployment, list[int]]]:
  """(name, deployment, S values) per evaluation batch.

  A sized scheme is a different deployment at each S; a fixed one is
  evaluated at every S below its N in one batch.
  """
  runs = []
  for name in scheme_names(config):
    entry = config.schemes[name]
    if entry.kind in SIZED_KINDS:
      for s in config.stragglers:
        served = build_deployment(name, entry, s, ctx)
        if served is not None:
          runs.append((name, served, [s]))
    else:
      served = build_deployment(name, entry, 0, ctx)
      stragglers_ = [s for s in config.stragglers if s < served.num_workers]
      if stragglers_:
        runs.append((name, served, stragglers_))
  return runs


def scheme_names(config: ml_collections.ConfigDict) -> list[str]:
  """The configured schemes in their ``position`` order (ConfigDict sorts its keys)."""
  names = list(config.schemes)
  return sorted(names, key=lambda n: (config.schemes[n].get("position", len(names)), n))


def _deadline_design_s(entry, config) -> int:
  """The S at which a scheme meets the deadline masks (fixed-N schemes: the first S)."""
  if entry.kind in SIZED_KINDS:
    return config.masks.deadline.get("design_stragglers", 1)
  return list(config.stragglers)[0]


def _usable_mesh(mesh, served):
  if mesh is None:
    return None
  size = mesh.shape["workers"]
  return mesh if any(served.roles.count(r) % size == 0 for r in set(served.roles)) else None


def _progress(items, enabled):
  if not enabled:
    return items
  try:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover
    return items
  return tqdm.tqdm(items, unit="run", leave=False)


def _jsonable(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_results(results: dict[str, Any]) -> str:
  """The Markdown report: base accuracy, the main table, the deadline table."""
  base = results["base"]
  lines = [
      f"Base classifier {base['model']}: test accuracy {base['accuracy']:.3f} "
      f"({results['num_groups']} groups of K = {results['num_queries']}).",
      "",
  ]
  rows = []
  for r in results["results"]:
    degraded = "—" if r["degraded_accuracy"] is None else f"{r['degraded_accuracy']:.3f}"
    name = r["scheme"] + ("" if r["guaranteed"] else " (beyond S_max)")
    rows.append([
        name, r["S"], r["N"], r["R"], f"{r['redundancy']:.2f}",
        f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}", f"{r['accuracy_min']:.3f}",
        f"{r['agreement_mean']:.3f}", degraded, f"{r['answered_mean']:.3f}",
        f"{100 * r['master_fraction']:.1f}%", f"{r['worker_fraction']:.2f}",
        f"{r['decode_us_per_group']:.1f}", f"{r['num_masks']} {r['masks_kind']}",
    ])
  lines.append(evaluation.markdown_table(
      ["scheme", "S", "N", "R", "N/K", "accuracy (mean ± std)", "worst mask", "agreement",
       "degraded", "answered", "master / f", "worker / f", "decode µs/group", "masks"], rows))
  if results.get("deadline"):
    lines += ["", "Deadline masks (shifted-exponential latencies, fixed deadline):", ""]
    drows = [[d["scheme"], d["N"], d["R"], f"{d['mean_stragglers']:.2f}",
              f"{d['accuracy_mean']:.3f} ± {d['accuracy_std']:.3f}", f"{d['answered_mean']:.3f}",
              d["num_masks"]] for d in results["deadline"]]
    lines.append(evaluation.markdown_table(
        ["scheme", "N", "R", "mean stragglers", "accuracy", "answered", "masks"], drows))
  return "\n".join(lines) + "\n"
