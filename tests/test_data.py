"""Tests for jaxcoded.data: IDX parsing, Debian Fashion-MNIST, digits, TFDS path."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import sys
import types

import numpy as np
import pytest

from jaxcoded import data

_DEBIAN_FILES = [
    os.path.join(data.DEBIAN_FASHION_MNIST_DIR, f)
    for pair in data.FASHION_MNIST_FILES.values()
    for f in pair
]
_HAVE_DEBIAN = all(os.path.isfile(p) for p in _DEBIAN_FILES)
needs_debian = pytest.mark.skipif(
    not _HAVE_DEBIAN,
    reason=f"Debian package dataset-fashion-mnist is not installed (no files in "
    f"{data.DEBIAN_FASHION_MNIST_DIR}); `apt-get install dataset-fashion-mnist` provides them.",
)


def _write_idx(path, array: np.ndarray, type_code: int, compress: bool) -> None:
  """Writes an IDX file by the format's definition (big-endian)."""
  big_endian = array.astype(array.dtype.newbyteorder(">"))
  raw = (
      bytes([0, 0, type_code, array.ndim])
      + struct.pack(f">{array.ndim}I", *array.shape)
      + big_endian.tobytes()
  )
  with open(path, "wb") as f:
    f.write(gzip.compress(raw) if compress else raw)


# ---------------------------------------------------------------------------
# IDX parser.


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "dtype, code, shape",
    [
        (np.uint8, 0x08, (5, 7, 3)),
        (np.int8, 0x09, (11,)),
        (np.int16, 0x0B, (4, 6)),
        (np.int32, 0x0C, (3, 2, 2, 2)),
        (np.float32, 0x0D, (9, 4)),
        (np.float64, 0x0E, (2, 5)),
    ],
)
def test_read_idx_round_trip(tmp_path, rng, compress, dtype, code, shape):
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    expected = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
  else:
    expected = rng.standard_normal(shape).astype(dtype)
  path = tmp_path / "array.idx"  # No .gz suffix: gzip is detected by content.
  _write_idx(path, expected, code, compress)
  got = data.read_idx(path)
  assert got.dtype == np.dtype(dtype) and got.dtype.isnative
  np.testing.assert_array_equal(got, expected)


def test_read_idx_rejects_malformed(tmp_path):
  path = tmp_path / "bad.idx"
  _write_idx(path, np.arange(12, dtype=np.uint8).reshape(3, 4), 0x08, compress=False)
  path.write_bytes(path.read_bytes()[:-1])  # Truncated data.
  with pytest.raises(ValueError, match="announces shape"):
    data.read_idx(path)
  path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)  # Wrong magic.
  with pytest.raises(ValueError, match="not an IDX file"):
    data.read_idx(path)
  path.write_bytes(b"\x00\x00\x08\x03\x00\x00")  # Header ends early.
  with pytest.raises(ValueError, match="ends early"):
    data.read_idx(path)


# ---------------------------------------------------------------------------
# Debian's Fashion-MNIST files.


@needs_debian
@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_debian_idx_files_shapes_and_label_counts(split, n):
  images_file, labels_file = data.FASHION_MNIST_FILES[split]
  images = data.read_idx(os.path.join(data.DEBIAN_FASHION_MNIST_DIR, images_file))
  labels = data.read_idx(os.path.join(data.DEBIAN_FASHION_MNIST_DIR, labels_file))
  assert images.shape == (n, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (n,) and labels.dtype == np.uint8
  # Fashion-MNIST is balanced: n / 10 examples of each class in each split.
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, n // 10))


@needs_debian
def test_load_fashion_mnist_from_debian():
  train = data.load("fashion_mnist", "train", source="debian", seed=None)
  test = data.load("fashion_mnist", "test", source="debian", seed=3)
  assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.float32
  assert test.images.shape == (10000, 28, 28, 1) and test.labels.dtype == np.int32
  assert (train.num_classes, train.name) == (10, "fashion_mnist")
  assert (train.split, test.split) == ("train", "test")
  # The spec's mean and std hold the train split's statistics.
  assert abs(float(train.images.mean(dtype=np.float64))) < 1e-4
  assert abs(float(train.images.std(dtype=np.float64)) - 1.0) < 1e-4
  # Independent reference: read the gzip by hand (labels offset 8, images 16).
  with gzip.open(os.path.join(data.DEBIAN_FASHION_MNIST_DIR, "train-labels-idx1-ubyte.gz")) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
  with gzip.open(os.path.join(data.DEBIAN_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")) as f:
    first = np.frombuffer(f.read(16 + 2 * 784), np.uint8, offset=16).reshape(2, 28, 28, 1)
  np.testing.assert_array_equal(train.labels, labels)
  spec = data.dataset_spec("fashion_mnist")
  mean, std = spec.mean, spec.std
  expected = (first / 255.0 - mean[0]) / std[0]
  np.testing.assert_allclose(train.images[:2], expected, rtol=1e-5, atol=1e-5)
  # A seed permutes the examples and nothing else.
  unshuffled = data.load("fashion_mnist", "test", source="debian", seed=None)
  order = np.random.default_rng(3).permutation(10000)
  np.testing.assert_array_equal(test.labels, unshuffled.labels[order])
  np.testing.assert_array_equal(test.images, unshuffled.images[order])


def test_load_debian_missing_files_says_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data.load("fashion_mnist", "train", source="debian", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------
# Re-headering Debian's gzip files into upstream's bytes.


def test_regzip_header_matches_gzip_module(rng):
  payload = rng.integers(0, 256, size=5000, dtype=np.uint8).tobytes()
  def gzipped(filename, mtime):
    sink = io.BytesIO()
    with gzip.GzipFile(filename, "wb", compresslevel=9, fileobj=sink, mtime=mtime) as f:
      f.write(payload)
    return sink.getvalue()

  bare = gzipped("", 0)
  assert bare[3] == 0  # No file name stored, as in Debian's files.
  named = gzipped("payload.bin", 1234567)
  assert named[3] == 8  # FNAME set: the reference really stores a name.
  assert data._regzip_header(bare, "payload.bin", 1234567) == named
  # And back: re-headering a header that has a name replaces it.
  assert data._regzip_header(named, "other", 7)[10:16] == b"other\x00"
  assert gzip.decompress(data._regzip_header(named, "other", 7)) == payload


@needs_debian
def test_prepare_fashion_mnist_manual_dir_gives_upstream_bytes(tmp_path):
  # Upstream sha256 values, from TFDS 4.9.10's checksum file
  # tensorflow_datasets/url_checksums/fashion_mnist.txt (also in
  # data.FASHION_MNIST_UPSTREAM_SHA256; repeated here so that an edit of the
  # constant cannot make the test pass).
  upstream = {
      "t10k-images-idx3-ubyte.gz": (
          4422102,
          "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
      ),
      "t10k-labels-idx1-ubyte.gz": (
          5148,
          "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
      ),
      "train-images-idx3-ubyte.gz": (
          26421880,
          "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
      ),
      "train-labels-idx1-ubyte.gz": (
          29515,
          "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
      ),
  }
  out = data.prepare_fashion_mnist_manual_dir(tmp_path / "manual")
  assert sorted(os.listdir(out)) == sorted(upstream)
  for name, (size, sha256) in upstream.items():
    produced = (out / name).read_bytes()
    assert len(produced) == size
    assert hashlib.sha256(produced).hexdigest() == sha256
  # The Debian files themselves are untouched (their sha256 differs).
  with open(os.path.join(data.DEBIAN_FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
    debian = f.read()
  assert hashlib.sha256(debian).hexdigest() != upstream["t10k-labels-idx1-ubyte.gz"][1]


def test_prepare_manual_dir_rejects_foreign_files(tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  for pair in data.FASHION_MNIST_FILES.values():
    for name in pair:
      (source / name).write_bytes(gzip.compress(b"not fashion mnist"))
  with pytest.raises(ValueError, match="not the upstream data"):
    data.prepare_fashion_mnist_manual_dir(tmp_path / "manual", source_dir=source)
  with pytest.raises(FileNotFoundError, match="apt-get install"):
    data.prepare_fashion_mnist_manual_dir(tmp_path / "manual", source_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------------------
# Digits.


def _raw_digits():
  from sklearn.datasets import load_digits

  bunch = load_digits()
  return bunch.images, bunch.target


def _row_keys(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
  return sorted(images[i].tobytes() + bytes([int(labels[i])]) for i in range(len(labels)))


def test_digits_splits():
  train = data.load("digits", "train", seed=0)
  test = data.load("digits", "test", seed=0)
  assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
  assert train.images.dtype == np.float32 and train.labels.dtype == np.int32
  assert train.num_classes == 10 and train.image_shape == (8, 8, 1) and len(test) == 360
  # Together the splits are exactly sklearn's 1797 digits, each once.
  raw_images, raw_labels = _raw_digits()
  spec = data.dataset_spec("digits")
  mean, std = spec.mean, spec.std
  both = np.concatenate([train.images, test.images])
  pixels = (both * std[0] + mean[0]) * 16.0  # Undo the normalisation: integers 0..16.
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
  pixels = np.round(pixels).astype(np.uint8)
  labels = np.concatenate([train.labels, test.labels])
  assert _row_keys(pixels, labels) == _row_keys(raw_images[..., None].astype(np.uint8), raw_labels)
  # The spec's mean and std hold the train split's statistics.
  assert abs(float(train.images.mean(dtype=np.float64))) < 1e-5
  assert abs(float(train.images.std(dtype=np.float64)) - 1.0) < 1e-5
  # Every class is present in the test split.
  assert set(np.unique(test.labels)) == set(range(10))


def test_digits_seed_shuffles_within_the_split_only():
  for split in ("train", "test"):
    a = data.load("digits", split, seed=0)
    b = data.load("digits", split, seed=123)
    c = data.load("digits", split, seed=None)
    keys = _row_keys(a.images, a.labels)
    assert keys == _row_keys(b.images, b.labels) == _row_keys(c.images, c.labels)
    assert not np.array_equal(a.labels, b.labels)
    again = data.load("digits", split, seed=123)
    np.testing.assert_array_equal(again.images, b.images)
    np.testing.assert_array_equal(again.labels, b.labels)


# ---------------------------------------------------------------------------
# Batches.


def _tiny_dataset(n: int) -> data.Dataset:
  images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
  return data.Dataset(images, np.arange(n, dtype=np.int32) % 3, 3, "tiny", "train")


def test_batches_cover_an_epoch_deterministically():
  ds = _tiny_dataset(23)
  epoch0 = list(data.batches(ds, 5, seed=1, epoch=0))
  assert [x.shape for x, _ in epoch0] == [(5, 1, 1, 1)] * 4
  seen = np.concatenate([x.ravel() for x, _ in epoch0]).astype(int)
  assert len(set(seen)) == 20
  for x, y in epoch0:  # Images and labels stay paired.
    np.testing.assert_array_equal(y, x.ravel().astype(int) % 3)
  again = list(data.batches(ds, 5, seed=1, epoch=0))
  for (x0, y0), (x1, y1) in zip(epoch0, again):
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_array_equal(y0, y1)
  epoch1 = np.concatenate([x.ravel() for x, _ in data.batches(ds, 5, seed=1, epoch=1)])
  other_seed = np.concatenate([x.ravel() for x, _ in data.batches(ds, 5, seed=2, epoch=0)])
  assert not np.array_equal(epoch1, seen) and not np.array_equal(other_seed, seen)
  full = list(data.batches(ds, 5, seed=1, epoch=0, drop_remainder=False))
  assert [len(y) for _, y in full] == [5, 5, 5, 5, 3]
  assert sorted(np.concatenate([x.ravel() for x, _ in full]).astype(int)) == list(range(23))


def test_batches_rejects_bad_arguments():
  ds = _tiny_dataset(4)
  with pytest.raises(ValueError, match="drop_remainder"):
    next(data.batches(ds, 5, seed=0))
  assert len(list(data.batches(ds, 5, seed=0, drop_remainder=False))) == 1
  for kwargs in (
      {"batch_size": 0, "seed": 0},
      {"batch_size": 2, "seed": -1},
      {"batch_size": 2, "seed": 0, "epoch": -1},
  ):
    with pytest.raises(ValueError):
      next(data.batches(ds, **kwargs))


# ---------------------------------------------------------------------------
# Errors for what cannot be had.


def test_load_rejects_unknown_arguments():
  with pytest.raises(ValueError, match="known datasets: digits, fashion_mnist, mnist, cifar10"):
    data.load("imagenet")
  with pytest.raises(ValueError, match="split"):
    data.load("digits", "validation")
  with pytest.raises(ValueError, match="source"):
    data.load("digits", source="internet")
  with pytest.raises(ValueError, match="does not provide mnist"):
    data.load("mnist", source="debian")
  with pytest.raises(ValueError, match="does not provide digits"):
    data.load("digits", source="tfds")
  with pytest.raises(ValueError, match="seed"):
    data.load("digits", seed=-1)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_tfds_dataset_says_how_to_get_it(monkeypatch, name):
  monkeypatch.setattr(data, "tfds_available", lambda: False)
  with pytest.raises(FileNotFoundError) as info:
    data.load(name)
  message = str(info.value)
  assert "connected machine" in message
  assert "pip install 'jaxcoded[tfds]'" in message
  assert "apt-get install dataset-fashion-mnist" in message


@pytest.mark.skipif(data.tfds_available(), reason="tensorflow_datasets is installed here.")
def test_tfds_source_without_tfds_says_how_to_install_it():
  with pytest.raises(FileNotFoundError, match=r"jaxcoded\[tfds\]"):
    data.load("mnist", source="tfds")


# ---------------------------------------------------------------------------
# TFDS path, with a stand-in for tensorflow_datasets.


class _FakeTfds(types.ModuleType):
  """Just enough of tensorflow_datasets for data._load_tfds, recording calls."""

  def __init__(self, arrays, fail_download=False):
    super().__init__("tensorflow_datasets")
    self.arrays, self.fail_download, self.calls = arrays, fail_download, []
    self.download = types.SimpleNamespace(
        DownloadConfig=lambda manual_dir: {"manual_dir": manual_dir}
    )
    fake = self

    class Builder:
      def __init__(self, name, data_dir):
        fake.calls.append(("builder", name, data_dir))
        self.prepared = False

      def is_prepared(self):
        return self.prepared

      def download_and_prepare(self, download_config=None):
        manual = None if download_config is None else download_config["manual_dir"]
        digests = None
        if manual is not None:
          digests = {
              f: hashlib.sha256(open(os.path.join(manual, f), "rb").read()).hexdigest()
              for f in os.listdir(manual)
          }
        fake.calls.append(("download_and_prepare", manual, digests))
        if fake.fail_download:
          raise ConnectionError("no network")
        self.prepared = True

      def as_dataset(self, split, batch_size):
        fake.calls.append(("as_dataset", split, batch_size))
        return fake.arrays[split]

    self.builder = Builder

  @staticmethod
  def as_numpy(tree):
    return tree


def _fake_arrays(rng, n, shape, classes=10):
  return {
      split: {
          "image": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
          "label": rng.integers(0, classes, size=(n,)).astype(np.int64),
      }
      for split in ("train", "test")
  }


def test_tfds_path_with_fake_tfds(monkeypatch, rng, tmp_path):
  arrays = _fake_arrays(rng, 12, (32, 32, 3))
  fake = _FakeTfds(arrays)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  monkeypatch.setattr(data, "tfds_available", lambda: True)
  ds = data.load("cifar10", "test", seed=None, data_dir=str(tmp_path))  # source="auto" -> TFDS.
  assert fake.calls == [
      ("builder", "cifar10", str(tmp_path)),
      ("download_and_prepare", None, None),
      ("as_dataset", "test", -1),
  ]
  mean, std = (np.asarray(v) for v in (data.dataset_spec("cifar10").mean, data.dataset_spec("cifar10").std))
  expected = (arrays["test"]["image"] / 255.0 - mean) / std
  np.testing.assert_allclose(ds.images, expected, rtol=1e-5, atol=1e-5)
  assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int32
  np.testing.assert_array_equal(ds.labels, arrays["test"]["label"])


def test_tfds_download_failure_says_how_to_get_it(monkeypatch, rng):
  fake = _FakeTfds(_fake_arrays(rng, 4, (28, 28, 1)), fail_download=True)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  with pytest.raises(FileNotFoundError, match="no network.*connected machine"):
    data.load("mnist", source="tfds")


@needs_debian
def test_tfds_fashion_mnist_gets_a_manual_dir_of_upstream_files(monkeypatch, rng):
  fake = _FakeTfds(_fake_arrays(rng, 6, (28, 28, 1)))
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  ds = data.load("fashion_mnist", "train", source="tfds", seed=0)
  assert len(ds) == 6
  (_, manual_dir, digests) = fake.calls[1]
  assert manual_dir is not None and digests == data.FASHION_MNIST_UPSTREAM_SHA256
  assert not os.path.exists(manual_dir)  # The temporary copy is cleaned up.


# ---------------------------------------------------------------------------
# TFDS path, for real (only where tensorflow and tensorflow_datasets are installed).


@needs_debian
@pytest.mark.skipif(
    not data.tfds_available(),
    reason="tensorflow_datasets and tensorflow are not installed (pip install 'jaxcoded[tfds]'); "
    "the offline TFDS build of fashion_mnist from Debian's files needs both.",
)
def test_tfds_builds_fashion_mnist_offline_from_debian_files(tmp_path):
  from_tfds = data.load("fashion_mnist", "test", source="tfds", data_dir=str(tmp_path), seed=None)
  from_debian = data.load("fashion_mnist", "test", source="debian", seed=None)
  assert from_tfds.images.shape == (10000, 28, 28, 1)
  # TFDS stores the examples in its own order: compare them as multisets.
  expected = _row_keys(from_debian.images, from_debian.labels)
  assert _row_keys(from_tfds.images, from_tfds.labels) == expected
