"""Paths given at the boundary: one check that a value is a path, naming what it was meant to be."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chameleon_sdk.errors import CheckpointError

__all__ = ["checked_path"]


def checked_path(path: Any, what: str = "checkpoint path") -> Path:
    """``path`` as a :class:`~pathlib.Path`; :class:`CheckpointError` naming ``what`` when it is not a str or path."""
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"{what} must be a str or os.PathLike, got {type(path).__name__}: {path!r:.80}")
    return Path(path)
