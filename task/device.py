"""Where the classifier and the generator run: ``federation.device`` names one of
:data:`DEVICES`; :func:`resolve_device` says what it stands for on this machine.

Torch-free at import (the wire contract checks the name with :data:`DEVICES`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
"""``auto`` is CUDA where torch sees a CUDA device, else the CPU."""


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` (one of :data:`DEVICES`) stands for on this machine."""
    import torch

    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but torch sees no CUDA device here")
    return torch.device(name)
