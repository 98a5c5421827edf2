"""Components with learned state that a pipeline saves next to its config (tokenizers, image tokenizers)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Stateful"]


@runtime_checkable
class Stateful(Protocol):
    """A component with learned state that the pipeline saves next to its config."""

    def save(self, directory: Path) -> None:
        """Write the component's state files into ``directory`` (which exists and is empty)."""

    def load(self, directory: Path) -> None:
        """Restore state written by :meth:`save`."""
