"""The learned systematic code whose decoder also reads a sketch of the queries (side information)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import coder_digits
from jaxcoded import coders, deployment, load, models, training
from jaxcoded.comparison import metrics
from jaxcoded.schemes import systematic
from tests.test_systematic import F_ATOL, F_RTOL, _gelu, cast, numpy_hidden


def sketch_code(rng, num_queries=4, num_parities=3, dtype=jnp.float64, pool=2):
  classifier = models.create("digits_mlp", rngs=nnx.Rngs(int(rng.integers(1000))))
  code = systematic.LearnedSystematicCode.create(
      classifier, num_queries, num_parities, (8, 8, 1), 10, decoder_hidden=(16, 12),
      sketch_features=6, sketch_pool=pool, rngs=nnx.Rngs(int(rng.integers(1000))),
  )
  code = cast(code, dtype)
  code.encoder.weights[...] = jnp.asarray(rng.normal(size=code.encoder.weights.shape), dtype)
  code.encoder.bias[...] = jnp.asarray(rng.normal(size=code.encoder.bias.shape), dtype)
  return code


def numpy_decode(code, queries, mask):
  """float64 reference: f on queries and parities, the MLP, then the per-query head on the sketch."""
  k = code.num_queries
  outputs, z = numpy_hidden(code, queries, mask)
  decoder = code.decoder
  messages = (z @ np.asarray(decoder.out.kernel[...]) + np.asarray(decoder.out.bias[...])).reshape(k, -1)
  pool = code.sketch.pool
  h, w = queries.shape[1] // pool, queries.shape[2] // pool
  pooled = queries[:, : h * pool, : w * pool].reshape(k, h, pool, w, pool, 1).mean(axis=(2, 4))
  sketch = _gelu(pooled.reshape(k, -1) @ np.asarray(code.sketch.linear.kernel[...])
                 + np.asarray(code.sketch.linear.bias[...]))
  hidden = _gelu(np.concatenate([messages, sketch], 1) @ np.asarray(decoder.head_in.kernel[...])
                 + np.asarray(decoder.head_in.bias[...]))
  estimate = hidden @ np.asarray(decoder.head_out.kernel[...]) + np.asarray(decoder.head_out.bias[...])
  return np.where(mask[:k, None], outputs[:k], estimate)


@pytest.mark.parametrize("pool", [1, 2, 3])
def test_decode_matches_a_float64_reference_for_every_kind_of_mask(rng, pool):
  code = sketch_code(rng, pool=pool)
  assert code.decode_reads_queries
  queries = rng.uniform(-1, 1, size=(4, 8, 8, 1))
  served = deployment.Deployment.learned("code", code, query_range=None)
  for mask in (np.ones(7, bool), np.zeros(7, bool), *(rng.random((5, 7)) < 0.5)):
    decoded = served(jnp.asarray(queries), jnp.asarray(mask))
    np.testing.assert_allclose(decoded.values, numpy_decode(code, queries, mask),
                               rtol=F_RTOL, atol=F_ATOL)
    # Every query is answered, even with no worker back: the sketch is the master's.
    assert np.all(decoded.answered)
    outputs = np.asarray(served.outputs(jnp.asarray(queries)))
    np.testing.assert_array_equal(np.asarray(decoded.values)[mask[:4]], outputs[:4][mask[:4]])


def test_decode_without_the_queries_is_refused_and_others_ignore_them(rng):
  code = sketch_code(rng)
  queries = jnp.asarray(rng.uniform(-1, 1, size=(4, 8, 8, 1)))
  worker_fn, params = code.worker_fn()
  outputs = jax.vmap(lambda x: worker_fn(params, x))(code.encode(queries))
  mask = jnp.ones(7, bool)
  with pytest.raises(ValueError, match="reads the group's queries"):
    code.decode(outputs, mask)
  with pytest.raises(ValueError, match="K = 4 queries"):
    code.decode(outputs, mask, queries[:3])
  decoded, rejected = code.decode_and_locate(outputs.at[1].set(jnp.nan), mask, queries)
  assert list(np.asarray(rejected)) == [False, True] + [False] * 5
  np.testing.assert_allclose(decoded.values, code.decode(outputs, mask.at[1].set(False), queries).values)
  plain = systematic.LearnedSystematicCode.create(
      code.classifier, 4, 3, (8, 8, 1), 10, decoder_hidden=(8,), rngs=nnx.Rngs(0))
  assert not plain.decode_reads_queries
  np.testing.assert_array_equal(plain.decode(outputs, mask).values,
                                plain.decode(outputs, mask, queries).values)


def test_mismatched_sketch_and_decoder_are_refused(rng):
  code = sketch_code(rng)
  with pytest.raises(ValueError, match="reads 6 sketch features, the sketch makes 0"):
    systematic.LearnedSystematicCode(code.encoder, code.classifier, code.decoder)
  with pytest.raises(ValueError, match="features and pool must be >= 1"):
    coders.QuerySketch((8, 8, 1), 0, rngs=nnx.Rngs(0))


def test_its_sketch_is_trained_and_counted_in_the_master_load(rng):
  code = sketch_code(rng, dtype=jnp.float32)
  base_flops = models.flops_per_example("digits_mlp", (8, 8, 1))
  loads = load.code_load(code, "A", base_flops)
  sketch_flops = load.xla_flops(code.sketch, jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32))
  assert sketch_flops >= 2 * 4 * 16 * 6  # the (K, 16) x (16, 6) map, counted from shapes
  plain = systematic.LearnedSystematicCode(
      code.encoder, code.classifier,
      coders.SystematicDecoder(4, 7, 10, hidden=(16, 12), rngs=nnx.Rngs(0)))
  # The sketch and the per-query head are the master's: its count grows by at least the sketch.
  assert loads.master.flops >= load.code_load(plain, "A", base_flops).master.flops + sketch_flops
  # Design B: the master reads the K queries for the sketch (4 x 8 x 8 float32), as the workers do.
  design_b = load.code_load(code, "B", base_flops)
  assert design_b.master.bytes_read == 4 * 64 * 4 == design_b.worker.bytes_read
  assert load.code_load(plain, "B", base_flops).master.bytes_read == 0
  grads = nnx.grad(lambda c: jnp.sum(deployment.Deployment.learned("c", c, query_range=None)(
      jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 1)), jnp.float32), jnp.zeros(7, bool)).values ** 2))(code)
  assert any(np.any(g != 0) for g in jax.tree.leaves(nnx.state(grads, nnx.PathContains("sketch"))))


def test_the_evaluator_hands_each_group_its_queries(rng):
  code = sketch_code(rng, dtype=jnp.float32)
  served = deployment.Deployment.learned("code", code, query_range=None)
  groups = jnp.asarray(rng.uniform(-1, 1, size=(6, 4, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, size=(6, 4)))
  masks = np.array([[True] * 7, [False] * 7, [False, True, False, True, True, False, True]])
  scores = metrics.evaluate_deployment(served, groups, labels, labels, masks)
  for mask, accuracy in zip(masks, scores.accuracy):
    predictions = np.stack([np.argmax(served(g, jnp.asarray(mask)).values, -1) for g in groups])
    assert accuracy == pytest.approx(np.mean(predictions == np.asarray(labels)))


def test_a_digits_run_trains_it_inside_the_master_budget(tmp_path):
  config = coder_digits.get_config()
  config.scheme = "systematic"
  config.num_stragglers = 2
  config.num_steps = 150
  config.decoder_hidden = (16,)
  config.sketch_features = 4
  config.sketch_pool = 2
  config.master_budget = 0.9  # the digits MLP is tiny (19 kFLOPs per query): a looser budget
  result = training.coder.train(config, str(tmp_path)).report
  assert result["accuracy_by_stragglers"][2]["mean"] > 0.5
  code, _ = training.coder.load(str(tmp_path))
  assert code.decode_reads_queries and code.sketch.features == 4
  assert result["master_fraction"]["A"] <= config.master_budget


def test_designs_a_and_b_agree(rng):
  code = sketch_code(rng)
  queries = jnp.asarray(rng.uniform(-1, 1, size=(4, 8, 8, 1)))
  mask = jnp.asarray([True, False, True, False, False, True, True])
  a = deployment.Deployment.learned("a", code, query_range=None)(queries, mask)
  b = deployment.Deployment.learned("b", code, design="B", query_range=None)(queries, mask)
  np.testing.assert_allclose(b.values, a.values, rtol=1e-12, atol=1e-12)


def test_sketch_flops_agree_with_a_hand_count():
  # Counted from shapes: per query, the pooling's adds (one per pixel), the (P, F) map as
  # multiply-adds (2 P F) and bias + GELU (about 2 F); the control's head adds 2 (F H + H C).
  k, shape, features, hidden = 8, (28, 28, 1), 32, 64
  pooled = 14 * 14
  sketch = coders.QuerySketch(shape, features, pool=2, rngs=nnx.Rngs(0))
  hand = k * (28 * 28 + 2 * pooled * features + 2 * features)
  counted = load.xla_flops(sketch, jax.ShapeDtypeStruct((k, *shape), jnp.float32))
  assert counted == pytest.approx(hand, rel=0.05)
  control = models.create("sketch_mlp", rngs=nnx.Rngs(0))
  hand_control = hand / k + 2 * (features * hidden + hidden * 10) + 2 * (hidden + 10)
  assert models.flops_per_example(control, shape) == pytest.approx(hand_control, rel=0.05)
