"""Where caches live on this machine (decoded data, generator checkpoints, results)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_VARIABLE = "COCOGEN_CACHE"


def cache_root(root: str | Path | None = None) -> Path:
    """``root`` when given, else ``$COCOGEN_CACHE``, else ``~/.cache/cocogen``.

    Every process resolves its own: the ServerApp on the coordinator, each ClientApp
    on its silo (node config ``cache-dir`` first). No cache path travels in a message.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "cocogen")
