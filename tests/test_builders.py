"""jaxcoded.comparison.builders: config entries -> schemes, one builder per kind."""

import itertools

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxcoded import schemes
from jaxcoded.comparison import builders
from jaxcoded.schemes import base, learned

K = 4


def _entry(**fields):
  return ml_collections.ConfigDict(dict(fields))


def _code(num_workers: int):
  # de = 1, dh = 2: R = 3, trained (here: initialised) at N = num_workers.
  return learned.PolynomialCode.create(
      K, num_workers, (4, 4, 1), 5, encoder_degree=1, worker_features=(4,), worker_out=6,
      power=2, num_activations=1, head_hidden=0, rngs=nnx.Rngs(0))


def test_every_kind_is_registered_once():
  assert set(builders.kinds()) >= {"uncoded", "replication", "lcc", "berrut", "byzantine_berrut",
                                   "spline", "parm", "learned", "learned_systematic"}
  with pytest.raises(ValueError, match="already registered"):
    builders.register("berrut", build=lambda e, s, c: None, sized=True)
  with pytest.raises(ValueError, match="Unknown scheme kind 'nope'"):
    builders.get("nope")


@pytest.mark.parametrize("kind, entry, s, expected", [
    ("berrut", {}, 2, schemes.BerrutCode),
    ("lcc", {"degree": 2}, 1, schemes.LagrangeCode),
    ("replication", {}, 1, schemes.Replication),
    ("spline", {"encoder_smoothing": 1e-3, "decoder_smoothing": 0.0}, 2, schemes.SplineCode),
    ("byzantine_berrut", {"num_adversaries": 1}, 1, schemes.ByzantineBerrutCode),
    ("uncoded", {}, 0, schemes.Uncoded),
])
def test_fixed_kinds_build_the_scheme_around_f(kind, entry, s, expected):
  f = base.WorkerTask(lambda w, x: w @ x, np.eye(3))
  built, tasks, roles = builders.get(kind).build(_entry(kind=kind, **entry), s,
                                                 builders.BuildContext(K, f))
  assert isinstance(built, expected) and tasks == (f,) and len(roles) == built.num_workers
  assert built.num_queries == K


def test_uncoded_model_fallback_plugs_in_its_trained_classifier():
  f = base.WorkerTask(lambda w, x: w @ x, np.eye(3))
  fallback = base.WorkerTask(lambda w, x: 2 * (w @ x), np.eye(3))
  kind = builders.get("uncoded_model_fallback")
  assert kind.trains == "classifier" and not kind.sized_for(_entry(kind=kind.name))
  with pytest.raises(ValueError, match="needs entry.config"):
    kind.check(_entry(kind=kind.name), K, [1])
  built, tasks, roles = kind.build(_entry(kind=kind.name), 2, builders.BuildContext(K, f, trained=fallback))
  assert isinstance(built, schemes.Uncoded) and built.num_workers == K and tasks == (f,)
  queries = np.arange(K * 3, dtype=float).reshape(K, 3)
  mask = np.array([True, False, True, False])
  decoded = built.decode(queries, mask, queries)
  np.testing.assert_array_equal(decoded.values, np.where(mask[:, None], queries, 2 * queries))
  with pytest.raises(ValueError, match="trained fallback classifier"):
    kind.build(_entry(kind=kind.name), 1, builders.BuildContext(K, f))


def test_deploy_at_values():
  kind = builders.get("learned")
  assert not kind.sized_for(_entry(kind="learned"))
  assert kind.sized_for(_entry(kind="learned", deploy_at="k_plus_s"))
  assert kind.sized_for(_entry(kind="learned", deploy_at="r_plus_s"))
  with pytest.raises(ValueError, match="deploy_at must be 'trained'.*'r_plus_s'"):
    kind.check(_entry(kind="learned", config={}, deploy_at="everywhere"), K, [1])


@pytest.mark.parametrize("num_stragglers", [0, 1, 2])
def test_r_plus_s_decodes_as_the_trained_code_from_any_r_returns(rng, num_stragglers):
  """A code trained at N and deployed at R + S: the same logits for every mask with R returns."""
  trained = _code(num_workers=7)
  r = trained.recovery_threshold
  built, _, _ = builders.get("learned").build(
      _entry(kind="learned", deploy_at="r_plus_s"), num_stragglers,
      builders.BuildContext(K, trained=trained))
  assert (built.num_workers, built.recovery_threshold) == (r + num_stragglers, r)
  queries = jnp.asarray(rng.normal(size=(K, 4, 4, 1)), jnp.float32)
  full = trained(None, None, queries, np.ones(trained.num_workers, bool)).values
  for returned in itertools.combinations(range(built.num_workers), r):
    mask = np.zeros(built.num_workers, bool)
    mask[list(returned)] = True
    decoded = built(None, None, queries, mask)
    assert bool(decoded.answered.all())
    np.testing.assert_allclose(decoded.values, full, rtol=2e-3, atol=2e-3)


def test_k_plus_s_and_trained_deployments():
  trained = _code(num_workers=7)
  kind = builders.get("learned")
  ctx = builders.BuildContext(K, trained=trained)
  built, _, _ = kind.build(_entry(kind="learned", deploy_at="k_plus_s"), 1, ctx)
  assert built.num_workers == K + 1
  assert kind.build(_entry(kind="learned"), 0, ctx)[0] is trained
  assert trained.at_workers(trained.recovery_threshold - 1) is None  # below R: not deployable
  with pytest.raises(ValueError, match="needs its trained code for K = 5"):
    kind.build(_entry(kind="learned"), 0, builders.BuildContext(5, trained=trained))
