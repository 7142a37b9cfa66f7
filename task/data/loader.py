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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from task.images import IMAGE_SHAPE, NUM_CLASSES, ImageSet
from task.paths import cache_root

_SPLIT_PREFIXES = ("train", "t10k")
_UNSIGNED_BYTE = 0x08
_MAX_DEFLATE_RATIO = 1032
"""Deflate expands data at most 1032-fold: a gzip or zip member of n bytes holds at most 1032 n."""
_CACHE_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the data set's IDX files was found; the message lists every path tried."""


class IdxFormatError(ValueError):
    """An IDX file is unreadable or malformed (bad magic number, sizes, compression or labels)."""


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
        _tried(folder / file_name)
        for folder in _candidate_folders(source, base)
        for prefix in _SPLIT_PREFIXES
        for file_name in _file_names(prefix)
    ]
    return "\n".join(
        [f"{source.title} IDX files not found. Tried:", *tried,
         f"Fix: {source.install_hint}, or pass root=<folder with the files>, "
         "or download=True with root=<writable folder>."]
    )


def _tried(path: Path) -> str:
    """One line of the not-found message: ``path[.gz]``, and why either one, if present, is unusable."""
    unusable = [candidate for candidate in (path.with_name(path.name + ".gz"), path)
                if os.path.lexists(candidate) and not candidate.is_file()]
    return f"  {path}[.gz]" + "".join(f" ({candidate} {why_not_a_file(candidate)})" for candidate in unusable)


def why_not_a_file(path: Path) -> str:
    """Why ``path`` is no regular file: it is missing, a directory, a dangling or looping symlink, or another kind."""
    if path.is_symlink() and not path.exists():
        return "is a dangling or looping symlink"
    if path.is_dir():
        return "is a directory"
    return "is not a regular file" if path.exists() else "is missing"


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
    """Decode an unsigned-byte IDX file of ``ndim`` dimensions, validating its header.

    The size the header declares is checked against the file before the payload is read.
    """
    header_size = 4 + 4 * ndim
    try:
        with _open_idx(path) as stream:
            shape = _read_header(path, stream.read(header_size), ndim)
            declared = math.prod(shape)
            _check_room(path, shape, header_size)
            payload = stream.read(declared + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{path}: cannot decompress ({exc})") from exc
    except OSError as exc:
        raise IdxFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(payload) != declared:
        found = len(payload) if len(payload) < declared else f"more than {declared}"
        raise IdxFormatError(f"{path}: header declares shape {shape} ({declared} bytes), found {found}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _open_idx(path: Path) -> IO[bytes]:
    """``path`` opened for reading, decompressed on the fly when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_header(path: Path, header: bytes, ndim: int) -> tuple[int, ...]:
    """The shape an ``ndim``-D IDX header declares, after checking its length and magic number."""
    expected_magic = (_UNSIGNED_BYTE << 8) | ndim
    if len(header) < 4 + 4 * ndim:
        raise IdxFormatError(f"{path}: {len(header)} bytes is too short for a {ndim}-D IDX header")
    (magic,) = struct.unpack(">I", header[:4])
    if magic != expected_magic:
        raise IdxFormatError(f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    return struct.unpack(f">{ndim}I", header[4:])


def _check_room(path: Path, shape: tuple[int, ...], header_size: int) -> None:
    """Refuse a header declaring more bytes than the file holds (raw) or can expand to (gzip)."""
    declared, file_size = math.prod(shape), path.stat().st_size
    if path.suffix != ".gz" and header_size + declared != file_size:
        raise IdxFormatError(
            f"{path}: header declares shape {shape} ({declared} bytes), found {file_size - header_size}")
    if header_size + declared > _MAX_DEFLATE_RATIO * file_size:
        raise IdxFormatError(
            f"{path}: header declares shape {shape} ({declared} bytes), more than its {file_size} bytes can hold")


def read_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the ``.npz`` archive ``path``, read without unpickling anything.

    Each array's declared size is checked against its member, and the member's against
    what the archive can hold, before the array is allocated.

    Raises:
        ValueError: the archive is unreadable or lacks an array, or an array is malformed,
            of Python objects, encrypted or compressed other than by deflate; the message
            says which, not ``path``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            archive_size = path.stat().st_size
            return {name: _read_npy_member(archive, name, archive_size) for name in names}
    except (OSError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error, struct.error) as exc:
        raise ValueError(f"not a readable .npz archive ({exc})") from None


def _read_npy_member(archive: zipfile.ZipFile, name: str, archive_size: int) -> np.ndarray:
    """The array ``<name>.npy`` of ``archive``, its sizes checked before its data is allocated."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise ValueError(f"no array {name!r}") from None
    if info.flag_bits & 0x1:
        raise ValueError(f"array {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"array {name!r} is compressed with zip method {info.compress_type}, not deflate")
    expansion = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
    if info.file_size > expansion * min(info.compress_size, archive_size):
        raise ValueError(f"array {name!r} declares {info.file_size} bytes, more than its member can hold")
    with archive.open(info) as member:
        shape, dtype = _read_npy_header(member, name)
        declared, held = math.prod(shape) * dtype.itemsize, info.file_size - member.tell()
        if min(shape, default=0) < 0 or declared != held:
            raise ValueError(
                f"array {name!r} declares shape {shape} of {dtype} ({declared} bytes), its member holds {held}")
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_npy_header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a ``.npy`` member's header declares; Python objects are refused."""
    try:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = _NPY_HEADER_READERS[version](member)
    except ValueError as err:
        raise ValueError(f"array {name!r}: {err}") from None
    if dtype.hasobject:
        raise ValueError(f"array {name!r} holds Python objects, which are never unpickled")
    return shape, dtype


def _read_cache(path: Path) -> tuple[ImageSet, ImageSet] | None:
    """The cached splits, or ``None`` when the cache is missing or does not hold two valid splits."""
    if not path.is_file():
        return None
    try:
        arrays = read_npz(path, _CACHE_ARRAYS)
        train, test = (ImageSet(arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in ("train", "test"))
    except ValueError:
        return None
    return (train, test) if _labels_valid(train) and _labels_valid(test) else None


def _labels_valid(split: ImageSet) -> bool:
    """Whether ``split`` has images and every label lies in ``[0, NUM_CLASSES)``."""
    return len(split) > 0 and split.labels.min() >= 0 and split.labels.max() < NUM_CLASSES


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
