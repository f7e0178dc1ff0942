"""Classification datasets by name, as normalised numpy arrays: one spec per dataset.

One entry point, :func:`load`, returns a :class:`Dataset` (inputs ``(n,
*input_shape)`` float32, e.g. images ``(n, H, W, C)``, labels ``(n,)`` int32)
for one split of one registered dataset, and :func:`batches` cuts it into
deterministically shuffled minibatches.

Each dataset is ONE registration, a :class:`DatasetSpec`: its name, number
of classes, input shape, normalisation (and so its value range and the checks
of its queries, :func:`query_spec`) and its sources. Training, the comparison
and the service read the spec. :func:`from_arrays` registers a dataset given
as in-memory arrays (tabular data, say), which then works end to end.

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
split (``DatasetSpec.mean`` and ``std``), so both splits go through the same map
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
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from jaxcoded import queries

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGITS_NUM_TRAIN",
    "Dataset",
    "DatasetSpec",
    "FASHION_MNIST_FILES",
    "SOURCES",
    "batches",
    "dataset_spec",
    "datasets",
    "from_arrays",
    "load",
    "prepare_fashion_mnist_manual_dir",
    "query_spec",
    "read_idx",
    "register_dataset",
    "tfds_available",
    "value_range",
]

SOURCES = ("auto", "tfds", "debian", "sklearn", "arrays")
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

_TFDS_INSTALL = "pip install 'jaxcoded[tfds]'"
_APT_INSTALL = "apt-get install dataset-fashion-mnist"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One split of a named dataset, in memory.

  Attributes:
    images: ``(n, *input_shape)`` float32 inputs, normalised (see the module
      docstring): (n, H, W, C) images, or (n, D) feature vectors.
    labels: (n,) int32 class indices in [0, num_classes).
    num_classes: number of classes.
    name: dataset name (a registered :class:`DatasetSpec`).
    split: "train" or "test".
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str
  split: str

  def __post_init__(self):
    if self.images.ndim < 2:
      raise ValueError(f"Dataset.images must be (n, *input_shape), got shape {self.images.shape}.")
    if self.labels.shape != self.images.shape[:1]:
      raise ValueError(
          f"Dataset.labels must have shape ({self.images.shape[0]},) to match the images, "
          f"got {self.labels.shape}."
      )

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one input: (H, W, C) of an image, (D,) of a feature vector."""
    return tuple(int(d) for d in self.images.shape[1:])

  @property
  def image_shape(self) -> tuple[int, ...]:
    """The shape of one input (the name the image datasets use)."""
    return self.input_shape


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
  """Loads one split of a registered dataset.

  Args:
    name: a registered dataset (:func:`datasets`): "digits", "fashion_mnist",
      "mnist", "cifar10", or one registered with :func:`from_arrays`.
    split: "train" or "test". Sizes: digits 1437 / 360, mnist and fashion_mnist
      60000 / 10000, cifar10 50000 / 10000.
    seed: the examples are shuffled by ``np.random.default_rng(seed)``; the
      same seed gives the same order. ``None`` keeps the source's order.
      (For digits the train/test split itself never depends on ``seed``.)
    data_dir: for ``source="tfds"`` (or "auto" resolving to TFDS), TFDS's
      data directory (``None``: TFDS's default, ~/tensorflow_datasets). For
      ``source="debian"``, the directory holding the four Fashion-MNIST
      ``*-ubyte.gz`` files (``None``: ``DEBIAN_FASHION_MNIST_DIR``).
    source: "auto" or one of the spec's sources: "tfds", "debian"
      (fashion_mnist only), "sklearn" (digits only), "arrays" (in-memory).
      "auto" uses scikit-learn for digits, TFDS for the others when
      tensorflow_datasets and tensorflow are installed, and Debian's files
      for fashion_mnist otherwise.

  Returns:
    A ``Dataset`` with inputs ``(n, *input_shape)`` float32 normalised per channel
    (last axis) with the train split's statistics, and labels (n,) int32.

  Raises:
    ValueError: unknown name, split or source, or a source that does not
      provide the dataset.
    FileNotFoundError: the dataset is not available on this machine; the
      message says how to get it.
  """
  spec = dataset_spec(name)
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r} for {name}; use 'train' or 'test'.")
  if source not in SOURCES:
    raise ValueError(f"Unknown source {source!r}; use one of {', '.join(SOURCES)}.")
  if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
    raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}.")

  source = _resolve_source(spec, source)
  images, labels = spec.sources[source](split, data_dir)

  if seed is not None:
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
  return Dataset(
      images=spec.normalise(images),
      labels=labels.astype(np.int32),
      num_classes=spec.num_classes,
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


def _resolve_source(spec: "DatasetSpec", source: str) -> str:
  """The concrete source for (spec, source), or a ValueError saying why not."""
  if source == "auto":
    return spec.auto_source()
  if source not in spec.sources:
    raise ValueError(
        f"Source {source!r} does not provide {spec.name}; {spec.name} comes from "
        f"{' or '.join(repr(p) for p in spec.sources)}."
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


def normalise(name: str, images: np.ndarray) -> np.ndarray:
  """Raw pixels of dataset ``name`` (0..255, or 0..16 for digits) -> what ``load`` returns.

  Args:
    name: a registered dataset.
    images: (..., H, W, C) raw pixel values (or raw feature vectors).

  Returns:
    float32 inputs scaled to [0, 1] and standardised per channel.
  """
  return dataset_spec(name).normalise(np.asarray(images))


# ---------------------------------------------------------------------------
# What a valid query of each dataset is (the value checks of ``jaxcoded.queries``).

# Relative slack for float rounding at the interval's ends.
_RANGE_SLACK = 1e-3


def value_range(name: str) -> tuple[float, float] | None:
  """(low, high) of the normalised inputs of dataset ``name``, with a little slack.

  Image pixels scaled to [0, 1] and standardised per channel lie in
  [-mean / std, (1 - mean) / std]; the union over the channels. None for a
  dataset whose raw values are unbounded (in-memory feature vectors).
  """
  return dataset_spec(name).value_range()


def query_spec(name: str) -> queries.QuerySpec:
  """The value checks of dataset ``name``'s queries, for ``Deployment(query_range=...)``.

  Finite floats within :func:`value_range`: raw integer pixels (uint8) and
  images normalised for another dataset are refused with a message that says
  how to normalise them. In-memory feature vectors: finite values.

  Example:
    >>> from jaxcoded import data
    >>> spec = data.query_spec("digits")
    >>> spec.float_only, round(spec.low, 2), round(spec.high, 2)
    (True, -0.81, 1.85)
  """
  return dataset_spec(name).query_spec()


# ---------------------------------------------------------------------------
# One registration per dataset.

Loader = Callable[[str, "str | None"], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Everything the library knows about one dataset.

  Attributes:
    name: the name configs use (``config.dataset``).
    num_classes: number of classes; labels are in [0, num_classes).
    input_shape: the shape of one input: (H, W, C) for images, (D,) for
      feature vectors.
    sources: source name -> ``loader(split, data_dir) -> (raw inputs, labels)``
      for "train" and "test"; the first that works is "auto"'s choice unless
      ``auto`` says otherwise.
    mean, std: per-channel (last axis) statistics of the train split after
      dividing by ``pixel_max``; inputs are normalised as (x / pixel_max -
      mean) / std.
    pixel_max: the largest raw value of an image (255, or 16 for digits); 1
      for feature vectors.
    images: raw inputs are bounded integer pixels: normalised queries then lie
      in a known range and integer queries are refused (``query_spec``).
    auto: picks the source for ``source="auto"`` (None: the first source).
  """

  name: str
  num_classes: int
  input_shape: tuple[int, ...]
  sources: Mapping[str, Loader]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  pixel_max: float = 1.0
  images: bool = True
  auto: Callable[[], str] | None = None

  def __post_init__(self):
    if not self.sources:
      raise ValueError(f"DatasetSpec {self.name!r}: give at least one source.")
    unknown = set(self.sources) - set(SOURCES)
    if unknown:
      raise ValueError(f"DatasetSpec {self.name!r}: unknown sources {sorted(unknown)}; use {SOURCES}.")
    channels = self.input_shape[-1]
    if len(self.mean) != channels or len(self.std) != channels:
      raise ValueError(
          f"DatasetSpec {self.name!r}: mean and std need one value per channel (the last axis "
          f"of {self.input_shape}), got {len(self.mean)} and {len(self.std)}."
      )
    if not all(v > 0 for v in self.std):
      raise ValueError(f"DatasetSpec {self.name!r}: std must be positive, got {self.std}.")

  def auto_source(self) -> str:
    return self.auto() if self.auto is not None else next(iter(self.sources))

  def normalise(self, raw: np.ndarray) -> np.ndarray:
    """Raw inputs ``(..., *input_shape)`` -> float32, scaled and standardised per channel."""
    mean, std = (np.asarray(v, dtype=np.float32) for v in (self.mean, self.std))
    raw = np.asarray(raw)
    if raw.shape[-1] != mean.shape[0]:
      raise ValueError(f"{self.name}: inputs have {raw.shape[-1]} channels, expected {mean.shape[0]}.")
    return (raw.astype(np.float32) / np.float32(self.pixel_max) - mean) / std

  def value_range(self) -> tuple[float, float] | None:
    """(low, high) of normalised images, with a little slack; None for unbounded features."""
    if not self.images:
      return None
    mean, std = (np.asarray(v, np.float64) for v in (self.mean, self.std))
    low, high = float(np.min(-mean / std)), float(np.max((1 - mean) / std))
    slack = _RANGE_SLACK * (high - low)
    return low - slack, high + slack

  def query_spec(self) -> queries.QuerySpec:
    """The value checks of this dataset's queries (``jaxcoded.queries``)."""
    bounds = self.value_range()
    if bounds is None:
      return queries.QuerySpec(what=f"{self.name} inputs normalised as data.load returns them")
    return queries.QuerySpec(
        bounds[0], bounds[1], float_only=True,
        what=f"{self.name} images normalised as data.load returns them",
        remedy=f"Normalise raw pixels with data.normalise({self.name!r}, raw_pixels).",
    )


_SPECS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
  """Registers ``spec`` under its name (ValueError if taken, unless ``replace``)."""
  if spec.name in _SPECS and not replace:
    raise ValueError(f"A dataset named {spec.name!r} is already registered; pass replace=True.")
  _SPECS[spec.name] = spec
  return spec


def datasets() -> tuple[str, ...]:
  """The registered datasets' names, in registration order."""
  return tuple(_SPECS)


def dataset_spec(name: str) -> DatasetSpec:
  """The spec of dataset ``name``; ValueError naming the known ones otherwise."""
  if name not in _SPECS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(_SPECS)}.")
  return _SPECS[name]


def from_arrays(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int | None = None,
    replace: bool = False,
) -> DatasetSpec:
  """Registers a dataset given as in-memory arrays (feature vectors, say) and returns its spec.

  The inputs are standardised per feature (last axis) with the train split's
  mean and standard deviation, as the image datasets are per channel.

  Args:
    name: the dataset's name (``config.dataset``).
    train: (inputs ``(n, *input_shape)``, integer labels ``(n,)``).
    test: the same for the test split.
    num_classes: default: 1 + the largest label.
    replace: replace a dataset registered under the same name.

  Example:
    >>> import numpy as np
    >>> from jaxcoded import data
    >>> x, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    >>> spec = data.from_arrays("doc_example", (x[:30], y[:30]), (x[30:], y[30:]), replace=True)
    >>> data.load("doc_example", "test").images.shape, spec.num_classes
    ((10, 3), 2)
  """
  arrays = {}
  for split, (inputs, labels) in (("train", train), ("test", test)):
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if inputs.ndim < 2 or labels.shape != inputs.shape[:1]:
      raise ValueError(
          f"from_arrays({name!r}): {split} needs inputs (n, ...) and labels (n,), got shapes "
          f"{inputs.shape} and {labels.shape}."
      )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
      raise ValueError(f"from_arrays({name!r}): {split} labels must be integers >= 0.")
    if not np.all(np.isfinite(inputs)):
      raise ValueError(f"from_arrays({name!r}): {split} inputs hold NaN or inf.")
    arrays[split] = (inputs, labels)
  if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
    raise ValueError(f"from_arrays({name!r}): train and test inputs differ in shape.")
  classes = int(max(arrays[s][1].max() for s in arrays)) + 1
  if num_classes is None:
    num_classes = classes
  elif num_classes < classes:
    raise ValueError(f"from_arrays({name!r}): labels reach {classes - 1}, above num_classes - 1.")
  features = arrays["train"][0].reshape(-1, arrays["train"][0].shape[-1]).astype(np.float64)
  std = np.where(features.std(axis=0) > 0, features.std(axis=0), 1.0)
  return register_dataset(DatasetSpec(
      name=name,
      num_classes=int(num_classes),
      input_shape=tuple(int(d) for d in arrays["train"][0].shape[1:]),
      sources={"arrays": lambda split, data_dir: arrays[split]},
      mean=tuple(float(v) for v in features.mean(axis=0)),
      std=tuple(float(v) for v in std),
      images=False,
  ), replace=replace)


def _auto_tfds_or(fallback: str | None, name: str) -> Callable[[], str]:
  def pick() -> str:
    if tfds_available():
      return "tfds"
    if fallback is None:
      raise FileNotFoundError(_missing_message(name))
    return fallback
  return pick


def _tfds_loader(name: str) -> Loader:
  return lambda split, data_dir: _load_tfds(name, split, data_dir)


# The built-in image datasets. Per-channel (mean, std) of the train split after
# scaling pixels to [0, 1]: fashion_mnist and digits were computed here from the
# data (tests check them against the data); mnist and cifar10 are the standard
# published values.
register_dataset(DatasetSpec(
    "digits", 10, (8, 8, 1), {"sklearn": lambda split, data_dir: _load_digits(split)},
    mean=(0.30544660,), std=(0.37603684,), pixel_max=16.0,
))
register_dataset(DatasetSpec(
    "fashion_mnist", 10, (28, 28, 1),
    {"tfds": _tfds_loader("fashion_mnist"),
     "debian": lambda split, data_dir: _load_fashion_mnist_idx(
         split, data_dir or DEBIAN_FASHION_MNIST_DIR)},
    mean=(0.28604060,), std=(0.35302424,), pixel_max=255.0,
    auto=_auto_tfds_or("debian", "fashion_mnist"),
))
register_dataset(DatasetSpec(
    "mnist", 10, (28, 28, 1), {"tfds": _tfds_loader("mnist")},
    mean=(0.13066048,), std=(0.30810781,), pixel_max=255.0, auto=_auto_tfds_or(None, "mnist"),
))
register_dataset(DatasetSpec(
    "cifar10", 10, (32, 32, 3), {"tfds": _tfds_loader("cifar10")},
    mean=(0.49139968, 0.48215841, 0.44653091), std=(0.24703223, 0.24348513, 0.26158784),
    pixel_max=255.0, auto=_auto_tfds_or(None, "cifar10"),
))
