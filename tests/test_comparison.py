"""The comparison harness: shared masks, metrics against a plain reference, outputs."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import digits
from jaxcoded import comparison, deployment, schemes, stragglers, workers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _linear_classifier(rng, num_features, num_classes=5):
  weights = jnp.asarray(rng.normal(size=(num_classes, num_features)), jnp.float32)
  return (lambda w, x: w @ x.reshape(-1)), weights


def _reference_metrics(served, fn, params, groups, labels, masks):
  """Plain loops: decode each group under each mask with the whole pipeline."""
  base_pred = np.asarray(jax.vmap(jax.vmap(lambda x: fn(params, x)))(groups)).argmax(-1)
  home = served.scheme.home_workers()
  credit = bool(getattr(served.scheme, "has_fallback", False))
  out = []
  for mask in masks:
    correct = agree = answered = deg_correct = deg_count = 0
    degraded = ~np.any(home & mask[None], axis=1)
    for g in range(groups.shape[0]):
      decoded = served(groups[g], jnp.asarray(mask))
      pred = np.asarray(decoded.values).argmax(-1)
      scored = np.ones_like(pred, bool) if credit else np.asarray(decoded.answered)
      ok = scored & (pred == labels[g])
      correct += ok.sum()
      agree += (scored & (pred == base_pred[g])).sum()
      answered += np.asarray(decoded.answered).sum()
      deg_correct += (ok & degraded).sum()
      deg_count += degraded.sum()
    total = groups.shape[0] * groups.shape[1]
    out.append((correct / total, agree / total, answered / total, deg_correct, deg_count))
  return np.asarray(out, float)


@pytest.mark.parametrize("make_scheme", [
    lambda: schemes.Uncoded.create(3),
    lambda: schemes.Replication.create(3, 1),
    lambda: schemes.BerrutCode.create(3, 2),
    lambda: schemes.LagrangeCode.create(3, 1, degree=1),
    # A decoder that reads the queries: the evaluator must hand each group its own.
    lambda: schemes.Uncoded.create(3, fallback_model=(
        lambda w, x: jnp.sin(w @ x.reshape(-1)), jnp.asarray(np.linspace(-2, 2, 30).reshape(5, 6)))),
])
def test_evaluate_deployment_matches_plain_loops(rng, make_scheme):
  scheme = make_scheme()
  fn, params = _linear_classifier(rng, 6)
  served = deployment.Deployment.homogeneous("s", scheme, fn, params, query_range=None)
  groups = jnp.asarray(rng.normal(size=(7, 3, 2, 3)), jnp.float32)
  labels = rng.integers(0, 5, size=(7, 3))
  base_pred = jax.vmap(jax.vmap(lambda x: fn(params, x)))(groups).argmax(-1)
  masks = np.concatenate([
      comparison.MaskBank(int(rng.integers(1 << 30)), 4, 4).masks(scheme.num_workers, s)
      for s in range(min(scheme.num_workers, 3))
  ])
  metrics = comparison.evaluate_deployment(served, groups, jnp.asarray(labels), base_pred, masks)
  expected = _reference_metrics(served, fn, params, groups, labels, masks)
  np.testing.assert_allclose(metrics.accuracy, expected[:, 0], atol=1e-6)
  np.testing.assert_allclose(metrics.agreement, expected[:, 1], atol=1e-6)
  np.testing.assert_allclose(metrics.answered, expected[:, 2], atol=1e-6)
  np.testing.assert_array_equal(metrics.degraded_correct, expected[:, 3])
  np.testing.assert_array_equal(metrics.degraded_count, expected[:, 4])
  assert metrics.decode_seconds_per_group > 0


def test_mask_bank_shares_arrays_and_switches_to_random():
  bank = comparison.MaskBank(seed=3, num_random=10, exhaustive_limit=20)
  small = bank.masks(6, 2)  # C(6, 2) = 15 <= 20: all of them
  assert small.shape == (15, 6) and len({tuple(m) for m in small}) == 15
  assert bank.masks(6, 2) is small  # cached: every scheme with N = 6 gets this array
  big = bank.masks(12, 3)  # C(12, 3) = 220 > 20: a random sample
  assert big.shape == (10, 12) and np.all((~big).sum(1) == 3)
  again = comparison.MaskBank(seed=3, num_random=10, exhaustive_limit=20).masks(12, 3)
  np.testing.assert_array_equal(big, again)  # a function of (seed, N, S) only
  assert comparison.fingerprint(big) == comparison.fingerprint(again)
  other = comparison.MaskBank(seed=4, num_random=10, exhaustive_limit=20).masks(12, 3)
  assert comparison.fingerprint(other) != comparison.fingerprint(big)
  deadline = bank.deadline_masks(8, 50, stragglers.ShiftedExponential(shift=1.0, rate=1.0), 1.5)
  assert deadline.shape == (50, 8) and 0 < deadline.mean() < 1
  with pytest.raises(ValueError, match="stragglers"):
    bank.masks(4, 5)


def test_home_workers():
  np.testing.assert_array_equal(
      schemes.Replication.create(2, 1).home_workers(),
      [[1, 0, 1, 0], [0, 1, 0, 1]],
  )
  np.testing.assert_array_equal(schemes.BerrutCode.create(2, 1).home_workers(),
                                [[1, 0, 0], [0, 1, 0]])


def test_shard_map_evaluation_equals_single_device(rng):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets them")
  mesh = workers.make_worker_mesh(8)
  fn, params = _linear_classifier(rng, 4)
  groups = jnp.asarray(rng.normal(size=(5, 4, 4)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, size=(5, 4)))
  base_pred = jax.vmap(jax.vmap(lambda x: fn(params, x)))(groups).argmax(-1)
  for scheme in (schemes.Replication.create(4, 1), schemes.BerrutCode.create(4, 4)):
    served = deployment.Deployment.homogeneous("s", scheme, fn, params)
    masks = comparison.MaskBank(0, 6, 6).masks(8, 2)
    single = comparison.evaluate_deployment(served, groups, labels, base_pred, masks)
    sharded = comparison.evaluate_deployment(served, groups, labels, base_pred, masks, mesh=mesh)
    np.testing.assert_allclose(sharded.accuracy, single.accuracy, atol=1e-6)
    np.testing.assert_allclose(sharded.agreement, single.agreement, atol=1e-6)


def test_adversaries_hurt_berrut_but_not_byzantine_berrut(rng):
  fn, params = _linear_classifier(rng, 4)
  groups = jnp.asarray(rng.normal(size=(6, 2, 4)), jnp.float32)
  base_pred = jax.vmap(jax.vmap(lambda x: fn(params, x)))(groups).argmax(-1)
  labels = base_pred  # accuracy = agreement with f
  robust = deployment.Deployment.homogeneous(
      "byz", schemes.ByzantineBerrutCode.create(2, 0, 1), fn, params
  )
  masks = np.ones((3, robust.num_workers), bool)
  clean = comparison.evaluate_deployment(robust, groups, labels, base_pred, masks)
  attacked = comparison.evaluate_deployment(
      robust, groups, labels, base_pred, masks, adversary="random", num_adversaries=1,
      key=jax.random.key(int(rng.integers(1 << 30))),
  )
  np.testing.assert_allclose(attacked.accuracy, clean.accuracy, atol=1e-6)
  np.testing.assert_allclose(attacked.rejected, 1.0)
  plain = deployment.Deployment.homogeneous("berrut", schemes.BerrutCode.create(2, 3), fn, params)
  hit = comparison.evaluate_deployment(
      plain, groups, labels, base_pred, masks[:, : plain.num_workers], adversary="random",
      num_adversaries=1, key=jax.random.key(1),
  )
  assert hit.rejected is None and hit.accuracy.mean() < clean.accuracy.mean()


# ---------------------------------------------------------------------------
# The whole comparison on digits.


def _comparison_config(base_workdir):
  config = ml_collections.ConfigDict()
  config.dataset = "digits"
  config.data_dir = None
  config.data_source = "auto"
  config.base = digits.get_config("smoke")
  config.base.num_steps = 60
  config.base_workdir = str(base_workdir)
  config.num_queries = 4
  config.stragglers = (0, 1, 2)
  config.masks = ml_collections.ConfigDict(dict(
      num_random=5, exhaustive_limit=6,
      deadline=dict(num_masks=6, shift=1.0, rate=2.0, deadline=1.8, design_stragglers=1),
  ))
  config.mesh_devices = 0
  config.max_groups = 30
  config.seed = 0
  comparison.add_scheme(config, "uncoded", "uncoded")
  comparison.add_scheme(config, "replication", "replication")
  comparison.add_scheme(config, "Berrut", "berrut")
  return config


@pytest.fixture(scope="module")
def digits_comparison(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("comparison")
  config = _comparison_config(workdir / "base")
  results = comparison.run_comparison(config, workdir, log=lambda _: None, progress=False)
  return config, workdir, results


def test_comparison_covers_every_scheme_and_s(digits_comparison):
  config, workdir, results = digits_comparison
  on_disk = json.loads((workdir / "results.json").read_text())
  seen = {(r["scheme"], r["S"]) for r in on_disk["results"]}
  assert seen == {(name, s) for name in config.schemes for s in config.stragglers}
  assert on_disk["versions"]["jax"] == jax.__version__ and on_disk["seed"] == 0
  assert on_disk["config"]["num_queries"] == 4
  for r in on_disk["results"]:
    assert 0.0 <= r["accuracy_min"] <= r["accuracy_mean"] <= r["accuracy_max"] <= 1.0
    assert r["redundancy"] == pytest.approx(r["N"] / 4)
    assert r["master_fraction"] >= 0 and r["worker_fraction"] == pytest.approx(1.0, rel=0.05)
  assert [d["scheme"] for d in on_disk["deadline"]] == ["uncoded", "replication", "Berrut"]
  table = (workdir / "results.md").read_text()
  assert "| Berrut | 2 | 6 | 4 |" in table


def test_uncoded_without_stragglers_is_the_base_classifier(digits_comparison):
  _, _, results = digits_comparison
  record = next(r for r in results["results"] if r["scheme"] == "uncoded" and r["S"] == 0)
  assert record["accuracy_mean"] == pytest.approx(results["base"]["accuracy_on_groups"], abs=1e-9)
  assert record["agreement_mean"] == pytest.approx(1.0)
  # Every straggler of uncoded loses its query: S of K answers gone.
  for s in (1, 2):
    r = next(r for r in results["results"] if r["scheme"] == "uncoded" and r["S"] == s)
    assert r["answered_mean"] == pytest.approx(1 - s / 4)
    assert r["degraded_accuracy"] == 0.0


def test_schemes_with_equal_n_see_identical_masks(digits_comparison):
  _, workdir, results = digits_comparison
  by_ns = {}
  for r in results["results"]:
    by_ns.setdefault((r["N"], r["S"]), set()).add(r["masks_fingerprint"])
  assert all(len(prints) == 1 for prints in by_ns.values())
  # uncoded at S = 1 and Berrut at S = 0 differ in S; uncoded, replication and
  # Berrut at S = 0 all have N = 4 and share the single all-returned mask.
  shared = [r["scheme"] for r in results["results"] if (r["N"], r["S"]) == (4, 0)]
  assert set(shared) == {"uncoded", "replication", "Berrut"}
  saved = np.load(workdir / "masks.npz")
  for r in results["results"]:
    masks = saved[f"N{r['N']}_S{r['S']}"]
    assert comparison.fingerprint(masks) == r["masks_fingerprint"]
    assert len(masks) == min(math.comb(r["N"], r["S"]), 5 if math.comb(r["N"], r["S"]) > 6 else 99)


def test_plots_are_valid_pngs(digits_comparison):
  _, workdir, results = digits_comparison
  assert set(results["plots"]) >= {"accuracy_vs_stragglers.png", "accuracy_vs_redundancy.png"}
  matplotlib = pytest.importorskip("matplotlib", reason="matplotlib reads the PNGs back")
  from matplotlib import image

  del matplotlib
  for name in results["plots"]:
    path = workdir / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0


def test_bad_configs_are_rejected(tmp_path):
  config = _comparison_config(tmp_path / "base")
  config.stragglers = (0, -1)
  with pytest.raises(ValueError, match="stragglers"):
    comparison.check_config(config)
  config = _comparison_config(tmp_path / "base")
  config.schemes.uncoded.kind = "magic"
  with pytest.raises(ValueError, match="kind must be one of"):
    comparison.check_config(config)
  config = _comparison_config(tmp_path / "base")
  comparison.add_scheme(config, "byz", "byzantine_berrut")
  with pytest.raises(ValueError, match="num_adversaries"):
    comparison.check_config(config)
  with pytest.raises(ValueError, match="kind must be one of"):
    comparison.add_scheme(config, "x", "nope")


def test_trained_part_for_another_k_is_refused(tmp_path, digits_comparison):
  _, workdir, _ = digits_comparison
  config = _comparison_config(workdir / "base")
  stale = tmp_path / "parm_k8"
  stale.mkdir()
  (stale / "config.json").write_text(json.dumps(dict(task="parity", num_queries=8)))
  (stale / "final_metrics.json").write_text("{}")
  config.schemes = ml_collections.ConfigDict()
  comparison.add_scheme(config, "ParM", "parm", config=ml_collections.ConfigDict(), workdir=str(stale))
  with pytest.raises(ValueError, match="K = 8 queries per group"):
    comparison.run_comparison(config, tmp_path / "out", log=lambda _: None, progress=False)


def test_compute_per_query_on_hand_computed_cases():
  # Berrut, K = 4, S = 2, workers = f: 6 f-evaluations for 4 queries, plus the master's share.
  assert comparison.compute_per_query(4, 6, 1.0, 0.0) == pytest.approx(1.5)
  assert comparison.compute_per_query(4, 6, 1.0, 0.05) == pytest.approx(1.55)
  # The README's old headline: N = 11, worker 2.9 f, K = 8, master 5.1%: about 4 f per query.
  assert comparison.compute_per_query(8, 11, 2.9, 0.051) == pytest.approx(4.0385)
  # Replication at S = 3: four copies.
  assert comparison.compute_per_query(8, 32, 1.0, 0.0) == pytest.approx(4.0)


def test_node_load_reports_compute_per_query(rng):
  fn, params = _linear_classifier(rng, 6)
  served = deployment.Deployment.homogeneous("Berrut", schemes.BerrutCode.create(4, 2), fn, params)
  base_flops = 2 * 6 * 5  # the linear f's multiply-adds
  load = comparison.node_load(served, (2, 3), base_flops)
  assert load["worker_fraction"] == pytest.approx(1.0, rel=0.2)
  assert load["compute_per_query"] == pytest.approx(
      6 * load["worker_fraction"] / 4 + load["master_fraction"])


def test_a_worker_above_its_budget_is_refused():
  entry = ml_collections.ConfigDict(dict(kind="learned", worker_budget=1.1, master_budget=0.1))
  comparison.plan.check_budgets("ok", entry, dict(worker_fraction=1.05, master_fraction=0.05))
  with pytest.raises(ValueError, match=r"'heavy': the worker's FLOPs per coded input are 2\.900 x "
                                       r"f's, above its worker_budget of 1\.1"):
    comparison.plan.check_budgets("heavy", entry, dict(worker_fraction=2.9, master_fraction=0.05))
  with pytest.raises(ValueError, match="master_budget of 0.1"):
    comparison.plan.check_budgets("fat", entry, dict(worker_fraction=1.0, master_fraction=0.26))


def test_a_learned_code_is_redeployed_at_k_plus_s(rng):
  """Trained once at N = 6 with R = 3, deployed at N = K + S: the same logits (section 6a)."""
  from flax import nnx

  from jaxcoded.comparison import builders
  from jaxcoded.schemes import learned

  code = learned.PolynomialCode.create(4, 6, (8, 8, 1), 10, encoder_degree=1,
                                       worker_features=(4,), worker_out=8, head_hidden=0,
                                       rngs=nnx.Rngs(0))
  kind = builders.get("learned")
  entry = ml_collections.ConfigDict(dict(kind="learned", deploy_at="k_plus_s"))
  assert kind.sized_for(entry) and not kind.sized_for(ml_collections.ConfigDict(dict(kind="x")))
  ctx = builders.BuildContext(4, trained=code)
  queries = jnp.asarray(rng.uniform(-1, 1, size=(4, 8, 8, 1)), jnp.float32)
  want = deployment.Deployment.learned("at 6", code)(queries, jnp.ones(6, bool)).values
  for s in (0, 1, 2, 3):
    scheme, tasks, roles = kind.build(entry, s, ctx)
    assert scheme.num_workers == 4 + s and scheme.recovery_threshold == 3
    served = deployment.Deployment("at K + S", scheme, tasks, roles)
    mask = jnp.arange(4 + s) >= s  # s stragglers
    np.testing.assert_allclose(served(queries, mask).values, want, rtol=2e-3, atol=2e-3)
  small = learned.PolynomialCode.create(2, 6, (8, 8, 1), 10, encoder_degree=2,
                                        worker_features=(4,), worker_out=8, head_hidden=0,
                                        rngs=nnx.Rngs(0))  # R = 5 > K + S for S < 3
  assert kind.build(entry, 1, builders.BuildContext(2, trained=small)) is None
  with pytest.raises(ValueError, match="deploy_at must be"):
    kind.sized_for(ml_collections.ConfigDict(dict(kind="learned", deploy_at="everywhere")))
