"""Per-node load of a learned code: FLOPs and bytes per group, and the master's budget.

Coded computing only helps if the workers do the heavy work: a master that
runs a full classifier in its "encoder" would score well and mean nothing. So
every learned code reports what each node computes and sends for one group of
K queries, in both system designs (docs/design.md section 4.6):

  design A (master-side encoding): the master runs the encoder, evaluates the
    code at every worker point and sends e(b_n); worker n runs h (or f); the
    master fits, evaluates at the a_k and runs the head.
  design B (worker-side encoding): worker n reads the K queries from shared
    storage and computes its own e(b_n) before h; the master sends b_n only.

FLOPs are XLA's cost analysis of the compiled computation of each node
(``cost_analysis()['flops']``: a multiply-add counts 2, elementwise work is
included, the N x R least-squares fit too: it is plain XLA operations, see
jaxcoded.linalg). Bytes count the arrays a node sends and
receives, at ``bytes_per_value`` per number. The master's FLOPs per query as a
fraction of the base classifier's (``models.flops_per_example``) is the
*master budget*; ``check_master_budget`` refuses a configuration over budget.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "DesignLoad",
    "NodeLoad",
    "check_master_budget",
    "code_load",
    "format_load_table",
    "xla_flops",
]


class NodeLoad(NamedTuple):
  """One node's work for one group of K queries.

  Attributes:
    flops: floating-point operations.
    bytes_sent: bytes the node sends over the network.
    bytes_received: bytes the node receives over the network.
    bytes_read: bytes read from shared storage (the queries, design B workers).
  """

  flops: float
  bytes_sent: float
  bytes_received: float
  bytes_read: float = 0.0


class DesignLoad(NamedTuple):
  """Load of one design: the master, one worker, and the master's budget.

  Attributes:
    design: "A" or "B".
    num_queries: K.
    num_workers: N.
    master: the master's load per group (all N workers returning).
    worker: one worker's load per group.
    base_flops_per_query: FLOPs of the base classifier on one query.
  """

  design: str
  num_queries: int
  num_workers: int
  master: NodeLoad
  worker: NodeLoad
  base_flops_per_query: float

  @property
  def master_flops_per_query(self) -> float:
    return self.master.flops / self.num_queries

  @property
  def master_fraction(self) -> float:
    """Master FLOPs per query / base classifier FLOPs per query."""
    return self.master_flops_per_query / self.base_flops_per_query

  @property
  def worker_fraction(self) -> float:
    """One worker's FLOPs per group / base classifier FLOPs per query."""
    return self.worker.flops / self.base_flops_per_query


def xla_flops(fn, *args, compiled: bool = True) -> float:
  """XLA's FLOP count of ``fn(*args)`` (args may be ShapeDtypeStructs).

  ``compiled=False`` reads the cost analysis of the lowered module instead,
  which skips the compilation; for the programs of this library (LeNet-5, the
  coders, the decoders) it gives the same count.
  """
  lowered = jax.jit(fn).lower(*args)
  cost = (lowered.compile() if compiled else lowered).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def _size(shape) -> int:
  return int(math.prod(shape))


def code_load(
    code: Any,
    design: str,
    base_flops_per_query: float,
    *,
    bytes_per_value: int = 4,
) -> DesignLoad:
  """FLOPs and bytes per node and group for a learned code in one design.

  Args:
    code: a ``PolynomialCode`` or ``LearnedLagrangeCode``.
    design: "A" (master encodes) or "B" (workers encode).
    base_flops_per_query: the base classifier's FLOPs on one query
      (``models.flops_per_example``), the unit of the master budget.
    bytes_per_value: bytes per transmitted number (4 for float32).

  Returns:
    A ``DesignLoad``; ``.master_fraction`` is the master budget in use.
  """
  if design not in ("A", "B"):
    raise ValueError(f"code_load: unknown design {design!r}; use 'A' or 'B'.")
  if not base_flops_per_query > 0:
    raise ValueError(f"code_load: base_flops_per_query must be > 0, got {base_flops_per_query!r}.")
  k, n = code.num_queries, code.num_workers
  dtype = jnp.float32
  query_shape = (k, *code.encoder.input_shape)
  queries = jax.ShapeDtypeStruct(query_shape, dtype)
  coded = jax.eval_shape(code.encode, queries)
  worker_fn, worker_params = code.worker_fn()
  output = jax.eval_shape(worker_fn, worker_params, jax.ShapeDtypeStruct(coded.shape[1:], dtype))
  outputs = jax.ShapeDtypeStruct((n, *output.shape), dtype)
  mask = jax.ShapeDtypeStruct((n,), jnp.bool_)

  decode_flops = xla_flops(lambda y, m: code.decode(y, m).values, outputs, mask)
  one_input = jax.ShapeDtypeStruct(coded.shape[1:], dtype)
  h_flops = xla_flops(lambda x: worker_fn(worker_params, x), one_input)
  out_bytes = _size(output.shape) * bytes_per_value
  coded_bytes = _size(coded.shape[1:]) * bytes_per_value
  if design == "A":
    encode_flops = xla_flops(code.encode, queries)
    master = NodeLoad(encode_flops + decode_flops, n * coded_bytes, n * out_bytes)
    worker = NodeLoad(h_flops, out_bytes, coded_bytes)
  else:
    task = code.worker_side_task()

    def worker_b(q, point):
      return task.run(point, q)

    worker_flops = xla_flops(worker_b, queries, jax.ShapeDtypeStruct((), dtype))
    master = NodeLoad(decode_flops, n * bytes_per_value, n * out_bytes)
    worker = NodeLoad(
        worker_flops, out_bytes, bytes_per_value, bytes_read=_size(query_shape) * bytes_per_value
    )
  return DesignLoad(design, k, n, master, worker, float(base_flops_per_query))


def check_master_budget(load: DesignLoad, budget: float) -> None:
  """Raises ValueError if the master's FLOPs per query exceed ``budget`` x base.

  Args:
    load: from ``code_load``.
    budget: the declared master budget, a fraction of the base classifier's
      FLOPs per query (0.1 for 10%).
  """
  if load.master_fraction > budget:
    raise ValueError(
        f"Master budget exceeded (design {load.design}): the master computes "
        f"{load.master_flops_per_query:,.0f} FLOPs per query = {100 * load.master_fraction:.1f}% "
        f"of the base classifier's {load.base_flops_per_query:,.0f}, over the declared "
        f"{100 * budget:.1f}%."
    )


def check_worker_budget(load: DesignLoad, budget: float | None) -> None:
  """Raises ValueError if a worker's FLOPs per coded input exceed ``budget`` x base (None: no limit).

  The equal-resource protocol (docs/design.md section 6a) allows workers at
  most 1.1 x f.
  """
  if budget is not None and load.worker_fraction > budget:
    raise ValueError(
        f"Worker budget exceeded (design {load.design}): each worker computes "
        f"{load.worker_fraction:.3f} x the base classifier's FLOPs per coded input, over the "
        f"declared {budget:g} x; choose a smaller worker network (worker_features, worker_out)."
    )


def format_load_table(loads: list[DesignLoad]) -> str:
  """A Markdown table of per-node FLOPs and bytes (per group) for each design."""
  lines = [
      "| design | node | FLOPs / group | / base FLOPs per query | master budget "
      "(FLOPs / query / base) | sent (B) | received (B) | read from storage (B) |",
      "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for load in loads:
    for name, node in (("master", load.master), ("each worker", load.worker)):
      budget = f"{100 * load.master_fraction:.1f}%" if name == "master" else ""
      lines.append(
          f"| {load.design} | {name} | {node.flops:,.0f} | "
          f"{node.flops / load.base_flops_per_query:.3f} | {budget} | {node.bytes_sent:,.0f} | "
          f"{node.bytes_received:,.0f} | {node.bytes_read:,.0f} |"
      )
  return "\n".join(lines)
