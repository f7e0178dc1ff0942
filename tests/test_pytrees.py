"""Every fixed scheme on pytrees: the same structure out, each leaf as a float64 reference says.

Encoding is linear in the queries and, for a fixed mask, decoding is linear
in the outputs, so each scheme's two maps are read off as float64 matrices
(encode the K unit vectors; decode the N unit vectors) and applied to every
leaf with numpy. The pytree path must agree leaf by leaf, under ``jit``,
``vmap`` over masks and ``grad``; a NaN in any leaf of a worker's output
erases that worker for the whole group.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcoded import deployment, schemes

K, S = 4, 2

SCHEMES = {
    "uncoded": lambda: schemes.Uncoded.create(K),
    "replication": lambda: schemes.Replication.create(K, S),
    "lcc": lambda: schemes.LagrangeCode.create(K, S),
    "berrut": lambda: schemes.BerrutCode.create(K, S),
    "byzantine_berrut": lambda: schemes.ByzantineBerrutCode.create(K, S, 1),
    "spline": lambda: schemes.SplineCode.create(K, S, encoder_smoothing=1e-3,
                                                decoder_smoothing=1e-2),
    "parm": lambda: schemes.ParityCode.create(K),
}


def _tree(rng, leading, dtype=np.float64):
  return {"a": rng.normal(size=(leading, 3)).astype(dtype),
          "b": (rng.normal(size=(leading, 2, 2)).astype(dtype), rng.normal(size=(leading,)).astype(dtype))}


def _mask(rng, code):
  n = code.num_workers
  mask = np.ones(n, bool)
  lost = min(code.max_stragglers, 1 if isinstance(code, schemes.ParityCode) else S)
  mask[rng.choice(n, size=lost, replace=False)] = False
  return mask


def _encoding_matrix(code) -> np.ndarray:
  return np.asarray(code.encode(np.eye(code.num_queries)), np.float64)  # (N, K)


def _joined_reference(code, outputs, mask) -> list[np.ndarray]:
  """Byzantine Berrut locates over all leaves together: decode their float64 concatenation."""
  leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(outputs)]
  joined = np.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)
  values = np.asarray(code.decode(joined, mask).values)
  cuts = np.cumsum([leaf[0].size for leaf in leaves])[:-1]
  return [piece.reshape((K,) + leaf.shape[1:])
          for piece, leaf in zip(np.split(values, cuts, axis=1), leaves)]


def _reference(code, outputs, mask) -> list[np.ndarray]:
  """Each leaf decoded: a float64 matrix per mask (linear decoders), or the joined decode."""
  if code.joint_decoding and code.locates_errors:
    return _joined_reference(code, outputs, mask)
  matrix = _decoding_matrix(code, mask)
  return [_apply(matrix, leaf) for leaf in jax.tree.leaves(outputs)]


def _decoding_matrix(code, mask) -> np.ndarray:
  return np.asarray(code.decode(np.eye(code.num_workers), mask).values, np.float64)  # (K, N)


def _apply(matrix, leaf):
  return np.tensordot(matrix, np.asarray(leaf, np.float64), axes=1)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_encode_keeps_the_structure_and_matches_the_reference(rng, name):
  code = SCHEMES[name]()
  queries = _tree(rng, K)
  coded = code.encode(queries)
  assert jax.tree.structure(coded) == jax.tree.structure(queries)
  matrix = _encoding_matrix(code)
  for got, leaf in zip(jax.tree.leaves(coded), jax.tree.leaves(queries)):
    assert got.shape == (code.num_workers,) + leaf.shape[1:]
    np.testing.assert_allclose(got, _apply(matrix, leaf), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_decode_keeps_the_structure_and_matches_the_reference(rng, name):
  code = SCHEMES[name]()
  outputs = _tree(rng, code.num_workers)
  mask = _mask(rng, code)
  decoded = code.decode(outputs, mask)
  assert jax.tree.structure(decoded.values) == jax.tree.structure(outputs)
  reference_answered = code.decode(np.eye(code.num_workers), mask).answered
  np.testing.assert_array_equal(decoded.answered, reference_answered)
  for got, leaf, want in zip(jax.tree.leaves(decoded.values), jax.tree.leaves(outputs),
                             _reference(code, outputs, mask)):
    assert got.shape == (K,) + leaf.shape[1:]
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_nan_in_any_leaf_erases_the_worker(rng, name):
  code = SCHEMES[name]()
  outputs = _tree(rng, code.num_workers)
  mask = np.ones(code.num_workers, bool)
  broken = int(rng.integers(code.num_workers))
  poisoned = jax.tree.map(np.copy, outputs)
  poisoned["b"][0][broken, 1, 0] = np.nan
  erased = mask.copy()
  erased[broken] = False
  got = code.decode(poisoned, mask)
  want = code.decode(outputs, erased)
  np.testing.assert_array_equal(got.answered, want.answered)
  for g, w in zip(jax.tree.leaves(got.values), jax.tree.leaves(want.values)):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_jit_and_vmap_over_masks_match_the_reference(rng, name):
  code = SCHEMES[name]()
  outputs = _tree(rng, code.num_workers)
  masks = np.stack([_mask(rng, code) for _ in range(3)])
  batched = jax.jit(jax.vmap(lambda m: code.decode(outputs, m)))(masks)
  for i, mask in enumerate(masks):
    for got, want in zip(jax.tree.leaves(batched.values), _reference(code, outputs, mask)):
      np.testing.assert_allclose(got[i], want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", [n for n in SCHEMES if n != "byzantine_berrut"])
def test_grad_through_a_pytree_equals_the_reference(rng, name):
  """d/dq of sum(decode(encode(q))**2) per leaf: 2 (D E)^T (D E) q with float64 matrices."""
  code = SCHEMES[name]()
  queries = _tree(rng, K)
  mask = _mask(rng, code)

  def loss(tree):
    decoded = code.decode(code.encode(tree), mask)
    return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(decoded.values))

  grads = jax.grad(loss)(queries)
  assert jax.tree.structure(grads) == jax.tree.structure(queries)
  pipeline = _decoding_matrix(code, mask) @ _encoding_matrix(code)  # (K, K)
  for got, leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(queries)):
    np.testing.assert_allclose(got, 2 * _apply(pipeline.T @ pipeline, leaf), rtol=1e-8, atol=1e-8)


def test_workers_may_return_a_pytree(rng):
  """f returns (logits, features): the one-call pipeline decodes both, in that structure."""
  w = rng.normal(size=(3, 5)).astype(np.float32)

  def f(w, x):
    return jnp.tanh(w @ x["pixels"]) + x["bias"], {"features": w.T @ jnp.tanh(w @ x["pixels"])}

  queries = {"pixels": rng.normal(size=(K, 5)).astype(np.float32),
             "bias": rng.normal(size=(K, 3)).astype(np.float32)}
  code = schemes.BerrutCode.create(K, S)
  mask = np.ones(K + S, bool)
  mask[1] = False
  decoded = code(f, w, queries, mask)
  logits, extra = decoded.values
  assert logits.shape == (K, 3) and extra["features"].shape == (K, 5)
  coded = code.encode(queries)
  outputs = jax.vmap(f, in_axes=(None, 0))(w, coded)
  per_leaf = [code.decode(leaf, mask).values for leaf in jax.tree.leaves(outputs)]
  for got, want in zip(jax.tree.leaves(decoded.values), per_leaf):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_parity_model_on_a_pytree(rng):
  """ParM with its parity model given: f linear, f_P = f, so the lost query is exact."""
  w = rng.normal(size=(3, 4))
  f = lambda w, x: (w @ x["u"], x["v"] * 2.0)
  queries = {"u": rng.normal(size=(K, 4)), "v": rng.normal(size=(K, 2))}
  code = schemes.ParityCode.create(K)
  served = deployment.Deployment.parity("ParM", code, f, w, f, w)
  mask = np.ones(K + 1, bool)
  mask[2] = False
  decoded = served(queries, mask)
  assert bool(decoded.answered.all())
  np.testing.assert_allclose(decoded.values[0], queries["u"] @ w.T, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(decoded.values[1], 2 * queries["v"], rtol=1e-10, atol=1e-10)


def test_uncoded_fallback_per_leaf(rng):
  fallback = {"a": np.full((3,), 7.0), "b": np.full((2,), -1.0)}
  code = schemes.Uncoded.create(K, fallback=fallback)
  outputs = {"a": rng.normal(size=(K, 3)), "b": rng.normal(size=(K, 2))}
  mask = np.array([True, False, True, True])
  decoded = code.decode(outputs, mask)
  np.testing.assert_array_equal(decoded.values["a"][1], fallback["a"])
  np.testing.assert_array_equal(decoded.values["b"][1], fallback["b"])
  np.testing.assert_array_equal(decoded.values["a"][0], outputs["a"][0])
  with pytest.raises(ValueError, match="one fallback value per output leaf"):
    code.decode({"a": outputs["a"]}, mask)


def test_leaves_must_share_the_leading_axis(rng):
  code = schemes.BerrutCode.create(K, S)
  with pytest.raises(ValueError, match="K = 4 queries along the leading axis"):
    code.encode({"a": np.zeros((K, 2)), "b": np.zeros((K + 1, 2))})
  with pytest.raises(ValueError, match=r"outputs have shape \(5, 2\), expected \(6, \.\.\.\)"):
    code.decode({"a": np.zeros((K + S, 2)), "b": np.zeros((K + S - 1, 2))}, np.ones(K + S, bool))
