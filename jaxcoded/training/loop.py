"""One plain training loop: Optax updates, Orbax checkpoints, JSON-lines metrics.

:func:`fit` trains any NNX model with a user-supplied ``loss_fn(model, batch,
rng) -> (loss, metrics)``: it checkpoints, resumes, logs and evaluates. The
three tasks of ``jaxcoded.training`` (classifier, parity, coder) call it.

The workdir after a run::

  config.json          the resolved config of the latest (re)start
  metrics.jsonl        one JSON object per logged step (train averages since
                       the previous log line, learning rate, steps/s, and the
                       eval metrics at eval steps)
  final_metrics.json   the final step's metrics and eval, once training ends
  checkpoints/<step>/  Orbax checkpoints: items "model" (``nnx.state(model)``)
                       and "optimizer" (``nnx.state(optimizer)``)

Resuming: :func:`fit` restores the latest checkpoint in the workdir, if any,
and continues from its step. Every source of randomness is a function of the
global step (the per-step key is ``jax.random.fold_in(key, step)``, the batch
iterator is asked to start at the step, the learning rate schedule counts the
optimizer's restored step), so an interrupted and resumed run computes exactly
what an uninterrupted run does. Lines of ``metrics.jsonl`` written after the
restored checkpoint are dropped on resume, so the file reads as one run.

The step has no per-step host work beyond its dispatch: the model and optimizer
are split once (``nnx.split``), each step is one ``jax.jit`` call of a pure
function of their state arrays (donated), and the metrics stay on the device,
in a history of ``min(log_every, checkpoint_every)`` slots, fetched at log,
eval and checkpoint steps, where the NaN check runs. The host never waits for
a step in between, so it prepares the next batches while the device computes
(bench/bench_training.py times this against a bare ``jax.jit`` step).

Every task finishes by writing ``final_metrics.json``: :func:`is_finished`
is the one "trained" marker.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm
from absl import logging
from flax import nnx

from jaxcoded import distributed, integrity
from jaxcoded.training import checkpoints

__all__ = [
    "FINAL_METRICS_FILE",
    "METRICS_FILE",
    "NonFiniteLossError",
    "TrainResult",
    "fit",
    "is_finished",
    "read_metrics",
]

Batch = Any
LossFn = Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]

# How many dispatched steps may be unfinished when the host dispatches the next one. XLA's CPU
# client admits at most 32 programs in flight per device; past that, a launch blocks a thread of
# its client pool, which has max(cores, devices) threads: exactly one per device on a machine with
# fewer cores than devices. A program with collectives needs one pool thread per device at once,
# so blocked launches starved it and its all-gather rendezvous timed out (docs/scaling.md, "The
# 8-device deadlock"). A few steps ahead keep the device busy all the same.
MAX_STEPS_IN_FLIGHT = 4

CHECKPOINT_DIR = checkpoints.CHECKPOINT_DIR
CONFIG_FILE = checkpoints.CONFIG_FILE
METRICS_FILE = "metrics.jsonl"
FINAL_METRICS_FILE = "final_metrics.json"


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; nothing of that state was saved."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What :func:`fit` and :func:`train_and_evaluate` return.

  Attributes:
    model: the trained model (in training mode; the object passed to fit).
    step: the number of optimizer steps taken, counting those of earlier runs
      that this one resumed.
    completed: whether ``step`` reached ``num_steps`` (False after
      ``stop_after_steps``).
    final_metrics: for a completed run, the last logged train metrics and the
      final eval metrics (also in ``final_metrics.json``); else empty.
    report: a task's own evaluation beyond the scalar metrics (the learned
      codes' accuracy by S and load table); empty for the others.
  """

  model: nnx.Module = dataclasses.field(repr=False)
  step: int
  completed: bool
  final_metrics: dict[str, float]
  report: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)


# ---------------------------------------------------------------------------
# The train step.


def _train_step(
    model: nnx.Module, optimizer: nnx.Optimizer, batch: Batch, rng: jax.Array, loss_fn: LossFn
):
  # A plain positional signature: nnx.grad cannot bind keyword-only defaults.
  def loss(model, batch, rng):
    return loss_fn(model, batch, rng)

  grad_fn = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
  (_, metrics), grads = grad_fn(model, batch, rng)
  optimizer.update(model, grads)
  return metrics


@dataclasses.dataclass(frozen=True)
class _Step:
  """The compiled train step of one (model and optimizer structure, loss, batch structure).

  ``fn(leaves, carry, batch, key) -> (leaves, carry, done)`` is one ``jax.jit`` of a
  pure function: ``leaves`` are the arrays of ``nnx.state((model,
  optimizer))`` in ``jax.tree.flatten`` order (a flat list: the cheapest
  pytree to pass), ``carry`` is ``{"step": int32, "history": {name: (window,
  ...)}}``; step ``s`` writes its metrics into slot ``(s - 1) % window`` of
  the history. Both are donated: nothing is copied and nothing leaves the
  device. ``done`` is the step's number in a buffer of its own (not donated
  later): the loop waits on it to bound how far the host runs ahead
  (``MAX_STEPS_IN_FLIGHT``). ``metric_spec`` is the metrics' structure (from
  ``jax.eval_shape``).
  """

  fn: Callable[..., Any]
  metric_spec: Mapping[str, jax.ShapeDtypeStruct]
  window: int

  def init_carry(self, step: int) -> dict[str, Any]:
    return {
        "step": jnp.asarray(step, jnp.int32),
        "history": {
            name: jnp.zeros((self.window, *spec.shape), spec.dtype)
            for name, spec in self.metric_spec.items()
        },
    }


def _pure_step(graphdef, treedef, loss_fn, leaves, batch, rng):
  model, optimizer = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
  metrics = _train_step(model, optimizer, batch, rng, loss_fn)
  new_leaves, new_treedef = jax.tree.flatten(nnx.state((model, optimizer)))
  if new_treedef != treedef:
    raise ValueError("The train step changed the structure of the model or optimizer state.")
  return new_leaves, metrics


@functools.lru_cache(maxsize=16)
def _compile_step(graphdef, treedef, loss_fn: LossFn, window: int, batch_spec, leaf_spec) -> _Step:
  """The :class:`_Step` of these static parts; cached, so repeated runs share the compilation.

  ``loss_fn`` is traced once: ``jax.eval_shape`` of the jitted pure step gives
  the metrics' structure (to allocate the history) and leaves its trace in
  JAX's cache, where the jitted step that calls it finds it again. The
  history's length ``window`` is a shape of the compiled step: runs with
  another ``min(log_every, checkpoint_every)`` compile their own.
  """
  pure = jax.jit(functools.partial(_pure_step, graphdef, treedef, loss_fn))
  key = jax.eval_shape(lambda: jax.random.key(0))
  batch_shapes = jax.tree.unflatten(*batch_spec)
  _, metric_spec = jax.eval_shape(pure, list(leaf_spec), batch_shapes, key)
  if not isinstance(metric_spec, Mapping) or "loss" not in metric_spec:
    raise ValueError(
        f"loss_fn must return (loss, metrics) with a metrics['loss']; its metrics: {metric_spec}."
    )

  def step(leaves, carry, batch, key):
    number = carry["step"] + 1
    leaves, metrics = pure(leaves, batch, jax.random.fold_in(key, number))
    slot = (number - 1) % window
    history = {name: carry["history"][name].at[slot].set(metrics[name]) for name in metric_spec}
    return leaves, {"step": number, "history": history}, number + 0

  return _Step(jax.jit(step, donate_argnums=(0, 1)), dict(metric_spec), window)


def _spec(tree) -> tuple[Any, tuple[jax.ShapeDtypeStruct, ...]]:
  """A hashable (treedef, leaf shapes and dtypes) of a pytree of arrays."""
  leaves, treedef = jax.tree.flatten(jax.eval_shape(lambda t: t, tree))
  return treedef, tuple(leaves)


def _fetch_history(history: Mapping[str, jax.Array]) -> dict[str, Any]:
  """The on-device metrics history, on the host (one transfer; the only per-window sync)."""
  return jax.device_get(history)


def _leaves_of(graph, treedef) -> list[Any]:
  leaves, found = jax.tree.flatten(nnx.state(graph))
  if found != treedef:
    raise ValueError("eval_fn changed the structure of the model's state.")
  return leaves


def _global_batches(batches: Iterator[Batch], mesh: jax.sharding.Mesh) -> Iterator[Batch]:
  """Host batches -> global arrays: each process hands JAX only its own rows of each batch."""
  for batch in batches:
    size = jax.tree.leaves(batch)[0].shape[0]
    rows = distributed.process_rows(size, mesh)
    yield distributed.global_batch(jax.tree.map(lambda leaf: leaf[rows], batch), mesh, size)


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
  """Drops the lines of a metrics file logged after ``last_step``."""
  if not path.exists():
    return
  kept = [record for record in integrity.read_jsonl(path) if record["step"] <= last_step]
  path.write_text("".join(json.dumps(record) + "\n" for record in kept))


def _check_finite(loss: float, step: int, last_finite: tuple[int, float] | None, saved: int | None):
  if math.isfinite(loss):
    return
  before = "no finite loss before it" if last_finite is None else (
      f"last finite loss {last_finite[1]:.6g} at step {last_finite[0]}"
  )
  where = "no checkpoint was saved" if saved is None else f"the latest checkpoint is step {saved}"
  raise NonFiniteLossError(
      f"Training loss became {loss} at step {step} ({before}); stopped without saving this state, "
      f"{where}. Lower the learning rate or check the inputs and the loss."
  )


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    train_batches: Callable[[int], Iterator[Batch]],
    *,
    num_steps: int,
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
    learning_rate_fn: optax.Schedule | None = None,
    wrt: nnx.filterlib.Filter = nnx.Param,
    mesh: jax.sharding.Mesh | None = None,
) -> TrainResult:
  """Trains ``model`` in place for ``num_steps`` optimizer steps, resuming if it can.

  Steps count from 1: step ``s`` is the s-th optimizer update, and a
  checkpoint or metrics record at step ``s`` holds the state after it. Step
  ``s`` computes ``loss_fn(model, batch, jax.random.fold_in(key, s))`` with
  ``key = jax.random.key(config.seed)``, differentiates it with respect to
  the model's variables selected by ``wrt`` (default all ``nnx.Param`` s;
  other state, such as BatchNorm statistics, follows the forward pass) and
  applies ``tx`` through ``nnx.Optimizer``.

  The step is functional (the Flax performance guide's "functional training
  loop"): the model and optimizer are split once, and each step is one call
  of a ``jax.jit`` of a pure function of their state arrays, donated, so the
  host does no graph traversal per step. It is traced and compiled once per
  model structure, ``tx``, ``loss_fn`` and batch shape, and shared by later
  runs in the process. The metrics stay on the device: ``fit`` fetches them
  (one transfer) only at log, eval and checkpoint steps and at the last step,
  and checks there, step by step, that each loss is finite, before anything
  is logged or saved. During training the model's own arrays are stale (the
  step donates them); ``eval_fn`` gets the model with the current state, and
  at the end (or on an error) the model holds the latest state in place.

  If ``workdir/checkpoints`` holds a checkpoint, its model and optimizer
  state are restored and training continues after its step ``s``, asking
  ``train_batches(s)`` for the batches from there on.

  Config fields read (besides what it writes to ``config.json``):
    seed: the per-step key's seed.
    log_every: log averaged train metrics every this many steps.
    eval_every: run ``eval_fn`` every this many steps (0: only at the end);
      eval steps are logged too.
    checkpoint_every: save every this many steps; the last step is always
      saved.
    keep_checkpoints: how many of the latest checkpoints to keep.
    progress_bar: show a tqdm bar (only when stderr is a terminal).
    stop_after_steps (optional): stop once this global step is reached, as if
      the run were interrupted there (no extra checkpoint, no final eval).
      The schedule still spans ``num_steps``. 0 or None: run to the end.

  Args:
    model: the model to train, modified in place.
    tx: the Optax transformation; its schedule must count optimizer steps.
    loss_fn: ``loss_fn(model, batch, rng) -> (loss, metrics)``: a scalar
      loss and a dict of scalar metrics to average and log. Static under jit
      (hashable; pass the same function object on each call to reuse the
      compiled step).
    train_batches: ``train_batches(num_done)`` returns an iterator of the
      batches after the first ``num_done`` ones (its i-th item, from 0, is
      the batch of step ``num_done + 1 + i``); it must give the same batches
      whatever ``num_done`` it starts from. Steps run asynchronously, and on
      CPU a jitted call may read a NumPy batch in place: yield fresh arrays,
      never a buffer that is refilled for the next batch.
    num_steps: total optimizer steps of the run, resumed or not.
    workdir: where config, metrics and checkpoints go.
    config: the run's config.
    eval_fn: ``eval_fn(model) -> {name: float}``, called at eval steps and at
      the end; its results join that step's metrics record as returned (name
      them apart from the train metrics, e.g. ``test_accuracy``).
    learning_rate_fn: the schedule, to log the learning rate of each step.
    wrt: which variables to train (an NNX filter, e.g. ``nnx.All(nnx.Param,
      nnx.PathContains("encoder"))`` to leave a frozen sub-model alone); the
      rest is neither differentiated nor decayed.
    mesh: a 1-D device mesh (``distributed.global_mesh``) to run the job
      over: the state is replicated on its devices, each batch is split over
      them along axis 0 (each process supplies only its own rows), and
      checkpoints hold global arrays. Default: none in one process, every
      device of every process in a multi-process job. Only process 0 writes
      ``config.json``, ``metrics.jsonl`` and ``final_metrics.json``; after the
      run the model holds this process's copy of the state.

  Returns:
    A :class:`TrainResult`.

  Raises:
    NonFiniteLossError: the loss became NaN or inf; raised at the next fetch
      (at most ``min(log_every, checkpoint_every)`` steps later), naming the
      first such step and the last finite loss before it. No checkpoint or
      metrics record holds that state or a later one; pending saves of
      earlier, finite states are completed.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}.")
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  main = distributed.is_main()  # only process 0 writes config, metrics and final metrics
  if main:
    (workdir / CONFIG_FILE).write_text(config.to_json(indent=2, sort_keys=True) + "\n")
  metrics_path = workdir / METRICS_FILE

  optimizer = nnx.Optimizer(model, tx, wrt=wrt)
  # Several processes: one job over a global mesh. The state is replicated on every device of
  # it, each process supplies its own rows of every batch, and checkpoints hold global arrays.
  if mesh is None and distributed.is_multiprocess():
    mesh = distributed.global_mesh()
  if mesh is not None:
    nnx.update((model, optimizer), distributed.replicate(nnx.state((model, optimizer)), mesh))
  manager = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  start_step = manager.latest_step() or 0
  if start_step > num_steps:
    raise ValueError(
        f"{workdir / CHECKPOINT_DIR} holds step {start_step}, beyond num_steps={num_steps}: "
        "use a fresh workdir or a larger num_steps."
    )
  if start_step:
    # The newest step whose arrays match their checksums (jaxcoded.integrity); damaged
    # newer steps are skipped with a warning naming them, and moved to <step>.damaged.
    try:
      start_step = checkpoints.restore_latest_train_state(manager, model, optimizer)
    except Exception:
      manager.close()
      raise
    logging.info("Resumed from %s at step %d.", workdir / CHECKPOINT_DIR, start_step)
  if main:
    _truncate_metrics(metrics_path, start_step)

  stop_step = max(start_step, min(config.get("stop_after_steps") or num_steps, num_steps))
  key = jax.random.key(config.seed)
  eval_every = config.eval_every
  saved_step = start_step or None
  last_finite = None
  sums, count = {}, 0
  record = {}
  show_bar = bool(config.progress_bar) and sys.stderr.isatty()
  bar = tqdm.tqdm(
      total=num_steps, initial=start_step, disable=not show_bar, desc="train", unit="step"
  )
  # The functional step: split once, then one jitted pure function of the flat list of state
  # arrays. The graph holds them again only where the host needs it: for eval_fn, for a
  # checkpoint (copies, so that the next step may donate the originals) and at the end.
  graph = (model, optimizer)
  graphdef, state = nnx.split(graph)
  leaves, treedef = jax.tree.flatten(state)
  batches = train_batches(start_step)
  if mesh is not None:
    batches = _global_batches(batches, mesh)
  # Metrics stay on the device until a log, eval, checkpoint or the last step: at most
  # min(log_every, checkpoint_every) steps apart, the length of the on-device history.
  window = min(config.log_every, config.checkpoint_every)
  fetched = start_step  # the metrics of steps <= fetched are on the host
  tick = time.perf_counter()
  try:
    if stop_step > start_step:
      first = next(batches)
      batches = itertools.chain([first], batches)
      train_step = _compile_step(graphdef, treedef, loss_fn, window, _spec(first), _spec(leaves)[1])
      carry = train_step.init_carry(start_step)
      if mesh is not None:
        carry = distributed.replicate(carry, mesh)
    in_flight = collections.deque()  # the `done` tokens of dispatched steps, oldest first
    for step in range(start_step + 1, stop_step + 1):
      leaves, carry, done_token = train_step.fn(leaves, carry, next(batches), key)
      in_flight.append(done_token)
      if len(in_flight) > MAX_STEPS_IN_FLIGHT:
        in_flight.popleft().block_until_ready()
      bar.update()

      eval_now = eval_fn is not None and (
          step == num_steps or (eval_every and step % eval_every == 0)
      )
      log_now = eval_now or step % config.log_every == 0 or step == num_steps
      save_now = step % config.checkpoint_every == 0 or step == num_steps
      if not (log_now or save_now or step == stop_step):
        continue

      # Fetch and check the steps since the last fetch, in order, before anything is saved.
      history = _fetch_history(distributed.local(carry["history"]))
      for done in range(fetched + 1, step + 1):
        metrics = {name: values[(done - 1) % window] for name, values in history.items()}
        _check_finite(float(metrics["loss"]), done, last_finite, saved_step)
        last_finite = (done, float(metrics["loss"]))
        for name, value in metrics.items():
          sums[name] = sums.get(name, 0.0) + float(value)
        count += 1
      del history, metrics
      fetched = step

      if log_now:
        now = time.perf_counter()
        record = {"step": step, **{name: total / count for name, total in sums.items()}}
        if learning_rate_fn is not None:  # The optimizer counts from 0.
          record["learning_rate"] = float(learning_rate_fn(step - 1))
        record["steps_per_second"] = count / (now - tick)
        # The next window starts now: its logging and checkpointing count as training time,
        # evaluation does not.
        tick = now
        if eval_now:
          # eval_fn sees plain arrays: with a mesh, this process's copy of the state.
          nnx.update(graph, jax.tree.unflatten(treedef, distributed.local(leaves)))
          eval_start = time.perf_counter()
          record.update(eval_fn(model))
          tick += time.perf_counter() - eval_start
          if mesh is None:
            leaves = _leaves_of(graph, treedef)  # eval_fn may change state (it should not)
        if main:
          with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        shown = ("loss", "accuracy", "test_accuracy")
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in shown})
        logging.info("%s", " ".join(f"{k}={v:.6g}" for k, v in record.items()))
        sums, count = {}, 0

      if save_now:
        nnx.update(graph, jax.tree.unflatten(treedef, [jnp.copy(leaf) for leaf in leaves]))
        checkpoints.save_train_state(manager, step, model, optimizer)
        saved_step = step
  finally:
    bar.close()
    # The model (and optimizer) hold the latest state, also after an error; with a mesh, as
    # this process's copy (plain arrays for whatever runs after training).
    if all(not leaf.is_deleted() for leaf in leaves if isinstance(leaf, jax.Array)):
      nnx.update(graph, jax.tree.unflatten(treedef, distributed.local(leaves)))
    manager.wait_until_finished()
    manager.close()

  completed = stop_step == num_steps
  final_metrics = {}
  if completed:
    if start_step == num_steps:  # Finished earlier: report its last record again.
      records = read_metrics(workdir) if metrics_path.exists() else []
      if records and records[-1]["step"] == num_steps:
        record = records[-1]
      else:
        record = {"step": num_steps, **(eval_fn(model) if eval_fn is not None else {})}
    final_metrics = dict(record)
    if main:
      (workdir / FINAL_METRICS_FILE).write_text(json.dumps(final_metrics, indent=2) + "\n")
  distributed.barrier(f"fit {workdir} done")  # the others may read what process 0 wrote
  return TrainResult(model=model, step=stop_step, completed=completed, final_metrics=final_metrics)


# ---------------------------------------------------------------------------
# Reading a run back.


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, float]]:
  """The records of ``metrics.jsonl`` in a workdir, in order.

  A last line cut short by a kill during its write is dropped with a warning
  (``integrity.read_jsonl``).
  """
  return integrity.read_jsonl(pathlib.Path(workdir) / METRICS_FILE)


def is_finished(workdir: str | os.PathLike) -> bool:
  """Whether a training run in ``workdir`` reached its last step (any task)."""
  return (pathlib.Path(workdir) / FINAL_METRICS_FILE).exists()
