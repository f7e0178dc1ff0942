"""The spline code's smoothings fitted per (K, N, S) from a config entry, and stored."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcoded.comparison import builders, spline_fit
from jaxcoded.comparison import run as run_lib
from jaxcoded.schemes import base


def tanh_worker(params, x):
  return jnp.tanh(params @ x)


def entry(**options):
  return ml_collections.ConfigDict(dict(kind="spline", **options))


def context(rng, num_queries, images):
  params = rng.normal(size=(3, images.shape[-1]))
  task = base.WorkerTask(tanh_worker, params)
  return builders.BuildContext(num_queries, task, held_out_images=images, seed=7), params


GRID = (0.0, 1e-3, 1e-1)  # small: each grid point is a compiled decode


def test_fit_entry_builds_the_fitted_code_and_reports_it(rng):
  k, s = 4, 2  # each fit compiles its own spline solves: one S keeps this test at seconds
  images = rng.uniform(-1, 1, size=(4 * 10, 5))
  ctx, params = context(rng, k, images)
  scheme, tasks, _ = builders.get("spline").build(
      entry(smoothing="fit", fit_masks=3, fit_grid=GRID), s, ctx)
  key = jax.random.fold_in(jax.random.key(7), 1000 * k + s)  # the documented key
  fit = spline_fit.fit_smoothing(tanh_worker, params, images, k, s, grid=GRID, num_masks=3, key=key)
  assert scheme.sizes.num_workers == k + s and tasks[0].params is params
  assert float(scheme.encoder_smoothing) == fit.encoder_smoothing
  assert float(scheme.decoder_smoothing) == fit.decoder_smoothing
  settings = scheme.settings()
  assert settings["smoothing"] == "fitted" and settings["fit_masks"] == 3
  assert settings["fit_images"] == 40 and settings["fit_rmse"] == pytest.approx(fit.rmse, rel=1e-5)
  assert settings["encoder_smoothing"] == fit.encoder_smoothing
  # fit_images keeps the last images only: a different fit input, the same contract.
  scheme = builders.get("spline").build(
      entry(smoothing="fit", fit_images=12, fit_grid=GRID[:1]), s, ctx)[0]
  assert scheme.settings()["fit_images"] == 12


def test_given_smoothings_are_reported_as_given():
  ctx = builders.BuildContext(4, base.WorkerTask(tanh_worker, np.eye(5)))
  scheme = builders.get("spline").build(
      entry(encoder_smoothing=1e-3, decoder_smoothing=0.0), 2, ctx)[0]
  assert scheme.settings() == dict(encoder_smoothing=1e-3, decoder_smoothing=0.0,
                                   smoothing="given")
  assert builders.get("berrut").build(ml_collections.ConfigDict(dict(kind="berrut")), 2, ctx)[0].settings() == {}


@pytest.mark.parametrize("options, match", [
    (dict(smoothing="auto"), 'must be "fit"'),
    (dict(smoothing="fit", encoder_smoothing=1e-3), "do not give them too"),
    (dict(fit_masks=4), "need smoothing"),
    (dict(smoothing="fit", fit_masks=0), "fit_masks must be an integer >= 1"),
    (dict(smoothing="fit", fit_images=2.5), "fit_images must be an integer >= 1"),
    (dict(fit_grid=(0.0,)), "need smoothing"),
    (dict(smoothing="fit", fit_grid=()), "fit_grid must be a non-empty sequence"),
    (dict(smoothing="fit", fit_grid=(0.0, -1.0)), "fit_grid value"),
])
def test_bad_fit_options_raise_before_anything_runs(options, match):
  with pytest.raises(ValueError, match=match):
    builders.get("spline").check(entry(**options), 4, [1, 2])


def test_fit_without_held_out_images_says_what_is_missing():
  ctx = builders.BuildContext(4, base.WorkerTask(tanh_worker, np.eye(5)))
  with pytest.raises(ValueError, match="held-out training images"):
    builders.get("spline").build(entry(smoothing="fit"), 1, ctx)


def test_held_out_images_are_the_last_ones_and_checked():
  images = np.arange(100)[:, None]
  np.testing.assert_array_equal(run_lib.held_out_images(images), images[-25:])
  np.testing.assert_array_equal(run_lib.held_out_images(images, 10), images[-10:])
  np.testing.assert_array_equal(run_lib.held_out_images(images, 500), images)
  with pytest.raises(ValueError, match="held_out_images"):
    run_lib.held_out_images(images, 0)
