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
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
