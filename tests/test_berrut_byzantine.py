"""Byzantine Berrut: with E corrupted workers, decode as if they were absent.

The claim tested: ``decode(corrupted, mask)`` equals ``berrut_decode(honest,
mask & ~adversaries)`` (the same Berrut decode with the corrupted workers
simply removed), because ``locate_adversaries`` finds exactly the corrupted
set. Exact location is asserted on every trial where the model guarantees it
(affine worker outputs, any adversary) or where the corruption is large
(random, sign flip) on a real network; for the "plausible" adversary on a real
network the location rate is measured and bounded below (docs/byzantine.md).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import adversaries, models, stragglers
from jaxcoded.schemes.berrut_byzantine import ByzantineBerrutCode

NUM_TRIALS = 40


def _key(rng):
  return jax.random.key(int(rng.integers(1 << 30)))


def _masks(rng, num_trials, num_workers, num_stragglers, num_adversaries):
  """(T, N) straggler masks with exactly S stragglers, and (T, N) adversaries among the rest."""
  order = np.argsort(rng.random((num_trials, num_workers)), axis=1)
  ranks = np.argsort(order, axis=1)
  mask = ranks >= num_stragglers
  bad = (ranks >= num_stragglers) & (ranks < num_stragglers + num_adversaries)
  return mask, bad


@functools.partial(jax.jit, static_argnames="model")
def _corrupt_batch(keys, outputs, bad, mask, model):
  # One compilation per model for all tests: they share T = 40, N = 10, C = 10.
  return jax.vmap(lambda k, y, b, m: adversaries.corrupt(k, y, b, model, available_mask=m))(
      keys, outputs, bad, mask
  )


def _check_claim(rng, code, honest, num_stragglers):
  """Corrupts E workers per trial with every adversary model, then decodes.

  Args:
    honest: (T, N, C) honest worker outputs, one row of N per trial.

  Returns:
    {model: (located == corrupted (T,), |decode - reference| / scale (T,))},
    where the reference is Berrut decoding with the corrupted workers absent.
  """
  num_trials = honest.shape[0]
  mask, bad = _masks(rng, num_trials, code.num_workers, num_stragglers, code.num_adversaries)
  honest = np.where(mask[..., None], honest, 0.0)
  keys = jax.random.split(_key(rng), num_trials)

  @jax.jit
  @jax.vmap
  def run(corrupted, honest, mask, bad):
    decoded, located = code.decode_and_locate(corrupted, mask)
    reference = code.berrut_decode(honest, mask & ~bad)
    error = jnp.max(jnp.abs(decoded.values - reference.values)) / jnp.max(jnp.abs(reference.values))
    return jnp.all(located == bad), error, jnp.all(decoded.answered)

  results = {}
  for model in adversaries.MODELS:
    corrupted = _corrupt_batch(keys, honest.astype(np.float64), bad, mask, model)
    located, error, answered = run(corrupted.astype(honest.dtype), honest, mask, bad)
    assert bool(jnp.all(answered))
    results[model] = (np.asarray(located), np.asarray(error))
  return results


@pytest.mark.parametrize(
    "num_queries,num_stragglers,num_adversaries,search,extra_stragglers",
    [(4, 1, 1, "exhaustive", 0), (3, 1, 2, "exhaustive", 2), (3, 1, 2, "greedy", 0)],
)
def test_affine_outputs_are_located_exactly(
    rng, num_queries, num_stragglers, num_adversaries, search, extra_stragglers
):
  """Random affine f (outputs exactly in the code): every adversary model is found.

  ``extra_stragglers`` goes beyond S, down to the K + 2E outputs that the
  locator needs. The greedy search is only guaranteed for E = 1 (a first
  wrong removal cannot be undone); it is checked on large random outputs.
  """
  code = ByzantineBerrutCode.create(
      num_queries, num_stragglers, num_adversaries, dtype=jnp.float64, search=search
  )
  assert code.num_workers == 2 * num_queries + num_stragglers + 2 * num_adversaries - 1
  queries = rng.normal(size=(NUM_TRIALS, num_queries, 6))
  weights = rng.normal(size=(NUM_TRIALS, 6, 10))
  honest = np.asarray(code.encoding_matrix()) @ queries @ weights + 0.3
  results = _check_claim(rng, code, honest, num_stragglers + extra_stragglers)
  for model, (located, error) in results.items():
    if search == "greedy" and model != "random":
      continue
    if search == "greedy" and num_adversaries > 1:
      # Not guaranteed: a first wrong removal cannot be undone. Measured on
      # 2,000 trials: 99.9% of random-output trials located; 40 trials at
      # >= 90% fails with probability ~1e-7 at that rate.
      assert located.mean() >= 0.9, (model, located.mean())
      assert error[located].max() < 1e-12, model
      continue
    assert located.all(), model
    assert error.max() < 1e-12, model


@pytest.fixture(scope="module")
def digits_mlp():
  return models.create("digits_mlp", rngs=nnx.Rngs(0), dtype=jnp.float64)


@pytest.mark.parametrize("num_queries,num_stragglers,num_adversaries", [(4, 1, 1), (3, 1, 2)])
def test_real_model(rng, digits_mlp, num_queries, num_stragglers, num_adversaries):
  """A random-weight Flax MLP on random 8x8 images, S stragglers, E adversaries.

  Where the located set is the corrupted one, the decode equals the reference
  to 1e-12 (relative). f is not a rational function of the points, so
  location is not guaranteed. Measured on 2,000 trials (seeds 0-49 of this
  test): random adversaries are located on every trial at E = 1 and 2;
  sign-flip ones on every trial, but a CI run's seed (3030489754) misses 1 of
  40 at E = 2; a "plausible" adversary (a copy of another honest output) in
  93% (E = 1) and 82% (E = 2) of trials, 70% for the worst seed at E = 2.
  The bounds below fail a 40-trial run with probability below 1e-3 at those
  rates, and any broken locator.
  """
  code = ByzantineBerrutCode.create(num_queries, num_stragglers, num_adversaries, dtype=jnp.float64)
  images = rng.uniform(size=(NUM_TRIALS, num_queries, 8, 8, 1))
  coded = np.asarray(code.encoding_matrix()) @ images.reshape(NUM_TRIALS, num_queries, -1)
  honest = np.asarray(digits_mlp(coded.reshape(-1, 8, 8, 1))).reshape(NUM_TRIALS, code.num_workers, -1)
  results = _check_claim(rng, code, honest, num_stragglers)
  plausible_rate = 0.75 if num_adversaries == 1 else 0.6
  for model, min_rate in (("random", 0.95), ("sign_flip", 0.95), ("plausible", plausible_rate)):
    located, error = results[model]
    assert located.mean() >= min_rate, (model, located.mean())
    assert error[located].max() < 1e-12, model


def test_float32(rng):
  code = ByzantineBerrutCode.create(4, 1, 1, dtype=jnp.float32)
  queries = rng.normal(size=(NUM_TRIALS, 4, 10))
  honest = np.tanh(np.asarray(code.encoding_matrix(), np.float64) @ queries / 4).astype(np.float32)
  results = _check_claim(rng, code, honest, 1)
  for model in ("random", "sign_flip"):
    located, error = results[model]
    assert located.all(), model
    assert error.max() < 1e-5, model


def test_nan_stragglers_and_nan_adversaries(rng):
  code = ByzantineBerrutCode.create(3, 2, 1, dtype=jnp.float64)
  outputs = code.encode(rng.normal(size=(3, 4)))  # an affine f: the identity
  mask = np.ones(code.num_workers, bool)
  mask[[1, 6]] = False
  poisoned = np.array(outputs)
  poisoned[~mask] = np.nan
  decode = jax.jit(code.decode_and_locate)
  clean, clean_located = decode(jnp.where(mask[:, None], outputs, 0.0), jnp.asarray(mask))
  dirty, dirty_located = decode(jnp.asarray(poisoned), jnp.asarray(mask))
  np.testing.assert_array_equal(clean_located, dirty_located)
  np.testing.assert_array_equal(clean.values, dirty.values)
  assert np.all(np.isfinite(dirty.values))
  # A large finite lie is located like any other adversary.
  corrupted = poisoned.copy()
  corrupted[4] = 1e30
  decoded, located = decode(jnp.asarray(corrupted), jnp.asarray(mask))
  np.testing.assert_array_equal(np.flatnonzero(located), [4])
  expected = code.berrut_decode(outputs, jnp.asarray(mask & (np.arange(code.num_workers) != 4)))
  np.testing.assert_allclose(decoded.values, expected.values, rtol=1e-12, atol=1e-12)
  # NaN or inf is an erasure, as in every decoder: that worker straggles (reported as
  # rejected), and the locator still spends its E on the rest (the NaN worker may be a
  # broken honest one while the adversary hides elsewhere).
  without_4 = jnp.asarray(mask & (np.arange(code.num_workers) != 4))
  for bad_value in (np.nan, np.inf):
    corrupted = poisoned.copy()
    corrupted[4] = bad_value
    decoded, located = decode(jnp.asarray(corrupted), jnp.asarray(mask))
    assert bool(located[4])
    as_straggler, located_rest = decode(jnp.where(without_4[:, None], outputs, 0.0), without_4)
    np.testing.assert_allclose(decoded.values, as_straggler.values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(located, located_rest.at[4].set(True))


def test_too_few_outputs_answer_nothing(rng):
  code = ByzantineBerrutCode.create(3, 1, 1, dtype=jnp.float64)  # K + 2E = 5 of N = 7
  outputs = jnp.asarray(rng.normal(size=(code.num_workers, 2)))
  mask = np.zeros(code.num_workers, bool)
  mask[:4] = True
  decode = jax.jit(code.decode)
  decoded = decode(outputs, jnp.asarray(mask))
  assert not bool(jnp.any(decoded.answered)) and bool(jnp.all(decoded.values == 0))
  mask[4] = True
  assert bool(jnp.all(decode(outputs, jnp.asarray(mask)).answered))


def test_one_compilation_serves_every_mask(rng):
  code = ByzantineBerrutCode.create(3, 2, 1, dtype=jnp.float64)
  traces = []

  @jax.jit
  def decode(outputs, mask):
    traces.append(None)
    return code.decode(outputs, mask)

  outputs = jnp.asarray(rng.normal(size=(code.num_workers, 3)))
  for mask in stragglers.all_masks(code.num_workers, 2)[:5]:
    decode(outputs, jnp.asarray(mask))
  assert len(traces) == 1


def test_sizes_and_bad_settings():
  sizes = ByzantineBerrutCode.sizes_for(4, 2, 1)
  assert (sizes.num_workers, sizes.recovery_threshold, sizes.max_stragglers) == (11, 9, 2)
  assert sizes.redundancy == 11 / 4
  with pytest.raises(ValueError, match="E >= 1"):
    ByzantineBerrutCode.create(3, 1, 0)
  with pytest.raises(ValueError, match="K >= 1"):
    ByzantineBerrutCode.create(0, 1, 1)
  with pytest.raises(ValueError, match="S"):
    ByzantineBerrutCode.create(3, -1, 1)
  with pytest.raises(ValueError, match="recovery threshold"):
    ByzantineBerrutCode.create(3, 0, 1, worker_points=np.linspace(-0.9, 0.9, 6))
  with pytest.raises(ValueError, match="greedy"):
    ByzantineBerrutCode.create(20, 0, 6)
  with pytest.raises(ValueError, match="search"):
    ByzantineBerrutCode.create(3, 0, 1, search="fast")


# ---------------------------------------------------------------------------
# The adversary models.


def test_random_adversary_mask(rng):
  num_workers, num_adversaries = 7, 2
  available = np.ones(num_workers, bool)
  available[rng.choice(num_workers, 2, replace=False)] = False
  draw = jax.jit(
      jax.vmap(lambda k: adversaries.random_adversary_mask(k, num_workers, num_adversaries, available))
  )
  masks = np.asarray(draw(jax.random.split(_key(rng), 200)))
  assert np.all(masks.sum(axis=1) == num_adversaries)
  assert not np.any(masks & ~available)
  assert np.all(masks[:, available].mean(axis=0) > 0.1)  # each of the 5 is picked about 40% of the time
  assert not np.any(adversaries.random_adversary_mask(_key(rng), 4, 0))
  assert np.all(adversaries.random_adversary_mask(_key(rng), 4, 4))


def test_corrupt_models(rng):
  """Uses the batch shapes of the tests above, so nothing new is compiled."""
  outputs = rng.normal(size=(NUM_TRIALS, 10, 10))
  mask, bad = _masks(rng, NUM_TRIALS, 10, 2, 2)
  outputs = np.where(mask[..., None], outputs, 0.0)
  keys = jax.random.split(_key(rng), NUM_TRIALS)
  flipped = np.asarray(_corrupt_batch(keys, outputs, bad, mask, "sign_flip"))
  np.testing.assert_array_equal(flipped, np.where(bad[..., None], -outputs, outputs))
  noisy = np.asarray(_corrupt_batch(keys, outputs, bad, mask, "random"))
  np.testing.assert_array_equal(noisy[~bad], outputs[~bad])
  honest_rms = np.sqrt(np.mean(outputs[mask & ~bad] ** 2))
  assert 50 < np.sqrt(np.mean(noisy[bad] ** 2)) / honest_rms < 200  # scale = 100
  copies = np.asarray(_corrupt_batch(keys, outputs, bad, mask, "plausible"))
  np.testing.assert_array_equal(copies[~bad], outputs[~bad])
  for trial in range(NUM_TRIALS):
    honest_rows = outputs[trial][mask[trial] & ~bad[trial]]
    for row in copies[trial][bad[trial]]:
      assert np.any(np.all(row == honest_rows, axis=1))  # a copy of an available honest worker
  key = _key(rng)
  with pytest.raises(ValueError, match="unknown adversary model"):
    adversaries.corrupt(key, outputs[0], bad[0], "loud")
  with pytest.raises(ValueError, match="cannot choose"):
    adversaries.random_adversary_mask(key, 4, 3, np.array([True, True, False, False]))
