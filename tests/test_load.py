"""Per-node FLOPs and bytes of the learned codes, and the master budget."""

import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxcoded import load, models
from jaxcoded.schemes import learned


@pytest.fixture(scope="module")
def code():
  return learned.PolynomialCode.create(
      4, 6, (8, 8, 1), 10, encoder_degree=1, worker_features=(4, 8), worker_out=12,
      head_hidden=8, rngs=nnx.Rngs(0),
  )


def test_designs_move_the_encoding_work(code):
  base = models.flops_per_example("digits_mlp")
  a = load.code_load(code, "A", base)
  b = load.code_load(code, "B", base)
  coded_values = math.prod(code.encoder.coded_shape)
  # Design A: the master sends every coded input, a worker receives one.
  assert a.master.bytes_sent == 6 * coded_values * 4
  assert a.worker.bytes_received == coded_values * 4
  assert a.worker.bytes_sent == 12 * 4 and a.master.bytes_received == 6 * 12 * 4
  # Design B: the master sends the points only; workers read the K queries.
  assert b.master.bytes_sent == 6 * 4 and b.worker.bytes_received == 4
  assert b.worker.bytes_read == 4 * 64 * 4
  # The encoding moves from the master to every worker.
  assert b.master.flops < a.master.flops
  assert b.worker.flops > a.worker.flops
  assert a.master_fraction == pytest.approx(a.master.flops / 4 / base)
  table = load.format_load_table([a, b])
  assert table.count("\n") == 5 and "| B | each worker |" in table


def test_budget_check(code):
  a = load.code_load(code, "A", 1e9)
  load.check_master_budget(a, 0.1)
  small_base = load.code_load(code, "A", 10.0)
  with pytest.raises(ValueError, match="Master budget exceeded"):
    load.check_master_budget(small_base, 0.1)
  with pytest.raises(ValueError, match="design"):
    load.code_load(code, "C", 1e6)


def test_master_load_counts_the_decoders_loops(code):
  # The decode's least-squares fit runs one Householder step per column of
  # the design (a fori_loop): code_load counts every step, XLA alone one.
  n, k = code.num_workers, code.num_queries
  outputs = jax.ShapeDtypeStruct((n, 12), jnp.float32)
  mask = jax.ShapeDtypeStruct((n,), jnp.bool_)
  queries = jax.ShapeDtypeStruct((k, 8, 8, 1), jnp.float32)
  decode = lambda y, m: code.decode(y, m).values  # noqa: E731
  full = load.xla_flops(code.encode, queries) + load.xla_flops(decode, outputs, mask)
  once = (load.xla_flops(code.encode, queries, count_loops=False)
          + load.xla_flops(decode, outputs, mask, count_loops=False))
  a = load.code_load(code, "A", 1e6)
  assert a.master.flops == full > once
