"""One erasure rule at every public decode entry point: a NaN or inf row is a straggler.

Each scheme's ``decode`` (and ``decode_and_locate``) must give, for outputs
with a non-finite row, exactly what it gives with that worker marked absent;
what it can no longer guarantee it must not answer (``answered`` False), never
NaN marked as answered.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import schemes
from jaxcoded.schemes import learned


def _linear(x):
  return x.reshape(-1)[:3] * 2.0 + 1.0


SCHEMES = {
    "uncoded": lambda: schemes.Uncoded.create(4),
    "replication": lambda: schemes.Replication.create(4, 1),
    "lcc": lambda: schemes.LagrangeCode.create(4, 2, degree=1, dtype=jnp.float64),
    "berrut": lambda: schemes.BerrutCode.create(4, 2, dtype=jnp.float64),
    "byzantine": lambda: schemes.ByzantineBerrutCode.create(4, 1, 1, dtype=jnp.float64),
    "parm": lambda: schemes.ParityCode.create(4),
    "polynomial": lambda: learned.PolynomialCode.create(
        4, 7, (4, 4, 1), 3, encoder_degree=1, worker_features=(2,), worker_out=4, head_hidden=0,
        rngs=nnx.Rngs(0)),
}


def _outputs(scheme, rng):
  """Finite (N, ...) worker outputs of the right shape for the scheme."""
  if isinstance(scheme, learned.PolynomialCode):
    fn, params = scheme.worker_fn()
    coded = scheme.encode(jnp.asarray(rng.uniform(-1, 1, size=(4, 4, 4, 1)), jnp.float32))
    return jax.vmap(fn, in_axes=(None, 0))(params, coded)
  coded = scheme.encode(jnp.asarray(rng.uniform(-1, 1, size=(4, 6))))
  return jax.vmap(_linear)(coded)


@pytest.mark.parametrize("name", list(SCHEMES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_row_is_an_erasure(name, bad, rng):
  scheme = SCHEMES[name]()
  outputs = _outputs(scheme, rng)
  n = scheme.num_workers
  row = int(rng.integers(n))
  poisoned = outputs.at[row, 0].set(bad)
  everyone = jnp.ones((n,), bool)
  got = scheme.decode(poisoned, everyone)
  want = scheme.decode(outputs, everyone.at[row].set(False))
  np.testing.assert_array_equal(got.answered, want.answered)
  np.testing.assert_allclose(np.where(got.answered[:, None], got.values, 0),
                             np.where(want.answered[:, None], want.values, 0), rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(got.values))
  decoded, rejected = scheme.decode_and_locate(poisoned, everyone)
  assert bool(rejected[row])  # the erased output is reported as dropped
  np.testing.assert_array_equal(decoded.answered, got.answered)
  # Jitted, the same rule holds (the decoders are the jitted path of every caller).
  jitted = jax.jit(scheme.decode)(poisoned, everyone)
  np.testing.assert_array_equal(jitted.answered, got.answered)


def test_below_the_threshold_after_erasure_nothing_is_answered(rng):
  code = schemes.LagrangeCode.create(4, 1, degree=1, dtype=jnp.float64)  # R = 4 of N = 5
  outputs = _outputs(code, rng)
  mask = jnp.ones((5,), bool).at[0].set(False)  # exactly R returned ...
  poisoned = outputs.at[3, 1].set(jnp.nan)  # ... and one of them is NaN
  decoded = code.decode(poisoned, mask)
  assert not np.any(decoded.answered)
  assert np.all(decoded.values == 0)


def test_the_readme_pipeline_erases_nan_from_f(rng):
  """f itself gives NaN on some coded inputs: those workers are erasures, not poison."""
  code = schemes.BerrutCode.create(num_queries=4, num_stragglers=2)
  f = lambda w, x: w @ jnp.sqrt(x)  # NaN wherever a coded input is negative
  queries = jnp.asarray(rng.uniform(0.5, 1.0, size=(4, 5)), jnp.float32)
  queries = queries.at[2].set(-0.5)  # one negative query (a valid normalised value)
  params = jnp.ones((3, 5), jnp.float32)
  decoded = code(f, params, queries, jnp.ones((6,), bool))
  assert np.all(np.isfinite(decoded.values))
  coded = code.encode(queries)
  finite = np.all(np.isfinite(np.asarray(jax.vmap(lambda x: f(params, x))(coded))), axis=1)
  assert not finite.all()  # the test means something: some workers did produce NaN
  if finite.any():
    assert np.all(decoded.answered)
