"""Files a run writes: strict JSON and atomic replacement.

Every JSON file the project writes goes through :func:`strict_json` (no ``NaN``), and
every file a crash must not tear goes through :func:`write_atomically`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def strict_json(value: Any, indent: int | None = None) -> str:
    """JSON that every parser accepts: numpy values become plain ones and a non-finite
    float becomes ``null`` (``json`` would write ``NaN``/``Infinity``, which is not JSON)."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    write_together({path: text})


def write_together(texts: dict[Path, str]) -> None:
    """Write each text to its path: every temporary file written and synced first, then the
    renames back to back (last to first: the first path is the authoritative one, so it is
    never newer than the others on disk), then the folders synced, so the renames survive a
    power cut. A kill lands between two renames only within microseconds."""
    temporaries = {path: temporary_of(path) for path in texts}
    for path, text in texts.items():
        with open(temporaries[path], "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    for path in reversed(list(texts)):
        os.replace(temporaries[path], path)
    for folder in {path.parent for path in texts}:
        sync_folder(folder)


def temporary_of(path: Path) -> Path:
    """The temporary file :func:`write_together` writes ``path`` through."""
    return path.with_name(f".{path.name}.tmp")


def sync_folder(folder: Path) -> None:
    """``fsync`` a folder, so the renames in it are on disk (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
