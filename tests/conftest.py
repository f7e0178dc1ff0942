"""Test environment: 8 simulated CPU devices for shard_map, float64 available.

Both settings must be made before JAX initialises its backends, hence here.
"""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
  """A fresh numpy Generator per test; the seed is printed on failure."""
  seed = np.random.SeedSequence().entropy % (2**32)
  print(f"numpy seed: {seed}")
  return np.random.default_rng(seed)


# Under pytest-xdist (``-n``, ``--dist loadgroup``) each test file runs whole on
# one worker, so its module-scoped fixtures (trained models, Ray clusters) are
# built once; the files that start a Ray cluster share one group, so no two
# clusters (and Serve's proxy) run at once on a small machine.
_RAY_FILES = frozenset({"test_serving", "test_http", "test_ray_cluster"})


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    stem = item.path.stem
    item.add_marker(pytest.mark.xdist_group("ray" if stem in _RAY_FILES else stem))


@pytest.hookimpl(optionalhook=True)  # defined by pytest-xdist
def pytest_xdist_auto_num_workers(config):
  """``-n auto``: one worker per core, at most 4 (each holds a JAX runtime and its compiles)."""
  del config
  return max(1, min(len(os.sched_getaffinity(0)), 4))
