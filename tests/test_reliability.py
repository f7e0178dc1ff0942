"""Issue #13, items 3 and 6: finite gradients at stragglers, and the gaps at the boundaries.

Item 3 (docs/reliability.md, "Straggler rows and gradients"): a straggler's row
contributes exactly zero to values and gradients, also for a worker function
that is singular where the straggler's input used to be put (zero).

Item 6 (docs/bad_input.md): every point-taking entry point goes through
``validation.as_points``, every integer size through
``validation.check_integer``, every mask through ``validation.as_mask``, and
the Fashion-MNIST reader names the file and the problem. Each test here
failed before the fix.
"""

from __future__ import annotations

import gzip
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcoded import data, interp, schemes, validation, workers

# ---------------------------------------------------------------------------
# Item 3: gradients stay finite when a straggler's input is replaced.


def normalise(w, x):
  """w * x / ||x||: finite values for x != 0, NaN value and gradient at x = 0."""
  return w * x / jnp.linalg.norm(x)


def log_norm(w, x):
  """w * log ||x||: -inf at x = 0, and an infinite derivative there."""
  return w * jnp.log(jnp.linalg.norm(x))[None]


def rms_norm(w, x):
  """A normalisation layer without epsilon: x / sqrt(mean(x^2)) scaled by w."""
  return w * x / jnp.sqrt(jnp.mean(x**2))


SINGULAR_AT_ZERO = {"normalise": normalise, "log_norm": log_norm, "rms_norm": rms_norm}
NUM_WORKERS, DIM = 8, 5
# Workers 0 and 1 straggle: on a 4-device mesh, device 0 then has no available
# worker of its own, and the replacement input must come from another device.
MASK = np.array([False, False, True, True, False, True, True, True])


def _loss(run, w, x, weights):
  return jnp.sum(weights * run(w, x))


def _reference_loss(fn, w, x, weights):
  """The loss over the available workers only, without run_workers."""
  outputs = jax.vmap(fn, in_axes=(None, 0))(w, x[MASK])
  return jnp.sum(weights[MASK] * outputs)


@pytest.mark.parametrize("mesh_devices", [None, 4], ids=["vmap", "shard_map"])
@pytest.mark.parametrize("name", list(SINGULAR_AT_ZERO))
def test_straggler_rows_add_nothing_to_gradients_of_singular_functions(rng, name, mesh_devices):
  fn = SINGULAR_AT_ZERO[name]
  mesh = None if mesh_devices is None else workers.make_worker_mesh(mesh_devices)
  w = rng.normal(size=(DIM,))
  x = rng.normal(size=(NUM_WORKERS, DIM))
  x[~MASK] = 0.0  # also where f itself is singular: the row must not be run there
  out_dim = fn(w, x[2]).shape[0]
  weights = rng.normal(size=(NUM_WORKERS, out_dim))
  run = lambda w, x: workers.run_workers(fn, w, x, MASK, mesh=mesh)  # noqa: E731

  outputs = np.asarray(run(w, x))
  np.testing.assert_array_equal(outputs[~MASK], 0.0)
  expected = np.asarray(jax.vmap(fn, in_axes=(None, 0))(w, x[MASK]))
  np.testing.assert_allclose(outputs[MASK], expected, rtol=1e-13, atol=1e-13)

  grad_w, grad_x = jax.jit(jax.grad(lambda w, x: _loss(run, w, x, weights), argnums=(0, 1)))(w, x)
  assert np.all(np.isfinite(grad_w)) and np.all(np.isfinite(grad_x))
  ref_w, ref_x_available = jax.grad(
      lambda w, xa: _reference_loss(fn, w, jnp.asarray(x).at[MASK].set(xa), weights), argnums=(0, 1)
  )(w, jnp.asarray(x[MASK]))
  np.testing.assert_allclose(grad_w, ref_w, rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(np.asarray(grad_x)[~MASK], 0.0)
  np.testing.assert_allclose(np.asarray(grad_x)[MASK], ref_x_available, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(SINGULAR_AT_ZERO))
def test_coded_pipeline_gradients_are_finite_for_singular_workers(rng, name):
  """End to end: Berrut coding, one straggler, d loss / d params finite and exact."""
  fn = SINGULAR_AT_ZERO[name]
  code = schemes.BerrutCode.create(3, 1)
  queries = jnp.asarray(rng.uniform(-1.0, 1.0, size=(3, DIM)))  # like normalised images
  mask = np.array([True, False, True, True])
  w = jnp.asarray(rng.normal(size=(DIM,)))

  def loss(w):
    return jnp.sum(code(fn, w, queries, mask).values ** 2)

  def reference(w):  # f on the real coded inputs, the straggler's row masked out
    outputs = jax.vmap(fn, in_axes=(None, 0))(w, code.encode(queries))
    outputs = jnp.where(mask[:, None], outputs, 0.0)
    return jnp.sum(code.decode(outputs, mask).values ** 2)

  grad = jax.grad(loss)(w)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, jax.grad(reference)(w), rtol=1e-10, atol=1e-12)


def test_all_stragglers_give_zero_outputs(rng):
  x = rng.normal(size=(4, DIM))
  outputs = workers.run_workers(normalise, 1.0, x, np.zeros(4, bool))
  np.testing.assert_array_equal(outputs, 0.0)


# ---------------------------------------------------------------------------
# Item 6: points (complex, strings, integers, float32 collisions).

POINT_TAKERS = {  # case: a function of (data points, worker points)
    "BerrutCode.create": lambda a, b: schemes.BerrutCode.create(2, 1, data_points=a, worker_points=b),
    "LagrangeCode.create": lambda a, b: schemes.LagrangeCode.create(
        2, 1, data_points=a, worker_points=b),
    "ByzantineBerrutCode.create": lambda a, b: schemes.ByzantineBerrutCode.create(
        1, 0, 1, data_points=a[:1], worker_points=b),  # N = 2K + S + 2E - 1 = 3
    "interp.lagrange_matrix": lambda a, b: interp.lagrange_matrix(b, a),
    "interp.berrut_matrix": lambda a, b: interp.berrut_matrix(b, a),
    "interp.polyfit_matrix": lambda a, b: interp.polyfit_matrix(b, a, 1),
}
DATA_POINTS = np.array([-0.5, 0.5])
WORKER_POINTS = np.array([-0.9, 0.1, 0.9])


@pytest.mark.parametrize("where", ["data", "worker"])
@pytest.mark.parametrize("case", list(POINT_TAKERS))
def test_complex_points_are_refused(case, where):
  a, b = DATA_POINTS.astype(complex), WORKER_POINTS.astype(complex)
  a, b = (a + 0.25j, WORKER_POINTS) if where == "data" else (DATA_POINTS, b + 0.25j)
  with pytest.raises(ValueError, match=r"must be real numbers .*got dtype complex128"):
    POINT_TAKERS[case](a, b)


@pytest.mark.parametrize("case", list(POINT_TAKERS))
def test_string_points_are_refused_by_name(case):
  with pytest.raises(ValueError, match=r"points must be real numbers|nodes must be real numbers"):
    POINT_TAKERS[case](DATA_POINTS, np.array(["a", "b", "c"]))


@pytest.mark.parametrize("case", list(POINT_TAKERS))
def test_integer_points_are_taken_as_floats(case):
  result = POINT_TAKERS[case](np.array([-3, 3]), np.array([-2, 0, 2], dtype=np.int32))
  if isinstance(result, schemes.base.Scheme):
    assert jnp.issubdtype(result.worker_points.dtype, jnp.floating)
    assert jnp.issubdtype(result.data_points.dtype, jnp.floating)
  else:
    assert jnp.issubdtype(result.dtype, jnp.floating)


def test_integer_points_decode_like_float_points():
  ints = schemes.LagrangeCode.create(2, 1, data_points=[-3, 3], worker_points=[-2, 0, 2])
  floats = schemes.LagrangeCode.create(
      2, 1, data_points=[-3.0, 3.0], worker_points=[-2.0, 0.0, 2.0])
  queries = jnp.arange(4.0).reshape(2, 2)
  np.testing.assert_array_equal(ints.encode(queries), floats.encode(queries))


@pytest.mark.parametrize("make", [
    lambda: schemes.BerrutCode.create(3, 1, dtype=jnp.int32),
    lambda: schemes.LagrangeCode.create(3, 1, dtype=jnp.int32),
    lambda: interp.chebyshev_points(3, dtype=jnp.int32),
], ids=["berrut", "lcc", "chebyshev_points"])
def test_an_integer_points_dtype_is_refused_as_such(make):
  with pytest.raises(ValueError, match=r"dtype must be a floating dtype \(float32 or float64\).*"
                                       r"got int32"):
    make()


@pytest.mark.parametrize("num_queries", [700, 1000])
def test_default_points_stay_distinct_in_float32_at_large_k(num_queries):
  code = schemes.BerrutCode.create(num_queries, 1, dtype=jnp.float32)
  a, b = np.asarray(code.data_points), np.asarray(code.worker_points)
  assert a.dtype == b.dtype == np.float32
  assert np.unique(a).size == num_queries and np.unique(b).size == num_queries + 1
  assert not np.intersect1d(a, b).size


def test_default_points_name_the_dtype_when_none_fits():
  with pytest.raises(ValueError, match=r"not all distinct in float16 .*Use float64"):
    schemes.BerrutCode.create(700, 1, dtype=jnp.float16)


def test_given_points_that_collide_only_in_float32_name_the_dtype():
  b = np.array([0.3, 0.3 + 1e-10, 0.9])
  with pytest.raises(ValueError, match=r"worker points must be distinct, but \[0\.3\] occur more "
                                       r"than once when rounded to float32 .*Use float64"):
    schemes.BerrutCode.create(2, 1, worker_points=b, dtype=jnp.float32)


# ---------------------------------------------------------------------------
# Item 6: integer sizes (numpy integers accepted; bools and floats refused).

NUMPY_SIZES = [  # (K, S) as numpy integers, and the same sizes as Python ints
    pytest.param(lambda k, s: schemes.BerrutCode.create(k, s), id="BerrutCode"),
    pytest.param(lambda k, s: schemes.LagrangeCode.create(k, s, np.int64(2)), id="LagrangeCode"),
    pytest.param(lambda k, s: schemes.Replication.create(k, s), id="Replication"),
    pytest.param(lambda k, s: schemes.Uncoded.create(k), id="Uncoded"),
    pytest.param(lambda k, s: schemes.ParityCode.create(k, s), id="ParityCode r"),
    pytest.param(lambda k, s: schemes.ByzantineBerrutCode.create(k, s, np.int64(1)),
                 id="ByzantineBerrutCode E"),
]


@pytest.mark.parametrize("make", NUMPY_SIZES)
def test_numpy_integer_sizes_are_integers(make):
  with_numpy, with_python = make(np.int64(3), np.int32(1)), make(3, 1)
  assert tuple(int(v) for v in with_numpy.sizes) == tuple(with_python.sizes)


def test_lcc_sizes_become_python_ints():
  code = schemes.LagrangeCode.create(np.int64(3), np.int64(1), np.int64(2))
  assert type(code.degree) is int  # noqa: E721  (a static field: hashed into jit caches)
  assert all(type(v) is int for v in code.sizes)  # noqa: E721


@pytest.mark.parametrize("make, match", [
    (lambda: schemes.LagrangeCode.create(3, 1, True), r"degree d >= 1, got d = True"),
    (lambda: schemes.LagrangeCode.create(3, 1, np.True_), r"degree d >= 1, got d = np\.True_"),
    (lambda: schemes.LagrangeCode.create(3, 1, 2.0), r"degree d >= 1, got d = 2\.0"),
    (lambda: schemes.LagrangeCode.sizes_for(3, 1, True), r"degree d >= 1, got d = True"),
    (lambda: schemes.BerrutCode.create(np.True_, 1), r"K >= 1 .*got K = np\.True_"),
    (lambda: schemes.BerrutCode.create(3, np.float64(1.0)), r"S must be >= 0 .*got S = np\.float64"),
    (lambda: interp.chebyshev_points(True), r"needs an integer n >= 1, got True"),
    (lambda: interp.polyfit_matrix(jnp.array([0.0, 1.0]), jnp.array([0.5]), True),
     r"polyfit_matrix: degree must be an integer >= 0, got True"),
], ids=["lcc degree True", "lcc degree np.True_", "lcc degree 2.0", "lcc sizes_for degree True",
        "K np.True_", "S float", "chebyshev n True", "polyfit degree True"])
def test_bools_and_floats_are_not_sizes(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_check_integer():
  assert validation.check_integer(np.int64(3), "K", 1) == 3
  assert type(validation.check_integer(np.uint8(3), "K", 1)) is int  # noqa: E721
  assert validation.check_integer(np.array(4), "K", 1) == 4
  for bad in (True, np.True_, 3.0, "3", None, np.array([3])):
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
      validation.check_integer(bad, "K", 1)


# ---------------------------------------------------------------------------
# Item 6: masks (bool array-likes accepted; anything else refused by name).


@pytest.fixture(scope="module")
def berrut():
  return schemes.BerrutCode.create(3, 1)  # K = 3, N = 4


@pytest.mark.parametrize("as_given", [list, tuple, np.array], ids=["list", "tuple", "numpy"])
def test_bool_array_likes_are_masks(berrut, as_given):
  outputs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)))
  mask = [True, False, True, True]
  expected = berrut.decode(outputs, jnp.asarray(mask))
  got = berrut.decode(outputs, as_given(mask))
  np.testing.assert_array_equal(got.values, expected.values)
  run = workers.run_workers(lambda w, x: w * x, 2.0, outputs, as_given(mask))
  np.testing.assert_array_equal(run, workers.run_workers(lambda w, x: w * x, 2.0, outputs,
                                                         jnp.asarray(mask)))
  pipeline = berrut(lambda w, x: w * x, 2.0, outputs[:3], as_given(mask))
  np.testing.assert_array_equal(pipeline.answered, [True] * 3)
  nodes, targets = jnp.array([0.0, 0.5, 1.0, 2.0]), jnp.array([0.25])
  np.testing.assert_array_equal(interp.berrut_matrix(nodes, targets, as_given(mask)),
                                interp.berrut_matrix(nodes, targets, jnp.asarray(mask)))


@pytest.mark.parametrize("call", [
    lambda c, m: c.decode(jnp.ones((4, 2)), m),
    lambda c, m: c(lambda w, x: w * x, 1.0, jnp.ones((3, 2)), m),
    lambda c, m: workers.run_workers(lambda w, x: w * x, 1.0, jnp.ones((4, 2)), m),
    lambda c, m: workers.mask_outputs(jnp.ones((4, 2)), m),
    lambda c, m: interp.lagrange_matrix(jnp.array([0.0, 0.5, 1.0, 2.0]), jnp.array([0.25]), m),
], ids=["decode", "pipeline", "run_workers", "mask_outputs", "lagrange_matrix"])
@pytest.mark.parametrize("mask, dtype", [
    ([1, 0, 1, 1], "int64"), ([1.0, 0.0, 1.0, 1.0], "float64"), (["y", "n", "y", "y"], "<U1"),
], ids=["int list", "float list", "string list"])
def test_masks_that_are_not_boolean_are_refused_by_name(berrut, call, mask, dtype):
  with pytest.raises(ValueError, match=rf"mask must be boolean, got {dtype} \(pass a bool array"):
    call(berrut, mask)


def test_a_float_mask_is_refused_under_jit_too():
  nodes, targets = jnp.array([0.0, 1.0]), jnp.array([0.5])
  with pytest.raises(ValueError, match=r"berrut_matrix: mask must be boolean, got float"):
    jax.jit(lambda m: interp.berrut_matrix(nodes, targets, m))(jnp.ones(2))


# ---------------------------------------------------------------------------
# Item 6: Fashion-MNIST IDX files.


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
  big_endian = array.astype(array.dtype.newbyteorder(">"))
  return (bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
          + big_endian.tobytes())


def _fashion_dir(tmp_path, images=None, labels=None, image_code=0x08, label_code=0x08):
  """A data_dir with the test split of a tiny Fashion-MNIST (5 images), gzipped."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8) if images is None else images
  labels = np.array([0, 3, 9, 1, 2], np.uint8) if labels is None else labels
  images_file, labels_file = data.FASHION_MNIST_FILES["test"]
  (tmp_path / images_file).write_bytes(gzip.compress(_idx_bytes(images, image_code)))
  (tmp_path / labels_file).write_bytes(gzip.compress(_idx_bytes(labels, label_code)))
  return tmp_path, tmp_path / images_file, tmp_path / labels_file


def _load(directory):
  return data.load("fashion_mnist", "test", source="debian", data_dir=str(directory), seed=None)


def test_a_well_formed_tiny_fashion_mnist_loads(tmp_path):
  directory, _, _ = _fashion_dir(tmp_path)
  dataset = _load(directory)
  assert dataset.images.shape == (5, 28, 28, 1)
  np.testing.assert_array_equal(dataset.labels, [0, 3, 9, 1, 2])


def test_a_truncated_gzip_names_the_file(tmp_path):
  directory, images, _ = _fashion_dir(tmp_path)
  raw = images.read_bytes()
  images.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(ValueError, match=rf"{images}: the gzip data is truncated or corrupted "
                                       r"\(EOFError"):
    _load(directory)


@pytest.mark.parametrize("offset", [20, -6], ids=["deflate stream", "crc trailer"])
def test_a_corrupted_gzip_names_the_file(tmp_path, offset):
  directory, _, labels = _fashion_dir(tmp_path)
  raw = bytearray(labels.read_bytes())
  raw[offset] ^= 0xFF
  labels.write_bytes(bytes(raw))
  with pytest.raises(ValueError, match=rf"{labels}: the gzip data is truncated or corrupted"):
    _load(directory)


def test_labels_outside_the_classes_name_the_file(tmp_path):
  directory, _, labels = _fashion_dir(tmp_path, labels=np.array([0, 3, 12, 1, 2], np.uint8))
  with pytest.raises(ValueError, match=rf"{labels}: Fashion-MNIST labels must be classes 0\.\.9, "
                                       r"but 1 are not \(label 12 at index 2\)"):
    _load(directory)


def test_images_of_another_size_name_the_file(tmp_path):
  directory, images, _ = _fashion_dir(tmp_path, images=np.zeros((5, 27, 27), np.uint8))
  with pytest.raises(ValueError, match=rf"{images}: Fashion-MNIST images must have shape "
                                       r"\(n, 28, 28\), got \(5, 27, 27\)"):
    _load(directory)


def test_float_pixels_name_the_file(tmp_path):
  directory, images, _ = _fashion_dir(
      tmp_path, images=np.full((5, 28, 28), 0.5, np.float32), image_code=0x0D)
  with pytest.raises(ValueError, match=rf"{images}: Fashion-MNIST images must be uint8 pixels "
                                       r"0\.\.255, got float32"):
    _load(directory)


def test_labels_of_another_type_name_the_file(tmp_path):
  directory, _, labels = _fashion_dir(
      tmp_path, labels=np.array([0, 3, 9, 1, 2], np.int32), label_code=0x0C)
  with pytest.raises(ValueError, match=rf"{labels}: Fashion-MNIST labels must be a 1-D uint8 "
                                       r"array, got int32"):
    _load(directory)
