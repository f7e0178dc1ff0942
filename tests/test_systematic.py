"""The learned systematic code: f unchanged, exact where a query's worker returned, deploy-time P."""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import coder_digits
from jaxcoded import deployment, load, models, training
from jaxcoded.comparison import builders
from jaxcoded.schemes import learned, systematic


def cast(module, dtype):
  nnx.update(module, jax.tree.map(lambda x: jnp.asarray(x, dtype), nnx.state(module)))
  return module


def systematic_code(rng, num_queries=4, num_parities=3, encoder_features=0, dtype=jnp.float64):
  classifier = models.create("digits_mlp", rngs=nnx.Rngs(int(rng.integers(1000))))
  code = systematic.LearnedSystematicCode.create(
      classifier, num_queries, num_parities, (8, 8, 1), 10, encoder_features=encoder_features,
      decoder_hidden=(16, 12), rngs=nnx.Rngs(int(rng.integers(1000))),
  )
  code = cast(code, dtype)
  # Per-pixel weights and biases that are not the initial ones, so both are exercised.
  code.encoder.weights[...] = jnp.asarray(rng.normal(size=code.encoder.weights.shape), dtype)
  code.encoder.bias[...] = jnp.asarray(rng.normal(size=code.encoder.bias.shape), dtype)
  return code


def run(code, queries, mask, design="A"):
  served = deployment.Deployment.learned("code", code, design=design, query_range=None)
  return served(jnp.asarray(queries), jnp.asarray(mask))


def _gelu(x):  # tanh approximation, as jax.nn.gelu's default
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def numpy_hidden(code, queries, mask):
  """float64 reference up to the decoder's last hidden layer: (worker outputs, hidden vector).

  f on x_k and on p_j = sum_k w_jk x_k + c_j, the returned ones in their slots, then the MLP.
  """
  k, p, p_max = code.num_queries, code.num_parities, code.max_parities
  weights = np.asarray(code.encoder.weights[...])[:p]
  bias = np.asarray(code.encoder.bias[...])[:p]
  parities = np.einsum("pkhwc,khwc->phwc", weights, queries) + bias
  inputs = np.concatenate([queries, parities])
  outputs = np.stack([np.asarray(code.classifier(jnp.asarray(x[None])))[0] for x in inputs])
  slots = np.zeros((k + p_max, outputs.shape[1]))
  slot_mask = np.zeros(k + p_max)
  slots[: k + p][mask] = outputs[mask]
  slot_mask[: k + p] = mask
  z = np.concatenate([slots.reshape(-1), slot_mask])
  for layer in code.decoder.layers:
    z = _gelu(z @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...]))
  return outputs, z


def numpy_decode(code, queries, mask):
  """float64 reference: f on x_k and on the parities, then the MLP decoder."""
  k = code.num_queries
  outputs, z = numpy_hidden(code, queries, mask)
  estimate = (z @ np.asarray(code.decoder.out.kernel[...]) + np.asarray(code.decoder.out.bias[...]))
  estimate = estimate.reshape(k, -1)
  return np.where(mask[:k, None], outputs[:k], estimate), outputs


# models.create's classifiers compute in float32 even with float64 parameters,
# so the reference's f(x) and the workers' differ by float32 rounding.
F_RTOL, F_ATOL = 1e-5, 1e-6


def test_returned_queries_get_f_exactly_and_the_others_the_decoder(rng):
  code = systematic_code(rng)
  assert code.sizes == (4, 7, 4) and code.min_returns == 4
  queries = rng.uniform(-1, 1, size=(4, 8, 8, 1))
  for mask in (np.ones(7, bool), *(rng.random((6, 7)) < 0.6)):
    if not mask.any():
      continue
    decoded = run(code, queries, mask)
    expected, _ = numpy_decode(code, queries, mask)
    np.testing.assert_allclose(decoded.values, expected, rtol=F_RTOL, atol=F_ATOL)
    assert np.all(decoded.answered)
    # Where query k's worker returned, the answer is its output f(x_k) itself.
    served = deployment.Deployment.learned("code", code, query_range=None)
    outputs = np.asarray(served.outputs(jnp.asarray(queries)))
    np.testing.assert_array_equal(np.asarray(decoded.values)[mask[:4]], outputs[:4][mask[:4]])
  nothing = run(code, queries, np.zeros(7, bool))
  assert not np.any(nothing.answered) and np.all(np.asarray(nothing.values) == 0)


def test_designs_a_and_b_agree(rng):
  code = systematic_code(rng, encoder_features=2)
  queries = rng.uniform(-1, 1, size=(4, 8, 8, 1))
  mask = np.array([True, False, True, True, False, True, True])
  np.testing.assert_allclose(run(code, queries, mask, "B").values, run(code, queries, mask).values,
                             rtol=1e-12, atol=1e-12)


def test_fewer_parities_equal_the_full_code_with_the_rest_absent(rng):
  code = systematic_code(rng)
  queries = rng.uniform(-1, 1, size=(4, 8, 8, 1))
  for p in (1, 2):
    deployed = code.with_num_parities(p)
    assert deployed.num_workers == 4 + p and deployed.max_parities == 3
    np.testing.assert_allclose(deployed.encode(queries), code.encode(queries)[: 4 + p])
    for mask in itertools.islice(itertools.product([True, False], repeat=4 + p), 1, None, 3):
      mask = np.asarray(mask)
      full_mask = np.concatenate([mask, np.zeros(3 - p, bool)])
      np.testing.assert_allclose(run(deployed, queries, mask).values,
                                 run(code, queries, full_mask).values, rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(run(deployed, queries, mask).values,
                                 numpy_decode(deployed, queries, mask)[0], rtol=F_RTOL, atol=F_ATOL)


def test_non_finite_or_straggling_rows_change_nothing(rng):
  code = systematic_code(rng)
  queries = jnp.asarray(rng.uniform(-1, 1, size=(4, 8, 8, 1)))
  worker_fn, params = code.worker_fn()
  outputs = jax.vmap(lambda x: worker_fn(params, x))(code.encode(queries))
  mask = jnp.asarray([True, False, True, True, True, False, True])
  clean = code.decode(outputs, mask)
  poisoned = outputs.at[~mask].set(jnp.nan)
  np.testing.assert_array_equal(code.decode(poisoned, mask).values, clean.values)
  # A returned row that is NaN is an erasure: the same as that worker straggling.
  nan_parity = outputs.at[4].set(jnp.inf)
  np.testing.assert_allclose(code.decode(nan_parity, mask).values,
                             code.decode(outputs, mask.at[4].set(False)).values)


def test_training_masks_cover_every_deployment_exactly():
  code = systematic_code(np.random.default_rng(0), num_queries=5, num_parities=3)
  masks = np.asarray(code.training_masks(jax.random.key(0), 3000))
  assert masks.shape == (3000, 8)
  # Whatever S, P_max = 3 workers are absent: 3 - S parities not deployed, S stragglers.
  assert np.all((~masks).sum(axis=1) == 3)
  assert len(np.unique(masks, axis=0)) == 56  # every 3-of-8 pattern occurs
  # Both last parities absent: always at S = 1, with probability 2/7 at S = 2
  # and 6/56 at S = 3, each S drawn with probability 1/3.
  both_last = np.mean(~masks[:, 6] & ~masks[:, 7])
  assert both_last == pytest.approx((1 + 2 / 7 + 6 / 56) / 3, abs=0.04)


def test_the_classifier_is_frozen(rng):
  code = systematic_code(rng)
  trained = nnx.state(code, learned.trainable(code))
  paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(trained)]
  assert paths and not any("classifier" in p for p in paths)
  assert any("encoder" in p for p in paths) and any("decoder" in p for p in paths)
  queries = jnp.asarray(rng.uniform(-1, 1, size=(4, 8, 8, 1)))
  mask = jnp.asarray([False, True, True, True, True, False, True])
  grads = nnx.grad(lambda c: jnp.sum(run(c, queries, mask).values ** 2))(code)
  assert all(np.all(g == 0) for g in jax.tree.leaves(nnx.state(grads, nnx.PathContains("classifier"))))
  assert any(np.any(g != 0) for g in jax.tree.leaves(nnx.state(grads, nnx.PathContains("encoder"))))


def test_a_digits_run_trains_the_coders_and_not_f(tmp_path):
  config = coder_digits.get_config()
  config.scheme = "systematic"
  config.num_stragglers = 2
  config.num_steps = 150
  config.decoder_hidden = (32,)  # the digits MLP is tiny: 19 kFLOPs per query
  result = training.coder.train(config, str(tmp_path)).report
  assert sorted(result["accuracy_by_stragglers"]) == [1, 2]
  # S = 1 at K = 4: most queries are f's own answers, far above chance (0.1).
  assert result["accuracy_by_stragglers"][1]["mean"] > 0.6
  assert result["master_fraction"]["A"] <= config.master_budget
  code, _ = training.coder.load(str(tmp_path))
  base, _ = training.classifier.load(str(tmp_path / "base"))
  for got, want in zip(jax.tree.leaves(nnx.state(code.classifier, nnx.Param)),
                       jax.tree.leaves(nnx.state(base, nnx.Param))):
    np.testing.assert_array_equal(got, want)
  worker = load.code_load(code, "A", models.flops_per_example("digits_mlp", (8, 8, 1)))
  assert worker.worker_fraction == pytest.approx(1.0)


def test_the_harness_redeploys_it_at_k_plus_s(rng):
  code = systematic_code(rng, dtype=jnp.float32)
  kind = builders.get("learned_systematic")
  entry = ml_collections.ConfigDict(dict(kind="learned_systematic", deploy_at="k_plus_s"))
  assert kind.sized_for(entry) and kind.trains == "coder"
  ctx = builders.BuildContext(4, trained=code)
  for s in (1, 2, 3):
    scheme, tasks, roles = kind.build(entry, s, ctx)
    assert scheme.num_workers == 4 + s and len(roles) == 4 + s
  assert kind.build(entry, 0, ctx) is None and kind.build(entry, 4, ctx) is None
  scheme, _, _ = kind.build(ml_collections.ConfigDict(dict(kind="learned_systematic")), 1, ctx)
  assert scheme.num_workers == 7
  with pytest.raises(ValueError, match="LearnedSystematicCode"):
    kind.build(entry, 1, builders.BuildContext(5, trained=code))


def test_bad_sizes_are_refused(rng):
  code = systematic_code(rng)
  with pytest.raises(ValueError, match="exceeds the 3 parities"):
    code.with_num_parities(4)
  with pytest.raises(ValueError, match="num_parities must be an integer"):
    code.with_num_parities(0)
  with pytest.raises(ValueError, match="at least one parity"):
    systematic.LearnedSystematicCode.create(code.classifier, 4, 0, (8, 8, 1), 10, rngs=nnx.Rngs(0))
