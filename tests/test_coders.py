"""Polynomial building blocks, the degree check, and the master networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import coders, models


@pytest.mark.parametrize("power,num_activations", [(2, 1), (2, 2), (3, 1)])
def test_degree_is_tracked_and_confirmed(power, num_activations):
  h = coders.poly_cnn((4, 4, 3), 5, features=(4, 6), power=power,
                      num_activations=num_activations, rngs=nnx.Rngs(0))
  assert h.degree == power**num_activations
  x0 = jax.random.normal(jax.random.key(1), (4, 4, 3), jnp.float64)
  residual = coders.check_polynomial_degree(h, x0, h.degree, jax.random.key(2))
  assert residual < 1e-7
  # A lower declared degree is refused (the function is not of that degree).
  if h.degree > 1:
    with pytest.raises(ValueError, match="not a polynomial of degree"):
      coders.check_polynomial_degree(h, x0, h.degree - 1, jax.random.key(2))
  # A higher one is refused in strict mode only.
  with pytest.raises(ValueError, match="degree below"):
    coders.check_polynomial_degree(h, x0, h.degree + 1, jax.random.key(2))
  coders.check_polynomial_degree(h, x0, h.degree + 1, jax.random.key(2), strict=False)


def test_relu_network_is_rejected():
  linear = nnx.Linear(12, 4, rngs=nnx.Rngs(0))
  relu_net = lambda x: linear(jax.nn.relu(x.reshape(-1)))  # noqa: E731
  x0 = jax.random.normal(jax.random.key(0), (2, 2, 3), jnp.float64)
  for degree in (1, 2, 4):
    with pytest.raises(ValueError, match="not a polynomial"):
      coders.check_polynomial_degree(relu_net, x0, degree, jax.random.key(1))
  with pytest.raises(ValueError, match="declares no polynomial degree"):
    coders.PolySequential(coders.PolyConv(1, 2, rngs=nnx.Rngs(0)), nnx.relu)


def test_space_to_depth_matches_numpy(rng):
  x = rng.normal(size=(3, 4, 6, 2))
  out = np.asarray(coders.space_to_depth(jnp.asarray(x)))
  assert out.shape == (3, 2, 3, 8)
  for i in range(2):
    for j in range(3):
      np.testing.assert_array_equal(out[:, i, j], x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(3, 8))
  with pytest.raises(ValueError, match="multiples"):
    coders.space_to_depth(jnp.zeros((1, 3, 4, 1)))


@pytest.mark.parametrize("num_queries,degree", [(8, 3), (12, 5), (5, 1)])
def test_group_mixing_codes_each_group_without_interference(rng, num_queries, degree):
  a = np.sort(rng.uniform(-1, 1, num_queries))
  mixing = coders.group_lagrange_mixing(a, degree)  # (G, de + 1, K)
  assert mixing.shape == (-(-num_queries // (degree + 1)), degree + 1, num_queries)
  vander = np.vander(a, degree + 1, increasing=True)
  for g, group_mixing in enumerate(mixing):
    at_data = vander @ group_mixing  # (K, K): e(a_k) as a mix of the queries
    members = np.arange(g, num_queries, mixing.shape[0])
    np.testing.assert_allclose(at_data[np.ix_(members, members)], np.eye(len(members)), atol=1e-8)
    outside = np.setdiff1d(np.arange(num_queries), members)
    np.testing.assert_array_equal(group_mixing[:, outside], 0.0)


def test_encoder_starts_with_every_query_on_its_group_channels(rng):
  a = np.cos(np.pi * (np.arange(8) + 0.5) / 8)
  encoder = coders.CoefficientEncoder(a, 3, (8, 8, 1), rngs=nnx.Rngs(0))
  assert encoder.coded_shape == (4, 4, 8) and encoder.num_groups == 2
  queries = rng.normal(size=(8, 8, 8, 1)).astype(np.float32)
  coefficients = np.asarray(encoder(jnp.asarray(queries)), np.float64)
  at_data = np.einsum("kj,jhwc->khwc", np.vander(a, 4, increasing=True), coefficients)
  s2d = np.asarray(coders.space_to_depth(jnp.asarray(queries)))
  for k in range(8):
    group = k % 2
    np.testing.assert_allclose(at_data[k, ..., 4 * group:4 * group + 4], s2d[k], atol=1e-4)


def test_decoder_head_is_per_position(rng):
  head = coders.DecoderHead(3, 5, 4, hidden=0, rngs=nnx.Rngs(0))
  values = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  kernel = np.asarray(head.kernel[...])
  np.testing.assert_allclose(head(values), np.einsum("kd,kdc->kc", values, kernel), rtol=1e-5)
  identity = coders.DecoderHead(3, 4, 4, hidden=0, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(identity(values[:, :4]), values[:, :4])
  assert coders.DecoderHead(3, 5, 4, hidden=7, rngs=nnx.Rngs(0))(values).shape == (3, 4)


@pytest.mark.parametrize("space_to_depth,pools", [(1, None), (2, (1, 1))])
def test_grouped_worker_keeps_groups_apart(space_to_depth, pools):
  # Output block g depends on input channel block g only, and the degree is still exact.
  h = coders.poly_cnn((8, 8, 6), 8, features=(4, 6), groups=2, space_to_depth=space_to_depth,
                      pools=pools, activation_at=(1,), rngs=nnx.Rngs(0))
  assert h.degree == 2
  x = jax.random.normal(jax.random.key(0), (8, 8, 6), jnp.float64)
  y = h(x)
  changed = h(x.at[..., 3:].set(0.0))  # channels of group 1 only
  np.testing.assert_allclose(changed[:4], y[:4], rtol=1e-12)
  assert np.max(np.abs(changed[4:] - y[4:])) > 1e-3
  assert coders.check_polynomial_degree(h, x, 2, jax.random.key(2)) < 1e-7


def test_grouped_space_to_depth_keeps_blocks_contiguous():
  x = jnp.arange(4 * 4 * 6, dtype=jnp.float32).reshape(4, 4, 6)
  y = coders.SpaceToDepth(2, groups=2)(x)
  np.testing.assert_array_equal(y[..., :12], coders.space_to_depth(x[..., :3]))
  np.testing.assert_array_equal(y[..., 12:], coders.space_to_depth(x[..., 3:]))


def test_frozen_worker_fn_is_the_classifier_and_passes_no_gradient_to_it(rng):
  classifier = models.create("digits_mlp", rngs=nnx.Rngs(0))
  worker_fn, params = coders.frozen_worker_fn(classifier)
  x = jnp.asarray(rng.normal(size=models.INPUT_SHAPES["digits_mlp"]), jnp.float32)
  np.testing.assert_allclose(worker_fn(params, x), classifier(x[None])[0], rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda p: jnp.sum(worker_fn(p, x) ** 2))(params)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))
  x_grad = jax.grad(lambda x: jnp.sum(worker_fn(params, x) ** 2))(x)
  assert float(jnp.max(jnp.abs(x_grad))) > 0  # still differentiable in its input
