"""Command-line options shared by the generator benchmarks (run as scripts from this folder)."""

from __future__ import annotations

import argparse
from pathlib import Path


def generator_benchmark_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the ``--checkpoint`` and ``--threads`` options every generator benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint", type=Path, help="generator checkpoint (default: the cached default generator)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser
