"""Which process of a distributed run this is."""

from __future__ import annotations

import os

import torch

__all__ = ["is_main_process"]


def is_main_process() -> bool:
    """False in every process of a distributed run but rank 0 (the one that writes run files).

    Reads the joined process group, else ``RANK`` as ``torchrun`` sets it; True in a plain process.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"
