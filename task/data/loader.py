"""Find, decode and cache the (Fashion-)MNIST IDX files.

The IDX files are decoded once with ``gzip`` and ``numpy`` and the arrays are cached
as ``<cache_dir>/<name>.npz``; later calls read only that file. A found cache wins
over ``root``: the data set is the same wherever its files live.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from task.images import IMAGE_SHAPE, NUM_CLASSES, ImageSet
from task.paths import cache_root

_SPLIT_PREFIXES = ("train", "t10k")
_UNSIGNED_BYTE = 0x08


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the data set's IDX files was found; the message lists every path tried."""


class IdxFormatError(ValueError):
    """An IDX file is malformed (bad magic number, sizes, or compression)."""


@dataclass(frozen=True)
class _Source:
    """Where a named data set lives by default and how to obtain it."""

    title: str
    default_root: Path
    torchvision_name: str
    install_hint: str


_SOURCES = {
    "fashion-mnist": _Source(
        "Fashion-MNIST",
        Path("/usr/share/datasets/fashion-mnist"),
        "FashionMNIST",
        "sudo apt-get install dataset-fashion-mnist",
    ),
    "mnist": _Source(
        "MNIST",
        Path("/usr/share/datasets/mnist"),
        "MNIST",
        "copy the MNIST IDX files to /usr/share/datasets/mnist/",
    ),
}


def load_dataset(
    name: str = "fashion-mnist",
    root: str | None = None,
    download: bool = False,
    cache_dir: str | None = None,
) -> tuple[ImageSet, ImageSet]:
    """Return the ``(train, test)`` splits of ``name`` ("fashion-mnist" or "mnist").

    Search order: the ``.npz`` cache, then ``<root>/`` and ``<root>/<FashionMNIST|MNIST>/raw/``
    for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (gzipped or not); ``root``
    defaults to ``/usr/share/datasets/<name>/``. With ``download=True`` (which needs
    ``root``) a missing copy is fetched by torchvision into ``root``.
    ``cache_dir`` defaults to ``data/`` in the cache root (:func:`task.paths.cache_root`).

    Raises:
        ValueError: unknown ``name``, or ``download=True`` without ``root``.
        DatasetNotFoundError: no copy found (the message lists the paths tried).
        IdxFormatError: a found IDX file is malformed.
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(_SOURCES)}")
    if download and root is None:
        raise ValueError("download=True needs root=<a writable folder> to download into")
    source = _SOURCES[name]
    cache_file = _cache_root(cache_dir) / f"{name}.npz"
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached
    base = source.default_root if root is None else Path(root)
    files = _find_files(source, base)
    if files is None and download:
        _download(source, base)
        files = _find_files(source, base)
    if files is None:
        raise DatasetNotFoundError(_not_found_message(source, base))
    train, test = (_read_split(files[prefix]) for prefix in _SPLIT_PREFIXES)
    _write_cache(cache_file, train, test)
    return train, test


def _cache_root(cache_dir: str | None) -> Path:
    """The cache folder: the argument, else ``data/`` under :func:`task.paths.cache_root`."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "data"


def _file_names(prefix: str) -> tuple[str, str]:
    """The uncompressed IDX file names ``(images, labels)`` of one split."""
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _candidate_folders(source: _Source, base: Path) -> tuple[Path, Path]:
    """The folders searched, in order: ``base`` and the torchvision layout below it."""
    return base, base / source.torchvision_name / "raw"


def _find_files(source: _Source, base: Path) -> dict[str, tuple[Path, Path]] | None:
    """The first candidate folder holding all four IDX files, as ``{prefix: (images, labels)}``."""
    for folder in _candidate_folders(source, base):
        found: dict[str, tuple[Path, Path]] = {}
        for prefix in _SPLIT_PREFIXES:
            paths = [_existing(folder / file_name) for file_name in _file_names(prefix)]
            if None in paths:
                break
            found[prefix] = (paths[0], paths[1])
        else:
            return found
    return None


def _existing(path: Path) -> Path | None:
    """``path.gz`` if it exists, else ``path`` if it exists, else ``None``."""
    for candidate in (path.with_name(path.name + ".gz"), path):
        if candidate.is_file():
            return candidate
    return None


def _not_found_message(source: _Source, base: Path) -> str:
    """Name every path tried and how to fix it."""
    tried = [
        f"  {folder / file_name}[.gz]"
        for folder in _candidate_folders(source, base)
        for prefix in _SPLIT_PREFIXES
        for file_name in _file_names(prefix)
    ]
    return "\n".join(
        [f"{source.title} IDX files not found. Tried:", *tried,
         f"Fix: {source.install_hint}, or pass root=<folder with the files>, "
         "or download=True with root=<writable folder>."]
    )


def _download(source: _Source, base: Path) -> None:
    """Fetch both splits with torchvision into ``base/<TorchvisionName>/raw/``."""
    from torchvision import datasets  # imported lazily: only needed for downloads

    dataset_class = getattr(datasets, source.torchvision_name)
    for train in (True, False):
        dataset_class(root=str(base), train=train, download=True)


def _read_split(paths: tuple[Path, Path]) -> ImageSet:
    """Decode one split's images and labels and check they agree."""
    images_path, labels_path = paths
    images = _read_idx(images_path, ndim=3)
    labels = _read_idx(labels_path, ndim=1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise IdxFormatError(f"{images_path}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if labels.shape[0] != images.shape[0]:
        raise IdxFormatError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise IdxFormatError(f"{labels_path}: label {labels.max()} outside [0, {NUM_CLASSES})")
    return ImageSet(images, labels.astype(np.int64))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Decode an unsigned-byte IDX file of ``ndim`` dimensions, validating its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError) as exc:
        raise IdxFormatError(f"{path}: cannot decompress ({exc})") from exc
    header_size = 4 + 4 * ndim
    expected_magic = (_UNSIGNED_BYTE << 8) | ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"{path}: {len(raw)} bytes is too short for a {ndim}-D IDX header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise IdxFormatError(f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    payload = len(raw) - header_size
    if payload != math.prod(shape):
        raise IdxFormatError(f"{path}: header declares shape {shape} ({math.prod(shape)} bytes), found {payload}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_cache(path: Path) -> tuple[ImageSet, ImageSet] | None:
    """The cached splits, or ``None`` when the cache is missing or unreadable."""
    try:
        with np.load(path) as arrays:
            return (
                ImageSet(arrays["train_images"], arrays["train_labels"]),
                ImageSet(arrays["test_images"], arrays["test_labels"]),
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, train: ImageSet, test: ImageSet) -> None:
    """Write the splits atomically (temporary file, then rename) so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
        np.savez(
            handle,
            train_images=train.images, train_labels=train.labels,
            test_images=test.images, test_labels=test.labels,
        )
    os.replace(handle.name, path)
