r"""Datasets: two-dimensional toy laws (generated from a key, so they vmap over seeds).

* ``gaussian_ring``: an equal mixture of ``num_modes`` isotropic Gaussians of standard deviation
  ``std`` centred at :math:`c_j = R(\cos 2\pi j/m, \sin 2\pi j/m)`.
* ``gaussian_grid``: an equal mixture of Gaussians centred on a ``side x side`` square grid of
  spacing ``spacing`` centred at the origin.
* ``two_moons``: the two interleaved half circles of scikit-learn's ``make_moons`` (upper moon
  :math:`(\cos t, \sin t)`, lower moon :math:`(1 - \cos t, 1/2 - \sin t)`, :math:`t \sim U[0, \pi]`)
  plus isotropic Gaussian noise.

Image datasets (:data:`IMAGE_DATASETS`), read from disk into host (NumPy) arrays, never downloaded:

* ``load_digits``: the 1797 8x8 handwritten digits scikit-learn ships, :math:`x = v / 16 \in [0, 1]`
  for the integer intensities :math:`v \in \{0..16\}`, flattened to 64 features (row-major).
* ``load_cifar10``: CIFAR-10 from the standard python batches in a local folder. Each row of a batch
  stores the image channel-major, ``R(1024) G(1024) B(1024)``, each channel row-major over
  ``32 x 32``; the loader returns :math:`x_{n,h,w,c} = \mathrm{data}[n, 1024 c + 32 h + w] / 255`
  (NHWC).
"""

from __future__ import annotations

import math
import os
import pickle
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from selfconsume import _checks
from selfconsume.types import Array, PRNGKey

__all__ = ["gaussian_ring", "gaussian_grid", "two_moons", "moon_of", "ring_centers", "DATASETS", "Dataset",
           "load_digits", "load_cifar10", "IMAGE_DATASETS", "IMAGE_SHAPES", "CIFAR10_CLASSES",
           "DataNotFoundError"]


def ring_centers(num_modes: int = 8, radius: float = 1.0) -> Array:
    """``(num_modes, 2)`` centres of the ring's modes, counter-clockwise from ``(radius, 0)``."""
    num_modes = _checks.static_int("num_modes", num_modes, minimum=1)
    angles = 2 * math.pi * jnp.arange(num_modes) / num_modes
    return radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)


def _mixture(key: PRNGKey, n: int, centers: Array, std: float) -> tuple[Array, Array]:
    key_mode, key_noise = jax.random.split(key)
    modes = jax.random.randint(key_mode, (n,), 0, centers.shape[0])
    x = centers[modes] + std * jax.random.normal(key_noise, (n, 2), centers.dtype)
    return x, modes


def gaussian_ring(key: PRNGKey, n: int, *, num_modes: int = 8, radius: float = 1.0,
                  std: float = 0.05) -> tuple[Array, Array]:
    """Samples the ring of Gaussians.

    Args:
        key: PRNG key. n: static number of points.
        num_modes: number of modes. radius: ring radius. std: per-mode standard deviation.

    Returns:
        ``(x, centers)``: ``(n, 2)`` points and the ``(num_modes, 2)`` mode centres.
    """
    n = _checks.static_int("n", n, minimum=1)
    _checks.scalar("std", std, minimum=0.0)
    centers = ring_centers(num_modes, radius)
    return _mixture(key, n, centers, std)[0], centers


def gaussian_grid(key: PRNGKey, n: int, *, side: int = 5, spacing: float = 1.0,
                  std: float = 0.05) -> tuple[Array, Array]:
    """Samples the square grid of Gaussians.

    Returns:
        ``(x, centers)``: ``(n, 2)`` points and the ``(side**2, 2)`` mode centres.
    """
    n = _checks.static_int("n", n, minimum=1)
    side = _checks.static_int("side", side, minimum=1)
    _checks.scalar("std", std, minimum=0.0)
    ticks = spacing * (jnp.arange(side) - (side - 1) / 2)
    gx, gy = jnp.meshgrid(ticks, ticks, indexing="ij")
    centers = jnp.stack([gx.reshape(-1), gy.reshape(-1)], axis=1)
    return _mixture(key, n, centers, std)[0], centers


def two_moons(key: PRNGKey, n: int, *, noise: float = 0.05) -> tuple[Array, Array]:
    """Samples the two moons.

    Returns:
        ``(x, moon)``: ``(n, 2)`` points and the ``(n,)`` int32 moon of each (0 upper, 1 lower).
    """
    n = _checks.static_int("n", n, minimum=1)
    _checks.scalar("noise", noise, minimum=0.0)
    key_moon, key_t, key_noise = jax.random.split(key, 3)
    moon = jax.random.bernoulli(key_moon, 0.5, (n,)).astype(jnp.int32)
    t = jax.random.uniform(key_t, (n,), maxval=math.pi)
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    x = jnp.where(moon[:, None] == 1, lower, upper)
    return x + noise * jax.random.normal(key_noise, (n, 2)), moon


def moon_of(x: Array) -> Array:
    r"""The moon a point belongs to: 0 (upper) or 1 (lower), by the nearer of the two arcs.

    The distance to the upper arc is :math:`|\,\|x\| - 1|` (or to its nearer end when
    :math:`x_2 < 0`), to the lower arc :math:`|\,\|x - (1, 1/2)\| - 1|` (or to its nearer end when
    :math:`x_2 > 1/2`).

    Args:
        x: ``(n, 2)`` points.

    Returns:
        ``(n,)`` int32.
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"`x` must have shape (n, 2); got shape {x.shape}.")

    def arc_distance(y, below):  # y relative to the arc's centre; `below` flips the half circle
        on_half = jnp.where(below, y[:, 1] <= 0, y[:, 1] >= 0)
        ring = jnp.abs(jnp.linalg.norm(y, axis=1) - 1.0)
        tip = jnp.array([[1.0, 0.0]])
        ends = jnp.minimum(jnp.linalg.norm(y - tip, axis=1), jnp.linalg.norm(y + tip, axis=1))
        return jnp.where(on_half, ring, ends)

    upper = arc_distance(x, False)
    lower = arc_distance(x - jnp.array([[1.0, 0.5]]), True)
    return (lower < upper).astype(jnp.int32)


DATASETS = _checks.Registry("dataset", {"gaussian_ring": gaussian_ring,
                                         "gaussian_grid": gaussian_grid, "two_moons": two_moons})
"""Registry: dataset name -> generator ``(key, n, **options)`` (an unknown name raises a
``ValueError`` that is also a ``KeyError``)."""


# ------------------------------------------------------------------------------------------------
# Image datasets read from disk.


class Dataset(NamedTuple):
    """A labelled dataset held in host memory (a pytree: both fields are leaves).

    Attributes:
        x: ``(N, ...)`` float32 NumPy array with values in ``[0, 1]``.
        labels: ``(N,)`` int32 NumPy array of class indices.
    """

    x: np.ndarray
    labels: np.ndarray


_EXTRA_HINT = 'pip install "selfconsume[experiments]"'


def load_digits() -> Dataset:
    """The 8x8 handwritten digits shipped with scikit-learn (no download).

    Returns:
        :class:`Dataset` with ``x`` float32 ``(1797, 64)`` in ``[0, 1]`` (the intensities 0..16
        divided by 16, each image flattened row-major) and ``labels`` int32 ``(1797,)`` in 0..9.

    Raises:
        ImportError: if scikit-learn (an optional dependency) is not installed.
    """
    try:
        from sklearn import datasets as sk_datasets
    except ImportError as err:
        raise ImportError(
            "load_digits needs scikit-learn, an optional dependency of selfconsume; install it "
            f"with `{_EXTRA_HINT}` (or `pip install scikit-learn`).") from err
    bunch = sk_datasets.load_digits()
    x = np.asarray(bunch.data, np.float32) / np.float32(16.0)
    return Dataset(x=x, labels=np.asarray(bunch.target, np.int32))


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
"""CIFAR-10 class names, indexed by label (0 is airplane)."""

class DataNotFoundError(FileNotFoundError, ValueError):
    """A dataset folder or file that is not there: a ``FileNotFoundError`` (it is a missing file)
    and a ``ValueError`` (it is a bad ``path`` argument), with a message that names the path and
    the expected layout."""


_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR_PIXELS = 3 * 32 * 32


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch: dicts, lists, bytes and NumPy arrays only, no other global.

    The standard batches are pickles; a pickle can run arbitrary code when loaded, so only the
    globals NumPy needs to rebuild an array are allowed.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # protocol <= 2 bytes
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # >= 5
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _cifar_expected(split: str) -> str:
    return (f"the CIFAR-10 python batches {', '.join(_CIFAR_FILES[split])} (split={split!r}), "
            f"either directly in the folder or in its subfolder {_CIFAR_FOLDER}/ (the layout of "
            "the extracted cifar-10-python.tar.gz)")


def _cifar_folder(path, split: str) -> str:
    """The folder holding the batch files: ``path`` itself or ``path/cifar-10-batches-py``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataNotFoundError(
            f"`path` {path!r} is not an existing folder; load_cifar10 never downloads, it expects "
            f"{_cifar_expected(split)}.")
    nested = os.path.join(path, _CIFAR_FOLDER)
    if os.path.isdir(nested):
        return nested
    first = os.path.join(path, _CIFAR_FILES[split][0])
    if not os.path.exists(first):
        hint = ""
        if os.path.exists(os.path.join(path, "cifar-10-python.tar.gz")):
            hint = " The folder holds cifar-10-python.tar.gz: extract it first (tar -xzf)."
        raise DataNotFoundError(
            f"`path` {path!r} holds neither {_CIFAR_FILES[split][0]} nor a {_CIFAR_FOLDER}/ "
            f"subfolder; expected {_cifar_expected(split)}.{hint}")
    return path


def _read_cifar_batch(file: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads and checks one batch file; returns its ``(m, 3072)`` uint8 rows and int32 labels."""
    expected = _cifar_expected(split)
    if not os.path.isfile(file):
        raise DataNotFoundError(f"missing CIFAR-10 batch file {file!r}; expected {expected}.")

    def malformed(what: str) -> ValueError:
        return ValueError(
            f"{file!r} is not a valid CIFAR-10 python batch: {what}. Expected a pickled dict with "
            f"b'data' (uint8, shape (m, {_CIFAR_PIXELS})) and b'labels' (m ints in 0..9), as in "
            f"{expected}.")

    try:
        with open(file, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, UnicodeDecodeError) as err:
        raise malformed(f"it could not be unpickled ({type(err).__name__}: {err})") from err
    if not isinstance(batch, dict):
        raise malformed(f"it holds a {type(batch).__name__}, not a dict")
    missing = [k for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise malformed(f"keys {missing} are missing (found {sorted(map(repr, batch))})")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
            data.shape[1] != _CIFAR_PIXELS):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise malformed(f"b'data' has shape {shape} and dtype {dtype}")
    try:
        labels = np.asarray(batch[b"labels"])
    except (TypeError, ValueError) as err:
        raise malformed(f"b'labels' is not a list of ints ({err})") from err
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise malformed(f"b'labels' has shape {labels.shape} and dtype {labels.dtype} for "
                        f"{data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise malformed(f"b'labels' has values in [{labels.min()}, {labels.max()}], outside 0..9")
    return data, labels.astype(np.int32)


def load_cifar10(path: str | os.PathLike, *, split: str = "train",
                 max_examples: int | None = None) -> Dataset:
    """CIFAR-10 from the standard python batches in a local folder (never downloads).

    Args:
        path: the folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (the
            extracted ``cifar-10-batches-py/``), or a folder containing ``cifar-10-batches-py/``.
        split: ``"train"`` (the five data batches, in order) or ``"test"`` (``test_batch``).
        max_examples: keep only the first ``max_examples`` images of the split (batches after
            the one that reaches it are not read). ``None`` keeps all.

    Returns:
        :class:`Dataset` with ``x`` float32 ``(N, 32, 32, 3)`` (NHWC) in ``[0, 1]`` and ``labels``
        int32 ``(N,)`` in 0..9 (:data:`CIFAR10_CLASSES` names them); N = 50000 (train) or 10000
        (test) for the full dataset.

    Raises:
        DataNotFoundError: a ``FileNotFoundError`` and ``ValueError``, if the folder or a batch
            file is missing (the message names the path
            and the expected files).
        ValueError: if ``split`` or ``max_examples`` is invalid, or a batch file is malformed (not
            a pickle, wrong keys, wrong shapes or dtype, labels outside 0..9).
    """
    if split not in _CIFAR_FILES:
        raise ValueError(f"`split` must be one of {sorted(_CIFAR_FILES)}; got {split!r}.")
    if max_examples is not None:
        max_examples = _checks.static_int("max_examples", max_examples, minimum=1)
    folder = _cifar_folder(path, split)
    rows, labels, count = [], [], 0
    for name in _CIFAR_FILES[split]:
        data, lab = _read_cifar_batch(os.path.join(folder, name), split)
        rows.append(data)
        labels.append(lab)
        count += data.shape[0]
        if max_examples is not None and count >= max_examples:
            break
    data = np.concatenate(rows)[:max_examples]
    labels = np.concatenate(labels)[:max_examples]
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32, order="C")
    x /= np.float32(255.0)
    return Dataset(x=x, labels=labels)


IMAGE_DATASETS = _checks.Registry("image dataset", {"digits": load_digits,
                                                     "cifar10": load_cifar10})
"""Registry: image dataset name -> loader returning a :class:`Dataset` (``cifar10`` takes a path).

Kept apart from :data:`DATASETS`, whose generators take ``(key, n)``: these read fixed datasets."""

IMAGE_SHAPES = {"digits": (8, 8), "cifar10": (32, 32, 3)}
"""The shape of one image of each dataset of :data:`IMAGE_DATASETS` (NHWC for CIFAR-10)."""
