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

FLOPs are counted by :func:`xla_flops`: XLA's cost analysis of each node's
computation (a multiply-add counts 2, elementwise work is included, the
N x R least-squares fit too: it is plain XLA operations, see jaxcoded.linalg),
with every loop counted by its trip count. XLA alone counts the body of a
``while`` loop once, whatever its trip count, so it would miss all but one
iteration of the Householder QR and back substitution (``fori_loop``) and of
the Chebyshev recurrence (``scan``). Bytes count the arrays a node sends and
receives, at ``bytes_per_value`` per number. The master's FLOPs per query as a
fraction of the base classifier's (``models.flops_per_example``) is the
*master budget*; ``check_master_budget`` refuses a configuration over budget.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp

__all__ = [
    "DesignLoad",
    "NodeLoad",
    "check_master_budget",
    "check_worker_budget",
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


# ---------------------------------------------------------------------------
# FLOPs with loops counted by their trip count.
#
# XLA's HloCostAnalysis counts a while loop as one pass of its body and
# condition, and ``lax.scan`` and ``lax.fori_loop`` both lower to while loops.
# The count here starts from XLA's count of the whole program and adds, for
# every loop in its jaxpr, the iterations XLA left out: a scan of length L is
# L x its body's full count (XLA's count of the body plus, recursively, the
# iterations missing inside it) in place of XLA's count of the scan alone.
#
# Why read trip counts from the jaxpr (``scan``'s ``length``; a ``fori_loop``
# with static bounds is a scan) rather than unroll or count by hand: unrolled,
# a QR inside a vmapped decode becomes a program whose size grows with the
# trip count of every nested loop (slow to lower, and the unroll would have
# to be forced inside library code); a hand count has to be rewritten with
# every change to the code. Read from the jaxpr, the count follows the code,
# costs one lowering per loop body, and keeps XLA's per-operation conventions
# (a multiply-add is 2, an elementwise op 1 per element, transcendentals 0,
# a conditional costs its dearer branch: an upper bound where a branch is
# rarely taken). A ``while_loop`` whose trip count is only known at run time
# cannot be counted statically and raises, as do programs whose count XLA
# cannot give (a LAPACK custom call counts nothing; a triangular solve makes
# XLA's whole count -1). tests/test_flops.py checks the count against hand
# counts of every scheme.

# Primitives that run some of their sub-jaxprs once per call: the params
# holding those (the others, e.g. a custom JVP's rule, do not run forward).
_CALLED = {
    "pjit": ("jaxpr",),
    "jit": ("jaxpr",),
    "closed_call": ("call_jaxpr",),
    "core_call": ("call_jaxpr",),
    "custom_jvp_call": ("call_jaxpr",),
    "custom_vjp_call": ("call_jaxpr",),
    "custom_vjp_call_jaxpr": ("fun_jaxpr",),
    "remat": ("jaxpr",),
    "checkpoint": ("jaxpr",),
    "custom_vmap_call": ("call",),
}
_UNCOUNTED_CALLS = re.compile(r"custom_call\s*@(lapack|cusolver|hipsolver|cublas|hipblas)\w*")


def _closed(jaxpr) -> jex_core.ClosedJaxpr:
  return jaxpr if isinstance(jaxpr, jex_core.ClosedJaxpr) else jex_core.ClosedJaxpr(jaxpr, [])


def _cost_flops(cost) -> float:
  if isinstance(cost, (list, tuple)):  # Older JAX returned one dict per device.
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


class _LoopCounter:
  """The FLOPs XLA's count leaves out of a jaxpr's loops; body costs cached per jaxpr."""

  def __init__(self):
    self._xla = {}

  def xla(self, jaxpr) -> float:
    """XLA's count (loops once) of a sub-jaxpr lowered on its own."""
    closed = _closed(jaxpr)
    key = id(closed.jaxpr)
    if key not in self._xla:
      args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
      lowered = jax.jit(jex_core.jaxpr_as_fun(closed)).lower(*args)
      self._xla[key] = _checked_flops(lowered, lowered.cost_analysis())
    return self._xla[key]

  def _xla_of(self, eqn) -> float:
    """XLA's count of one equation lowered on its own (a loop: its body once, or not at all)."""
    key = id(eqn)
    if key not in self._xla:
      literal = [isinstance(v, jex_core.Literal) for v in eqn.invars]

      def run(*values):
        values = iter(values)
        inputs = [v.val if lit else next(values) for v, lit in zip(eqn.invars, literal)]
        return eqn.primitive.bind(*inputs, **eqn.params)

      args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
              for v, lit in zip(eqn.invars, literal) if not lit]
      lowered = jax.jit(run).lower(*args)
      self._xla[key] = _checked_flops(lowered, lowered.cost_analysis())
    return self._xla[key]

  def missing(self, jaxpr) -> float:
    """FLOPs of the loop iterations XLA's count of ``jaxpr`` leaves out."""
    return sum(self._missing_in(eqn) for eqn in _closed(jaxpr).jaxpr.eqns)

  def _missing_in(self, eqn) -> float:
    name, params = eqn.primitive.name, eqn.params
    if name == "scan":  # L passes of the body, against XLA's count of the scan alone
      body, length = params["jaxpr"], int(params["length"])
      return length * (self.xla(body) + self.missing(body)) - self._xla_of(eqn)
    if name == "while":
      raise ValueError(
          "xla_flops: a while loop whose trip count is only known at run time (lax.while_loop, or "
          "fori_loop with traced bounds) cannot be counted statically; give its bounds as Python "
          "integers (a scan) or count it by hand."
      )
    if name == "cond":  # XLA counts the dearer branch
      branches = params["branches"]
      missing = [self.missing(b) for b in branches]
      if not any(missing):
        return 0.0
      once = [self.xla(b) for b in branches]
      return max(o + m for o, m in zip(once, missing)) - max(once)
    if name == "custom_linear_solve":  # only the solve runs forward
      return self.missing(params["jaxprs"].solve)
    if name in _CALLED:
      return sum(self.missing(params[key]) for key in _CALLED[name] if key in params)
    subs = list(jex_core.jaxprs_in_params(params))
    if any(self.missing(sub) for sub in subs):
      raise ValueError(
          f"xla_flops: loops inside a {name!r} primitive; which of its sub-computations run, and "
          "how often, is not known to this count."
      )
    return 0.0


def _checked_flops(lowered, cost) -> float:
  flops = _cost_flops(cost)
  text = lowered.as_text()
  calls = sorted(set(m.group(0).split("@")[1] for m in _UNCOUNTED_CALLS.finditer(text)))
  if calls:
    raise ValueError(
        f"xla_flops: the program calls {', '.join(calls)}, which XLA's cost analysis counts as "
        "0 FLOPs; use the plain-XLA routines of jaxcoded.linalg."
    )
  if flops < 0:
    raise ValueError(
        "xla_flops: XLA's cost analysis cannot count this program (it returned "
        f"{flops:g}; a triangular solve does that); use jaxcoded.linalg's solves."
    )
  return flops


def xla_flops(fn, *args, compiled: bool = False, count_loops: bool = True) -> float:
  """FLOPs of ``fn(*args)`` (args may be ShapeDtypeStructs), every loop by its trip count.

  XLA's cost analysis of the lowered module (``compiled=False``, the default:
  no compilation) or of the compiled one, plus the iterations of every
  ``scan`` / static ``fori_loop`` that XLA counts only once (module notes
  above). For the programs of this library both bases give the same count
  (tests/test_flops.py).

  Args:
    fn: the function; it is jitted.
    *args: its arguments (arrays or ``jax.ShapeDtypeStruct`` values).
    compiled: start from the compiled module's count instead of the lowered one's.
    count_loops: False gives XLA's count alone (each loop body once), the
      figure this library reported before loops were counted.

  Returns:
    FLOPs (a multiply-add counts 2).

  Raises:
    ValueError: a loop whose trip count is unknown before run time, or a call
      XLA does not count (LAPACK; a triangular solve).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> a = jax.ShapeDtypeStruct((20, 20), jnp.float32)
    >>> ten = lambda a: jax.lax.fori_loop(0, 10, lambda i, x: x @ a, a)
    >>> xla_flops(ten, a) >= 10 * 2 * 20**3
    True
  """
  traced = jax.jit(fn).trace(*args)
  lowered = traced.lower()
  flops = _checked_flops(lowered, (lowered.compile() if compiled else lowered).cost_analysis())
  if count_loops:
    flops += _LoopCounter().missing(traced.jaxpr)
  return flops


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

  if getattr(code, "decode_reads_queries", False):  # the decoder's sketch of the queries
    decode_flops = xla_flops(lambda y, m, q: code.decode(y, m, q).values, outputs, mask, queries)
  else:
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
    # A decoder that reads the queries (a sketch) reads them from the same storage.
    master_reads = _size(query_shape) * bytes_per_value if getattr(code, "decode_reads_queries", False) else 0
    master = NodeLoad(decode_flops, n * bytes_per_value, n * out_bytes, bytes_read=master_reads)
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
  """Raises ValueError if a worker's FLOPs per coded input exceed ``budget`` x base (None: none).

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
