"""Hostile data files: every corrupted IDX file, silo ``.npz`` file and decoded cache gets
the reader's own error naming the file and what is wrong (a corrupted cache is re-decoded
instead) -- never a raw numpy/zipfile/gzip/OS error, an unpickling, a hang or a huge allocation."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import signal
import struct
import sys
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from task.data import (
    DatasetNotFoundError,
    IdxFormatError,
    ImageSet,
    OrgData,
    SiloFolderError,
    export_silos,
    load_dataset,
    read_silo_folder,
)

ROWS = 6
"""Images per split of the tiny valid data the corruptions start from."""
PEAK_LIMIT = 32 * 2**20
"""The most memory (bytes, as tracemalloc counts it) reading one hostile file may take."""
BOMB_MIB = 48
"""Decompressed size of the compression bombs: larger than PEAK_LIMIT."""
HANG_LIMIT_S = 20

IMAGES = np.random.default_rng(0).integers(0, 256, (ROWS, 28, 28), dtype=np.uint8)
LABELS = (np.arange(ROWS) % 10).astype(np.uint8)
GARBAGE = np.random.default_rng(1).bytes(4000)
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
DETONATED: list[str] = []
"""Where an unpickled :class:`_Detonator` reports; it must stay empty."""

Corruption = Callable[[Path], None]


def _detonate(where: str) -> None:
    DETONATED.append(where)


class _Detonator:
    """An object whose unpickling is recorded: a reader that unpickles it fails the test."""

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _detonate, ("unpickled",)


@contextmanager
def _guarded() -> Iterator[list[int]]:
    """Fail a read that hangs; yield a list that receives the read's peak traced memory."""

    def _hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"the read hung for {HANG_LIMIT_S} s")

    peak: list[int] = []
    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(HANG_LIMIT_S)
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _assert_refused(error: type[Exception], path: Path, fragment: str, read: Callable[[], object]) -> None:
    """``read()`` raises exactly ``error``, naming ``path`` and matching ``fragment``, within the memory limit."""
    with _guarded() as peak:
        try:
            read()
        except Exception as exc:  # noqa: BLE001 -- the type is the assertion
            raised = exc
        else:
            raised = None
    assert raised is not None, f"{path.name}: no error raised"
    assert type(raised) is error, f"raw {type(raised).__module__}.{type(raised).__qualname__}: {raised}"
    message = str(raised)
    assert str(path) in message, message
    assert re.search(fragment, message), message
    assert peak[0] < PEAK_LIMIT, f"peak {peak[0] / 2**20:.0f} MiB"
    assert not DETONATED, "a pickle was loaded"


def _skip_if_readable(path: Path) -> None:
    if os.access(path, os.R_OK):
        pytest.skip("running as root: chmod 000 leaves the file readable")


# --- IDX files ------------------------------------------------------------------------


def _idx(array: np.ndarray, magic: int | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    """An IDX file of ``array``'s bytes; ``magic`` and ``shape`` override its header."""
    shape = array.shape if shape is None else shape
    header = struct.pack(">I", 0x0800 | array.ndim if magic is None else magic)
    return header + struct.pack(f">{len(shape)}I", *shape) + array.astype(np.uint8).tobytes()


def _put(path: Path, content: bytes) -> None:
    """Write an IDX file's content, gzipped when ``path`` ends in ``.gz``."""
    path.write_bytes(gzip.compress(content, mtime=0) if path.suffix == ".gz" else content)


def _write_idx_copy(folder: Path, compress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        _put(folder / (images + suffix), _idx(IMAGES))
        _put(folder / (labels + suffix), _idx(LABELS))


def _content(content: bytes) -> Corruption:
    """Replace the file's (decompressed) content."""
    return lambda path: _put(path, content)


def _disk(transform: Callable[[bytes], bytes]) -> Corruption:
    """Transform the file's bytes as stored."""
    return lambda path: path.write_bytes(transform(path.read_bytes()))


def _flip(offset: int, mask: int = 0xFF) -> Callable[[bytes], bytes]:
    def transform(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[offset] ^= mask
        return bytes(changed)

    return transform


def _bad_deflate(data: bytes) -> bytes:
    """A gzip file whose deflate stream opens with a block of the reserved type 3."""
    return data[:10] + b"\xff" + data[11:]


def _gzip_bomb(path: Path) -> None:
    """A valid labels header followed by ``BOMB_MIB`` MiB of zeros, in a small gzip file."""
    with gzip.open(path, "wb") as stream:
        stream.write(_idx(LABELS))
        for _ in range(BOMB_MIB):
            stream.write(bytes(2**20))


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _symlink_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


def _dangling_symlink(path: Path) -> None:
    path.unlink()
    path.symlink_to("nowhere")


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _unreadable(path: Path) -> None:
    path.chmod(0)
    _skip_if_readable(path)


def _labels(*changes: tuple[int, int]) -> np.ndarray:
    labels = LABELS.copy()
    for row, value in changes:
        labels[row] = value
    return labels


_CONTENT = _idx(IMAGES)
IDX_CASES = [
    # (id, corrupted file, gzipped copy, corruption, error, what the message says)
    ("empty-raw", TRAIN_IMAGES, False, _content(b""), IdxFormatError, "too short"),
    ("empty-gz-file", TRAIN_LABELS, True, _disk(lambda _: b""), IdxFormatError, "too short|cannot decompress"),
    ("empty-gz-content", TEST_IMAGES, True, _content(b""), IdxFormatError, "too short"),
    ("truncated-in-magic", TEST_LABELS, False, _disk(lambda d: d[:2]), IdxFormatError, "too short"),
    ("truncated-in-dims", TRAIN_IMAGES, False, _disk(lambda d: d[:9]), IdxFormatError, "too short"),
    ("truncated-in-payload-raw", TRAIN_IMAGES, False, _disk(lambda d: d[:-100]), IdxFormatError,
     r"header declares shape \(6, 28, 28\)"),
    ("truncated-in-payload-gz", TEST_IMAGES, True, _content(_CONTENT[:-1]), IdxFormatError,
     r"header declares shape \(6, 28, 28\)"),
    ("gz-truncated-in-gzip-header", TRAIN_IMAGES, True, _disk(lambda d: d[:5]), IdxFormatError, "cannot decompress"),
    ("gz-truncated-in-deflate", TRAIN_IMAGES, True, _disk(lambda d: d[: len(d) // 2]), IdxFormatError,
     "cannot decompress"),
    ("gz-truncated-trailer", TEST_LABELS, True, _disk(lambda d: d[:-4]), IdxFormatError, "cannot decompress"),
    ("gz-bad-deflate-block", TRAIN_LABELS, True, _disk(_bad_deflate), IdxFormatError, "cannot decompress"),
    ("gz-bad-crc", TEST_IMAGES, True, _disk(_flip(-6)), IdxFormatError, "cannot decompress"),
    ("gz-not-gzip", TRAIN_IMAGES, True, _disk(lambda _: _CONTENT), IdxFormatError, "cannot decompress"),
    ("gz-of-garbage", TRAIN_IMAGES, True, _content(GARBAGE[:4000]), IdxFormatError, "magic number"),
    ("garbage-raw", TEST_LABELS, False, _content(b"\x00\x00" + GARBAGE[:100]), IdxFormatError, "magic number"),
    ("wrong-magic", TRAIN_LABELS, False, _content(_idx(LABELS, magic=0x12345678)), IdxFormatError,
     "magic number 0x12345678, expected 0x00000801"),
    ("float-dtype-code", TRAIN_IMAGES, True, _content(_idx(IMAGES, magic=0x0D03)), IdxFormatError,
     "magic number 0x00000d03, expected 0x00000803"),
    ("labels-with-3-dims", TRAIN_LABELS, False, _content(_idx(IMAGES)), IdxFormatError,
     "magic number 0x00000803, expected 0x00000801"),
    ("images-with-1-dim", TEST_IMAGES, True, _content(_idx(np.arange(40))), IdxFormatError,
     "magic number 0x00000801, expected 0x00000803"),
    ("huge-dims-raw", TRAIN_IMAGES, False, _content(_idx(IMAGES, shape=(2**31, 28, 28))), IdxFormatError,
     r"header declares shape \(2147483648, 28, 28\)"),
    ("huge-dims-gz", TEST_IMAGES, True, _content(_idx(IMAGES, shape=(2**31, 28, 28))), IdxFormatError,
     r"header declares shape \(2147483648, 28, 28\)"),
    ("max-dims-gz", TRAIN_LABELS, True, _content(_idx(LABELS, shape=(2**32 - 1,))), IdxFormatError,
     r"header declares shape \(4294967295,\)"),
    ("trailing-bytes-raw", TEST_LABELS, False, _content(_idx(LABELS) + b"\x00"), IdxFormatError,
     r"header declares shape \(6,\)"),
    ("gz-bomb", TRAIN_LABELS, True, _gzip_bomb, IdxFormatError, r"header declares shape \(6,\)"),
    ("images-not-28x28", TRAIN_IMAGES, False, _content(_idx(IMAGES, shape=(ROWS, 14, 56))), IdxFormatError,
     r"images are \(14, 56\), expected \(28, 28\)"),
    ("fewer-labels", TEST_LABELS, True, _content(_idx(LABELS[:-1])), IdxFormatError, "5 labels for 6 images"),
    ("label-10", TRAIN_LABELS, False, _content(_idx(_labels((2, 10)))), IdxFormatError, "label 10 outside"),
    ("label-255", TEST_LABELS, True, _content(_idx(_labels((0, 255)))), IdxFormatError, "label 255 outside"),
    ("directory", TRAIN_IMAGES, True, _directory, DatasetNotFoundError, "is a directory"),
    ("symlink-loop", TEST_LABELS, False, _symlink_loop, DatasetNotFoundError, "symlink"),
    ("dangling-symlink", TRAIN_LABELS, True, _dangling_symlink, DatasetNotFoundError, "symlink"),
    ("fifo", TEST_IMAGES, False, _fifo, DatasetNotFoundError, "not a regular file"),
    ("unreadable", TRAIN_IMAGES, True, _unreadable, IdxFormatError, "cannot read"),
]


@pytest.mark.parametrize(("target", "compress", "corrupt", "error", "fragment"),
                         [pytest.param(*case[1:], id=case[0]) for case in IDX_CASES])
def test_corrupted_idx_file_gets_one_error_naming_it(
    tmp_path: Path, target: str, compress: bool, corrupt: Corruption, error: type[Exception], fragment: str
) -> None:
    root = tmp_path / "root"
    _write_idx_copy(root, compress)
    path = root / (target + (".gz" if compress else ""))
    corrupt(path)
    _assert_refused(error, path, fragment, lambda: load_dataset(root=str(root), cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "cache" / "fashion-mnist.npz").exists()


def _fuzzed_offsets(size: int, skipped: range) -> list[int]:
    """Every offset of a file of ``size`` bytes but the ``skipped`` middle of its payload (a checksum's job)."""
    return [offset for offset in range(size) if offset not in skipped]


@pytest.mark.parametrize("target", [TRAIN_LABELS, TEST_IMAGES])
def test_every_byte_flip_of_a_gzip_idx_file_is_read_or_refused(tmp_path: Path, target: str) -> None:
    root, cache = tmp_path / "root", tmp_path / "cache"
    _write_idx_copy(root, compress=True)
    path = root / (target + ".gz")
    original = path.read_bytes()
    for offset in _fuzzed_offsets(len(original), range(96, len(original) - 16)):
        for mask in (0x01, 0xFF):
            path.write_bytes(_flip(offset, mask)(original))
            with _guarded():
                try:
                    load_dataset(root=str(root), cache_dir=str(cache))
                except IdxFormatError as err:
                    assert str(path) in str(err)
            (cache / "fashion-mnist.npz").unlink(missing_ok=True)


# --- .npz files: silo splits and the decoded cache -------------------------------------


PREFIXES = ("",)
"""Prefixes of the array names a corruption writes: none for a silo file, a split's for the cache."""


def _npz(path: Path, **arrays: np.ndarray) -> None:
    """An uncompressed ``.npz`` (object arrays pickled, as numpy writes them)."""
    with path.open("wb") as handle:
        np.savez(handle, **{prefix + name: array for prefix in PREFIXES for name, array in arrays.items()})


def _npz_members(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> None:
    """A zip archive of raw members."""
    with zipfile.ZipFile(path, "w", compress) as archive:
        for prefix in PREFIXES:
            for name, data in members.items():
                archive.writestr(prefix + name, data)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _objects(rows: int) -> np.ndarray:
    array = np.empty(rows, dtype=object)
    array[:] = [_Detonator() for _ in range(rows)]
    return array


def _flip_pattern(pattern: bytes) -> Callable[[bytes], bytes]:
    """Flip the first byte of the stored bytes' first occurrence of ``pattern``."""

    def transform(data: bytes) -> bytes:
        offset = data.index(pattern)
        return _flip(offset)(data)

    return transform


def _set_flags(bits: int) -> Callable[[bytes], bytes]:
    """Set general-purpose flag bits in every central-directory entry."""

    def transform(data: bytes) -> bytes:
        changed = bytearray(data)
        start = 0
        while (start := data.find(b"PK\x01\x02", start)) >= 0:
            flags = struct.unpack_from("<H", data, start + 8)[0]
            struct.pack_into("<H", changed, start + 8, flags | bits)
            start += 4
        return bytes(changed)

    return transform


def _bad_member_deflate(member: str) -> Corruption:
    """Make ``member``'s deflate stream open with a block of the reserved type 3."""

    def corrupt(path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            offset = archive.getinfo(PREFIXES[0] + member).header_offset
        data = bytearray(path.read_bytes())
        name_length, extra_length = struct.unpack_from("<HH", data, offset + 26)
        data[offset + 30 + name_length + extra_length] = 0xFF
        path.write_bytes(bytes(data))

    return corrupt


def _zip_bomb(path: Path) -> None:
    """``images.npy`` holding a valid header and ``BOMB_MIB`` MiB of zeros, deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for prefix in PREFIXES:
            with archive.open(prefix + "images.npy", "w") as member:
                member.write(_npy_header((ROWS, 28, 28)))
                for _ in range(BOMB_MIB):
                    member.write(bytes(2**20))
            archive.writestr(prefix + "labels.npy", _npy(LABELS))


SPLIT_IMAGES = np.full((ROWS, 28, 28), 0x55, dtype=np.uint8)
"""Images of a recognisable byte, so a test can find and flip one in a stored member."""


def _npz_case(**arrays: np.ndarray) -> Corruption:
    return lambda path: _npz(path, **({"images": SPLIT_IMAGES, "labels": LABELS} | arrays))


def _without(name: str) -> Corruption:
    def corrupt(path: Path) -> None:
        arrays = {"images": SPLIT_IMAGES, "labels": LABELS}
        del arrays[name]
        _npz(path, **arrays)

    return corrupt


def _valid_npz(path: Path) -> None:
    _npz(path, images=SPLIT_IMAGES, labels=LABELS)


def _deflated_npz(path: Path) -> None:
    _npz_members(path, {"images.npy": _npy(SPLIT_IMAGES), "labels.npy": _npy(LABELS)}, zipfile.ZIP_DEFLATED)


def _then(*steps: Corruption) -> Corruption:
    def corrupt(path: Path) -> None:
        for step in steps:
            step(path)

    return corrupt


_HUGE_IMAGES = {"images.npy": _npy_header((2**31, 28, 28)) + bytes(64), "labels.npy": _npy(LABELS)}
_HUGE_LABELS = {"images.npy": _npy(SPLIT_IMAGES), "labels.npy": _npy_header((2**40,), "<i8") + bytes(64)}
NPZ_CASES = [
    # (id, corruption of a valid file, what the message says); the silo case ids add their file
    ("empty", _disk(lambda _: b""), "not a readable .npz archive"),
    ("truncated-at-30", _then(_valid_npz, _disk(lambda d: d[:30])), "not a readable .npz archive"),
    ("truncated-at-half", _then(_valid_npz, _disk(lambda d: d[: len(d) // 2])), "not a readable .npz archive"),
    ("truncated-in-central-dir", _then(_valid_npz, _disk(lambda d: d[:-30])), "not a readable .npz archive"),
    ("not-a-zip", _disk(lambda _: GARBAGE[:3000]), "not a readable .npz archive"),
    ("npy-not-npz", lambda path: path.write_bytes(_npy(SPLIT_IMAGES)), "not a readable .npz archive"),
    ("pickle-not-npz", lambda path: path.write_bytes(pickle.dumps(_Detonator())),
     "not a readable .npz archive"),
    ("missing-images", _without("images"), "no array 'images'"),
    ("missing-labels", _without("labels"), "no array 'labels'"),
    ("object-images", _npz_case(images=_objects(ROWS)), "Python objects"),
    ("object-labels", _npz_case(labels=_objects(ROWS)), "Python objects"),
    ("float-labels", _npz_case(labels=LABELS.astype(np.float64)), "labels must be a 1-D integer array"),
    ("bool-labels", _npz_case(labels=LABELS.astype(bool)), "labels must be a 1-D integer array"),
    ("complex-images", _npz_case(images=SPLIT_IMAGES.astype(np.complex64)), "images must be uint8"),
    ("nan-images", _npz_case(images=np.full((ROWS, 28, 28), np.nan)), "images must be uint8"),
    ("inf-images", _npz_case(images=np.full((ROWS, 28, 28), np.inf, dtype=np.float32)), "images must be uint8"),
    ("images-32x32", _npz_case(images=np.zeros((ROWS, 32, 32), np.uint8)), "images must be uint8 of shape"),
    ("images-flat", _npz_case(images=SPLIT_IMAGES.reshape(ROWS, -1)), "images must be uint8 of shape"),
    ("labels-2d", _npz_case(labels=LABELS.reshape(-1, 1)), "labels must be a 1-D integer array"),
    ("images-0d", _npz_case(images=np.array(7, np.uint8)), "images must be uint8 of shape"),
    ("labels-0d", _npz_case(labels=np.array(3)), "labels must be a 1-D integer array"),
    ("mismatched-lengths", _npz_case(labels=LABELS[:-2]), "6 images but 4 labels"),
    ("empty-arrays", _npz_case(images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64)),
     "no images"),
    ("label-10", _npz_case(labels=_labels((1, 10))), r"labels must lie in 0\.\.9|outside"),
    ("label-negative", _npz_case(labels=np.array([0, 1, -1, 2, 3, 4])), r"labels must lie in 0\.\.9|outside"),
    ("huge-declared-images", lambda path: _npz_members(path, _HUGE_IMAGES), r"declares shape \(2147483648, 28, 28\)"),
    ("huge-declared-labels", lambda path: _npz_members(path, _HUGE_LABELS), r"declares shape \(1099511627776,\)"),
    ("member-not-npy", lambda path: _npz_members(path, {"images.npy": b"garbage" * 100, "labels.npy": _npy(LABELS)}),
     "array 'images'.*magic"),
    ("bad-crc", _then(_valid_npz, _disk(_flip_pattern(b"\x55" * 64))), "not a readable .npz archive.*CRC"),
    ("bad-deflate", _then(_deflated_npz, _bad_member_deflate("images.npy")), "not a readable .npz archive"),
    ("encrypted-flag", _then(_valid_npz, _disk(_set_flags(0x1))), "encrypted"),
    ("zip-bomb", _zip_bomb, r"declares shape \(6, 28, 28\)"),
]


# --- silo folders ---------------------------------------------------------------------


def _silo(tmp_path: Path) -> Path:
    """A valid silo folder of tiny splits."""
    split = ImageSet(IMAGES, LABELS.astype(np.int64))
    (folder,) = export_silos([OrgData(0, split, split)], split, tmp_path)
    return folder


SILO_ONLY_CASES = [
    ("directory", _directory, "is a directory"),
    ("symlink-loop", _symlink_loop, "symlink"),
    ("dangling-symlink", _dangling_symlink, "symlink"),
    ("fifo", _fifo, "not a regular file"),
    ("unreadable", _unreadable, "not a readable .npz archive|cannot read"),
]


@pytest.mark.parametrize(("corrupt", "fragment"),
                         [pytest.param(*case[1:], id=case[0]) for case in NPZ_CASES + SILO_ONLY_CASES])
@pytest.mark.parametrize("split", ["train", "market"])
def test_corrupted_silo_file_gets_one_error_naming_it(
    tmp_path: Path, split: str, corrupt: Corruption, fragment: str
) -> None:
    folder = _silo(tmp_path)
    path = folder / f"{split}.npz"
    corrupt(path)
    _assert_refused(SiloFolderError, path, fragment, lambda: read_silo_folder(folder, 0))


def test_every_byte_flip_of_a_silo_file_is_read_or_refused(tmp_path: Path) -> None:
    folder = _silo(tmp_path)
    path = folder / "val.npz"
    _npz(path, images=IMAGES[:1], labels=LABELS[:1])
    original = path.read_bytes()
    pixels = original.index(IMAGES[:1].tobytes())
    for offset in _fuzzed_offsets(len(original), range(pixels + 16, pixels + 28 * 28 - 16)):
        for mask in (0x01, 0xFF):
            path.write_bytes(_flip(offset, mask)(original))
            with _guarded():
                try:
                    read_silo_folder(folder, 0)
                except SiloFolderError as err:
                    assert str(path) in str(err)
    assert not DETONATED


# --- the decoded cache ----------------------------------------------------------------


@pytest.fixture
def idx_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    _write_idx_copy(root, compress=False)
    return root


@pytest.mark.parametrize("corrupt", [pytest.param(case[1], id=case[0]) for case in NPZ_CASES])
def test_a_corrupted_cache_is_decoded_again(
    tmp_path: Path, idx_root: Path, monkeypatch: pytest.MonkeyPatch, corrupt: Corruption
) -> None:
    cache_dir = tmp_path / "cache"
    cache = cache_dir / "fashion-mnist.npz"
    load_dataset(root=str(idx_root), cache_dir=str(cache_dir))
    monkeypatch.setattr(sys.modules[__name__], "PREFIXES", ("train_", "test_"))
    corrupt(cache)
    with _guarded() as peak:
        train, test = load_dataset(root=str(idx_root), cache_dir=str(cache_dir))
    assert peak[0] < PEAK_LIMIT, f"peak {peak[0] / 2**20:.0f} MiB"
    assert not DETONATED, "a pickle was loaded"
    for split in (train, test):
        np.testing.assert_array_equal(split.images, IMAGES)
        np.testing.assert_array_equal(split.labels, LABELS)
    with np.load(cache, allow_pickle=False) as arrays:  # rewritten whole
        np.testing.assert_array_equal(arrays["test_labels"], LABELS)
