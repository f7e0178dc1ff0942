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
