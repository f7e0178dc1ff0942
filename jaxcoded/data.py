"""Image-classification datasets by name, as normalised numpy arrays.

One entry point, :func:`load`, returns a :class:`Dataset` (images ``(n, H, W,
C)`` float32, labels ``(n,)`` int32) for one split of one named dataset, and
:func:`batches` cuts it into deterministically shuffled minibatches.

Where each dataset comes from (``source="auto"`` picks the first that works):

  ``digits``         scikit-learn's real 8x8 handwritten digits (1797 images,
                     shipped inside scikit-learn): the small embedded default.
  ``fashion_mnist``  TensorFlow Datasets when ``tensorflow_datasets`` and
                     ``tensorflow`` are installed (``pip install
                     'jaxcoded[tfds]'``), built offline from Debian's files
                     when they are present; otherwise Debian's package
                     ``dataset-fashion-mnist`` read directly (gzip + numpy).
  ``mnist``          TensorFlow Datasets only (needs a connected machine the
                     first time).
  ``cifar10``        TensorFlow Datasets only (needs a connected machine the
                     first time).

A dataset that cannot be had raises an error that says how to get it; there is
never a silent fallback to another dataset.

Normalisation: pixels are scaled to [0, 1] and then standardised per channel,
``(x - mean) / std``, with the mean and standard deviation of the *train*
split (constants in ``NORMALISATION``), so both splits go through the same map
and the train split has mean 0 and standard deviation 1 per channel.

Example:
  >>> from jaxcoded import data
  >>> train = data.load("digits", "train", seed=0)
  >>> train.images.shape, train.labels.shape, train.num_classes
  ((1437, 8, 8, 1), (1437,), 10)
  >>> images, labels = next(data.batches(train, 32, seed=0))
  >>> images.shape
  (32, 8, 8, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import os
import pathlib
import struct
import tempfile
import zlib
from collections.abc import Iterator

import numpy as np

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGITS_NUM_TRAIN",
    "Dataset",
    "FASHION_MNIST_FILES",
    "NORMALISATION",
    "SOURCES",
    "batches",
    "load",
    "prepare_fashion_mnist_manual_dir",
    "read_idx",
    "tfds_available",
]

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10")
SOURCES = ("auto", "tfds", "debian", "sklearn")
SPLITS = ("train", "test")

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# File names of the upstream Fashion-MNIST release (and of Debian's package),
# by split: (images, labels).
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# gzip header modification times of the upstream Fashion-MNIST files (the
# files TFDS downloads and checksums), by file-name prefix.
_UPSTREAM_GZIP_MTIME = {"train": 1504176606, "t10k": 1504176627}

# sha256 of the upstream Fashion-MNIST files, copied from TFDS's own checksum
# file tensorflow_datasets/url_checksums/fashion_mnist.txt (tensorflow-datasets
# 4.9.10, installed copy). Used to check the re-headered Debian files.
FASHION_MNIST_UPSTREAM_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
    ),
    "train-labels-idx1-ubyte.gz": (
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
    ),
}

# The 8x8 digits are split once, by a permutation with a fixed seed that does
# not depend on ``load``'s ``seed``: the first 1437 images of the permutation
# are the train split, the last 360 the test split.
DIGITS_NUM_TRAIN = 1437
_DIGITS_SPLIT_SEED = 0

# Per-channel (mean, std) of the train split after scaling pixels to [0, 1].
# fashion_mnist and digits were computed here from the data (tests check them
# against the data); mnist and cifar10 are the standard published values.
NORMALISATION = {
    "digits": ((0.30544660,), (0.37603684,)),
    "fashion_mnist": ((0.28604060,), (0.35302424,)),
    "mnist": ((0.13066048,), (0.30810781,)),
    "cifar10": ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784)),
}

_NUM_CLASSES = {"digits": 10, "fashion_mnist": 10, "mnist": 10, "cifar10": 10}
# Largest raw pixel value: digits are 0..16, the others 0..255.
_PIXEL_MAX = {"digits": 16.0, "fashion_mnist": 255.0, "mnist": 255.0, "cifar10": 255.0}

_TFDS_INSTALL = "pip install 'jaxcoded[tfds]'"
_APT_INSTALL = "apt-get install dataset-fashion-mnist"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One split of a named dataset, in memory.

  Attributes:
    images: (n, H, W, C) float32, normalised (see the module docstring).
    labels: (n,) int32 class indices in [0, num_classes).
    num_classes: number of classes.
    name: dataset name, one of ``DATASETS``.
    split: "train" or "test".
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str
  split: str

  def __post_init__(self):
    if self.images.ndim != 4:
      raise ValueError(f"Dataset.images must be (n, H, W, C), got shape {self.images.shape}.")
    if self.labels.shape != self.images.shape[:1]:
      raise ValueError(
          f"Dataset.labels must have shape ({self.images.shape[0]},) to match the images, "
          f"got {self.labels.shape}."
      )

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(int(d) for d in self.images.shape[1:])


# ---------------------------------------------------------------------------
# Public entry points.


def load(
    name: str,
    split: str = "train",
    *,
    seed: int | None = 0,
    data_dir: str | None = None,
    source: str = "auto",
) -> Dataset:
  """Loads one split of a named image-classification dataset.

  Args:
    name: one of ``DATASETS``: "digits", "fashion_mnist", "mnist", "cifar10".
    split: "train" or "test". Sizes: digits 1437 / 360, (fashion_)mnist
      60000 / 10000, cifar10 50000 / 10000.
    seed: the examples are shuffled by ``np.random.default_rng(seed)``; the
      same seed gives the same order. ``None`` keeps the source's order.
      (For digits the train/test split itself never depends on ``seed``.)
    data_dir: for ``source="tfds"`` (or "auto" resolving to TFDS), TFDS's
      data directory (``None``: TFDS's default, ~/tensorflow_datasets). For
      ``source="debian"``, the directory holding the four Fashion-MNIST
      ``*-ubyte.gz`` files (``None``: ``DEBIAN_FASHION_MNIST_DIR``).
    source: "auto", "tfds", "debian" (fashion_mnist only) or "sklearn"
      (digits only). "auto" uses scikit-learn for digits, TFDS for the others
      when tensorflow_datasets and tensorflow are installed, and Debian's
      files for fashion_mnist otherwise.

  Returns:
    A ``Dataset`` with images (n, H, W, C) float32 normalised per channel with
    the train split's statistics, and labels (n,) int32.

  Raises:
    ValueError: unknown name, split or source, or a source that does not
      provide the dataset.
    FileNotFoundError: the dataset is not available on this machine; the
      message says how to get it.
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r} for {name}; use 'train' or 'test'.")
  if source not in SOURCES:
    raise ValueError(f"Unknown source {source!r}; use one of {', '.join(SOURCES)}.")
  if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
    raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}.")

  source = _resolve_source(name, source)
  if source == "sklearn":
    images, labels = _load_digits(split)
  elif source == "debian":
    images, labels = _load_fashion_mnist_idx(split, data_dir or DEBIAN_FASHION_MNIST_DIR)
  else:
    images, labels = _load_tfds(name, split, data_dir)

  if seed is not None:
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
  return Dataset(
      images=_normalise(name, images),
      labels=labels.astype(np.int32),
      num_classes=_NUM_CLASSES[name],
      name=name,
      split=split,
  )


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields one epoch of shuffled minibatches.

  The order is a permutation drawn from ``np.random.default_rng([seed,
  epoch])``: the same (seed, epoch) gives the same batches, and each epoch a
  fresh order.

  Args:
    dataset: the examples.
    batch_size: examples per batch, >= 1.
    seed: non-negative integer seed of the shuffle.
    epoch: non-negative epoch number, mixed into the seed.
    drop_remainder: if True, every batch has exactly ``batch_size`` examples
      (the last ``len(dataset) % batch_size`` of the shuffled order are
      skipped this epoch); if False, the last batch may be smaller.

  Yields:
    (images, labels): (b, H, W, C) float32 and (b,) int32 numpy arrays.

  Raises:
    ValueError: bad batch_size, seed or epoch, or ``drop_remainder`` with
      fewer examples than one batch (which would yield nothing).
  """
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
  for what, value in (("seed", seed), ("epoch", epoch)):
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise ValueError(f"{what} must be a non-negative integer, got {value!r}.")
  n = len(dataset)
  if drop_remainder and n < batch_size:
    raise ValueError(
        f"batch_size {batch_size} is larger than the {n} examples of {dataset.name}/"
        f"{dataset.split}, so drop_remainder=True would yield no batch."
    )
  order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
  stop = n - n % batch_size if drop_remainder else n
  for start in range(0, stop, batch_size):
    index = order[start : start + batch_size]
    yield dataset.images[index], dataset.labels[index]


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzipped or not.

  Format (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8,
  0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
  dimensions d, then d uint32 sizes, then the data in C order. Gzip is
  recognised by its magic bytes, not by the file name.

  Args:
    path: the file.

  Returns:
    Array of the stored shape and type, in native byte order.

  Raises:
    ValueError: the file is not a well-formed IDX file, or its gzip data is
      truncated or corrupted (the message names the file).
  """
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
      # EOFError: cut short; BadGzipFile: bad header or CRC; zlib.error: damaged stream.
      raise ValueError(
          f"{path}: the gzip data is truncated or corrupted ({type(error).__name__}: {error}); "
          "the file is damaged: download or reinstall it."
      ) from error
  if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
    raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()}).")
  dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
  offset = 4 + 4 * ndim
  if len(raw) < offset:
    raise ValueError(f"{path}: IDX header announces {ndim} dimensions but the file ends early.")
  shape = struct.unpack(f">{ndim}I", raw[4:offset])
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) - offset != expected:
    raise ValueError(
        f"{path}: IDX header announces shape {shape} ({expected} bytes of {dtype}) but "
        f"{len(raw) - offset} bytes of data follow."
    )
  array = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)
  return array.astype(dtype.newbyteorder("="), copy=False)


def tfds_available() -> bool:
  """Whether tensorflow_datasets and tensorflow are installed (not imported)."""
  return all(importlib.util.find_spec(m) is not None for m in ("tensorflow_datasets", "tensorflow"))


def prepare_fashion_mnist_manual_dir(
    dest: str | os.PathLike,
    source_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> pathlib.Path:
  """Writes the upstream Fashion-MNIST files, rebuilt from Debian's, into dest.

  Debian's files hold the same compressed data as the upstream release, but
  their gzip headers differ (no stored file name, another timestamp), so their
  sha256 differs from the checksums that TFDS verifies. This rewrites each
  header as upstream's: flag FNAME set with the file name without ``.gz``,
  mtime 1504176606 for ``train-*`` and 1504176627 for ``t10k-*``; the deflate
  stream and trailer are copied unchanged. The result can serve as TFDS's
  ``manual_dir`` to build ``fashion_mnist`` offline.

  Args:
    dest: output directory (created if needed).
    source_dir: directory with Debian's four ``*-ubyte.gz`` files.

  Returns:
    ``dest`` as a Path.

  Raises:
    FileNotFoundError: a source file is missing.
    ValueError: a rewritten file's sha256 does not match upstream's.
  """
  dest = pathlib.Path(dest)
  dest.mkdir(parents=True, exist_ok=True)
  for file_name in sorted(f for pair in FASHION_MNIST_FILES.values() for f in pair):
    src = pathlib.Path(source_dir) / file_name
    if not src.is_file():
      raise FileNotFoundError(f"{src} is missing. {_fashion_mnist_hint()}")
    mtime = _UPSTREAM_GZIP_MTIME[file_name.split("-")[0]]
    rewritten = _regzip_header(src.read_bytes(), file_name.removesuffix(".gz"), mtime)
    digest = hashlib.sha256(rewritten).hexdigest()
    if digest != FASHION_MNIST_UPSTREAM_SHA256[file_name]:
      raise ValueError(
          f"{src} re-headered has sha256 {digest}, not upstream's "
          f"{FASHION_MNIST_UPSTREAM_SHA256[file_name]}: the file is not the upstream data."
      )
    (dest / file_name).write_bytes(rewritten)
  return dest


# ---------------------------------------------------------------------------
# Sources.

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_GZIP_FTEXT, _GZIP_FHCRC, _GZIP_FEXTRA, _GZIP_FNAME, _GZIP_FCOMMENT = 1, 2, 4, 8, 16


def _resolve_source(name: str, source: str) -> str:
  """The concrete source for (name, source), or a ValueError saying why not."""
  providers = {
      "digits": ("sklearn",),
      "fashion_mnist": ("tfds", "debian"),
      "mnist": ("tfds",),
      "cifar10": ("tfds",),
  }[name]
  if source == "auto":
    if name == "digits":
      return "sklearn"
    if tfds_available():
      return "tfds"
    if name == "fashion_mnist":
      return "debian"
    raise FileNotFoundError(_missing_message(name))
  if source not in providers:
    raise ValueError(
        f"Source {source!r} does not provide {name}; {name} comes from "
        f"{' or '.join(repr(p) for p in providers)}."
    )
  return source


def _missing_message(name: str) -> str:
  pretty = {"mnist": "MNIST", "cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST"}[name]
  return (
      f"{pretty} is only available through TensorFlow Datasets on a connected machine: "
      f"install it with `{_TFDS_INSTALL}` (tensorflow-datasets, tensorflow-cpu, "
      "importlib_resources) and run once with network access; TFDS caches it under its "
      "data_dir. Offline, only Fashion-MNIST can be had (`"
      f"{_APT_INSTALL}`) and the digits dataset ships with scikit-learn."
  )


def _fashion_mnist_hint() -> str:
  return (
      f"Fashion-MNIST offline comes from Debian's package: `{_APT_INSTALL}` puts the files "
      f"in {DEBIAN_FASHION_MNIST_DIR}; on a connected machine `{_TFDS_INSTALL}` gets it "
      "through TensorFlow Datasets."
  )


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  images, labels = _digits_arrays()
  order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
  index = order[:DIGITS_NUM_TRAIN] if split == "train" else order[DIGITS_NUM_TRAIN:]
  return images[index], labels[index]


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """All 1797 digits: (1797, 8, 8, 1) float64 in 0..16 and (1797,) int64."""
  from sklearn.datasets import load_digits  # Imported lazily: slow, only needed here.

  bunch = load_digits()
  images = bunch.images[..., None]
  images.setflags(write=False)
  labels = np.asarray(bunch.target)
  labels.setflags(write=False)
  return images, labels


def _load_fashion_mnist_idx(split: str, directory: str) -> tuple[np.ndarray, np.ndarray]:
  paths = [os.path.join(directory, f) for f in FASHION_MNIST_FILES[split]]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST files not found: {', '.join(missing)}. {_fashion_mnist_hint()}"
    )
  return _read_fashion_mnist_idx(split, *paths, *(os.path.getmtime(p) for p in paths))


@functools.lru_cache(maxsize=4)
def _read_fashion_mnist_idx(
    split: str, images_path: str, labels_path: str, *mtimes: float
) -> tuple[np.ndarray, np.ndarray]:
  """(n, 28, 28, 1) uint8 and (n,) uint8, read-only; cached per file version.

  Every problem names its file: unreadable IDX or gzip data (``read_idx``),
  images that are not uint8 pixels of 28 x 28, labels that are not uint8 in
  0..9, or files that disagree on n.
  """
  del mtimes  # Part of the cache key only: a rewritten file is read again.
  images, labels = read_idx(images_path), read_idx(labels_path)
  hint = f"Fashion-MNIST {split} files must hold uint8 (IDX type 0x08) data; reinstall them"
  if images.dtype != np.uint8:
    raise ValueError(
        f"{images_path}: Fashion-MNIST images must be uint8 pixels 0..255, got {images.dtype} "
        f"data ({hint})."
    )
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise ValueError(
        f"{images_path}: Fashion-MNIST images must have shape (n, 28, 28), got {images.shape}."
    )
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise ValueError(
        f"{labels_path}: Fashion-MNIST labels must be a 1-D uint8 array, got {labels.dtype} "
        f"of shape {labels.shape} ({hint})."
    )
  bad = np.flatnonzero(labels > 9)
  if bad.size:
    raise ValueError(
        f"{labels_path}: Fashion-MNIST labels must be classes 0..9, but {bad.size} are not "
        f"(label {int(labels[bad[0]])} at index {int(bad[0])})."
    )
  if labels.shape != images.shape[:1]:
    raise ValueError(
        f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
        f"{labels.shape[0]} labels; they must be one label per image."
    )
  return images[..., None], labels


def _load_tfds(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  try:
    import tensorflow_datasets as tfds  # Optional dependency: jaxcoded[tfds].
  except ImportError as e:
    raise FileNotFoundError(
        f"source='tfds' needs tensorflow_datasets and tensorflow ({e}). {_missing_message(name)}"
    ) from e
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    with tempfile.TemporaryDirectory(prefix="jaxcoded-tfds-manual-") as manual_dir:
      download_config = None
      if name == "fashion_mnist" and _debian_fashion_mnist_present():
        # Build offline from Debian's files instead of downloading the same bytes;
        # TFDS takes a file from manual_dir when its name and checksum match.
        prepare_fashion_mnist_manual_dir(manual_dir)
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
      try:
        builder.download_and_prepare(download_config=download_config)
      except Exception as e:  # TFDS raises many kinds; all mean "could not build".
        raise FileNotFoundError(
            f"TFDS could not build {name}: {e}. {_missing_message(name)}"
        ) from e
  arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return np.asarray(arrays["image"]), np.asarray(arrays["label"])


def _debian_fashion_mnist_present() -> bool:
  return all(
      os.path.isfile(os.path.join(DEBIAN_FASHION_MNIST_DIR, f))
      for pair in FASHION_MNIST_FILES.values()
      for f in pair
  )


def _regzip_header(gz: bytes, file_name: str, mtime: int) -> bytes:
  """The gzip member ``gz`` with a new header (FNAME ``file_name``, ``mtime``).

  The deflate stream and trailer are kept; XFL and OS bytes are kept too.
  """
  if len(gz) < 18 or gz[:3] != b"\x1f\x8b\x08":
    raise ValueError("not a gzip (deflate) file.")
  flags, xfl, os_byte = gz[3], gz[8], gz[9]
  pos = 10
  if flags & _GZIP_FEXTRA:
    pos += 2 + int.from_bytes(gz[pos : pos + 2], "little")
  for flag in (_GZIP_FNAME, _GZIP_FCOMMENT):
    if flags & flag:
      pos = gz.index(b"\x00", pos) + 1
  if flags & _GZIP_FHCRC:
    pos += 2
  header = (
      b"\x1f\x8b\x08"
      + bytes([_GZIP_FNAME])
      + struct.pack("<I", mtime)
      + bytes([xfl, os_byte])
      + file_name.encode("latin-1")
      + b"\x00"
  )
  return header + gz[pos:]


def _normalise(name: str, images: np.ndarray) -> np.ndarray:
  """Scales raw pixels to [0, 1], then standardises per channel."""
  mean, std = (np.asarray(v, dtype=np.float32) for v in NORMALISATION[name])
  if images.shape[-1] != mean.shape[0]:
    raise ValueError(
        f"{name}: images have {images.shape[-1]} channels, expected {mean.shape[0]}."
    )
  scaled = images.astype(np.float32) / np.float32(_PIXEL_MAX[name])
  return (scaled - mean) / std


def normalise(name: str, images: np.ndarray) -> np.ndarray:
  """Raw pixels of dataset ``name`` (0..255, or 0..16 for digits) -> what ``load`` returns.

  Args:
    name: a dataset name of ``NORMALISATION``.
    images: (..., H, W, C) raw pixel values.

  Returns:
    float32 images scaled to [0, 1] and standardised per channel.
  """
  if name not in NORMALISATION:
    raise ValueError(f"normalise: unknown dataset {name!r}; known: {sorted(NORMALISATION)}.")
  return _normalise(name, np.asarray(images))
