"""The masked-straggler comparison of every scheme (docs/design.md, "Protocol").

:func:`run_comparison` evaluates a list of schemes, configured as in
``configs/eval_digits.py``, on the test set cut into groups of K:

* one base classifier f for everyone (trained on demand, or reloaded);
* trained parts (ParM's parity model, learned codes) loaded from their
  workdirs, or trained there first when missing (``comparison.trained``);
* for each S of ``config.stragglers`` and each scheme, the masks of S
  stragglers among its N workers (``comparison.masks``), the same arrays for
  every scheme with the same N; the worst mask of each scheme is reported too;
* deadline masks: per-worker latencies from a latency model
  (``config.masks.deadline.model``, shifted exponential by default) and a
  fixed deadline; a worker later than the deadline straggles;
* optionally E Byzantine workers per mask (``adversary``), drawn among the
  returned ones, whose outputs an adversary model replaces.

Scoring is ``comparison.metrics.evaluate_deployment``; reports and plots are
``comparison.report`` and ``comparison.plots``. With ``config.mesh_devices >
1`` the worker pass runs under ``shard_map`` over a device mesh.

In a multi-process job (``jaxcoded.distributed``; ``eval/evaluate.py
--distributed``) the comparison is one job: trained parts are trained over the
devices of every process, the worker pass is shard_mapped over a mesh that
spans them (``mesh_devices`` of them, an equal share of each process's), the
decoding of the masks runs on each process's copy of the worker outputs (the
same in every process), and process 0 alone writes
``results.json``, ``results.md``, ``masks.npz`` and the plots.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcoded import data, distributed, models, stragglers, training
from jaxcoded.comparison import builders, metrics, plan, plots, report
from jaxcoded.comparison import masks as masks_lib
from jaxcoded.comparison import trained as trained_lib
from jaxcoded.schemes import base

__all__ = ["run_comparison"]


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
  plan.check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  started = time.time()
  model, base_config, base_workdir = trained_lib.base_classifier(config, workdir, log)
  classify, base_params = training.classifier.as_worker_fn(model)

  load_args = dict(data_dir=config.get("data_dir"), source=config.get("data_source") or "auto")
  test = data.load(config.dataset, "test", seed=None, **load_args)
  train = data.load(config.dataset, "train", seed=None, **load_args)
  train_labels = train.labels
  held_out = held_out_images(train.images, config.get("held_out_images"))
  k = config.num_queries
  groups, group_labels = metrics.make_groups(test.images, test.labels, k)
  if config.get("max_groups"):
    groups, group_labels = groups[: config.max_groups], group_labels[: config.max_groups]
  base_logits = jax.jit(jax.vmap(classify, in_axes=(None, 0)))(base_params, test.images)
  base_accuracy = float(np.mean(np.argmax(base_logits, -1) == test.labels))
  group_logits = jax.jit(
      jax.vmap(jax.vmap(classify, in_axes=(None, 0)), in_axes=(None, 0))
  )(base_params, groups)
  base_predictions = group_logits.argmax(-1)
  base_on_groups = float(jnp.mean(base_predictions == group_labels))
  log(f"base classifier: test accuracy {base_accuracy:.4f} ({len(test.labels)} images); "
      f"{groups.shape[0]} groups of K = {k}")
  base_flops = models.flops_per_example(base_config.model, tuple(test.input_shape),
                                        model_kwargs=base_config.get("model_kwargs"),
                                        num_classes=test.num_classes)

  parts = trained_lib.TrainedParts(workdir, k, base_config, base_workdir, log)
  base_task = base.WorkerTask(classify, base_params)

  def context(name, entry):
    return builders.BuildContext(k, base_task, test.num_classes, train_labels,
                                 trained=parts.get(name, entry), held_out_images=held_out,
                                 seed=config.seed)

  bank = masks_lib.MaskBank(config.seed, config.masks.num_random, config.masks.exhaustive_limit)
  mesh = distributed.mesh_for_config(config.get("mesh_devices"))
  runs = plan.plan_runs(config, context, data.query_spec(config.dataset))
  deadline = config.masks.get("deadline")
  deadline_model = _deadline_model(deadline) if deadline and deadline.num_masks else None
  records, deadline_records = [], []
  bar = _progress(runs, progress)
  for run in bar:
    name, served, stragglers_ = run.name, run.served, run.stragglers
    entry = config.schemes[name]
    if hasattr(bar, "set_description"):
      bar.set_description(f"{name}, S = {', '.join(map(str, stragglers_))}")
    sizes = served.scheme.sizes
    # Every mask set of this deployment in one batch: one compilation.
    blocks = [(s, bank.masks(sizes.num_workers, s)) for s in stragglers_]
    if deadline_model is not None and plan.deadline_design_stragglers(entry, config) in stragglers_:
      blocks.append(("deadline", bank.deadline_masks(
          sizes.num_workers, deadline.num_masks, deadline_model, deadline.deadline
      )))
    outputs = metrics.worker_outputs(served, groups, plan.usable_mesh(mesh, served))
    scores = metrics.evaluate_deployment(
        served, groups, group_labels, base_predictions, np.concatenate([m for _, m in blocks]),
        outputs=outputs, adversary=entry.get("adversary"),
        num_adversaries=entry.get("num_adversaries") or 0,
        key=plan.adversary_key(config.seed, name, sizes.num_workers, stragglers_[0]),
        base_logits=group_logits,
    )
    load = metrics.node_load(served, tuple(test.image_shape), base_flops)
    plan.check_budgets(name, entry, load)
    start = 0
    for s, masks in blocks:
      summary = scores.select(slice(start, start + len(masks))).summary()
      start += len(masks)
      common = dict(scheme=name, kind=entry.kind, K=k, N=sizes.num_workers,
                    R=sizes.recovery_threshold, redundancy=sizes.num_workers / k,
                    adversary=entry.get("adversary"),
                    num_adversaries=entry.get("num_adversaries") or 0,
                    masks_fingerprint=masks_lib.fingerprint(masks),
                    settings=served.scheme.settings(), **load, **summary)
      if s == "deadline":
        deadline_records.append(dict(
            designed_for_S=plan.deadline_design_stragglers(entry, config),
            mean_stragglers=float((~masks).sum(1).mean()), **common,
        ))
        continue
      worst = masks[summary["worst_mask_index"]]
      records.append(dict(
          S=s, guaranteed=s <= sizes.max_stragglers,
          masks_kind="all" if len(masks) == math.comb(sizes.num_workers, s) else "random",
          worst_mask_stragglers=np.flatnonzero(~worst).tolist(), **common,
      ))
  results = dict(
      config=config.to_dict(), versions=report.versions(), seed=config.seed,
      base=dict(model=base_config.model, workdir=str(base_workdir), accuracy=base_accuracy,
                accuracy_on_groups=base_on_groups, flops_per_query=base_flops),
      num_groups=int(groups.shape[0]), num_queries=k, results=records,
      deadline=deadline_records, seconds=time.time() - started,
      deadline_model=deadline.get("model", "shifted_exponential") if deadline else None,
  )
  if distributed.is_main():  # one writer; every process returns the same results
    np.savez_compressed(workdir / "masks.npz", **bank.arrays())
    (workdir / "results.md").write_text(report.format_results(results))
    results["plots"] = plots.write_comparison_plots(results, workdir)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=report.jsonable))
    log(f"wrote {workdir / 'results.json'}, results.md and {len(results['plots'])} plots "
        f"in {results['seconds']:.0f} s")
  distributed.barrier(f"comparison {workdir} written")
  return results


def held_out_images(train_images: np.ndarray, count: int | None = None) -> np.ndarray:
  """The last ``count`` training images (default: 4000, at most a quarter of the split).

  What schemes that fit settings on data see (``BuildContext.held_out_images``):
  never the test split, and no labels.
  """
  if count is None:
    count = min(4000, len(train_images) // 4)
  if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
    raise ValueError(f"config.held_out_images must be an integer >= 1, got {count!r}.")
  return np.asarray(train_images[-min(int(count), len(train_images)):])


def _deadline_model(deadline: ml_collections.ConfigDict) -> stragglers.LatencyModel:
  """The configured latency model: ``model`` ("shifted_exponential" or "pareto") and its fields."""
  kind = deadline.get("model", "shifted_exponential")
  fields = {f for f in ("shift", "rate", "scale", "alpha") if deadline.get(f) is not None}
  return stragglers.latency_model(kind, **{f: deadline[f] for f in fields})


def _progress(items, enabled):
  if not enabled:
    return items
  try:
    from tqdm import auto as tqdm
  except ImportError:  # pragma: no cover
    return items
  return tqdm.tqdm(items, unit="run", leave=False)
