"""The one way the SDK reads an input file: a regular file, up to a size limit.

``/dev/zero`` never ends and a FIFO blocks until someone writes to it; reading either with
``Path.read_bytes`` exhausts memory or hangs. :func:`read_bounded` checks the file's type with
``stat`` (which neither blocks nor reads), then reads at most ``limit + 1`` bytes, so a file that
grows while being read is refused too. :func:`open_regular` is the same check for files read as a
stream (JSONL), whose lines the caller reads with a length limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from chameleon_sdk.errors import ChameleonError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_IMAGE_FILE_BYTES",
    "MAX_JSON_BYTES",
    "MAX_LINE_BYTES",
    "open_regular",
    "read_bounded",
]

#: JSON/TOML config files (a config of this size is a mistake, not a config)
MAX_CONFIG_BYTES = 16 * 2**20
#: a JSON file of a checkpoint (config, index, tokenizer)
MAX_JSON_BYTES = 256 * 2**20
#: one image file: far above any image within the default pixel limit
MAX_IMAGE_FILE_BYTES = 1 * 2**30
#: one line of a JSONL file (a document with its images inline)
MAX_LINE_BYTES = 256 * 2**20


def _regular(path: Path, what: str, error: type[ChameleonError]) -> int:
    try:
        info = path.stat()
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise error(f"cannot read {what} {str(path)!r}: it is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"refusing to read {what} {str(path)!r}: not a regular file (a device, FIFO or socket)")
    return info.st_size


def read_bounded(path: str | os.PathLike[str], *, limit: int, what: str, error: type[ChameleonError]) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    :param what: what the file is, for messages (``"image file"``, ``"config file"``).
    :raises error: naming the file, for a missing or unreadable file, a non-regular one, or one larger
        than ``limit``.
    """
    path = Path(path)
    size = _regular(path, what, error)
    too_big = f"{what} {str(path)!r} is larger than the limit of {limit} bytes"
    if size > limit:
        raise error(f"{too_big} ({size} bytes)")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise error(too_big)
    return data


def open_regular(path: str | os.PathLike[str], *, what: str, error: type[ChameleonError]) -> IO[bytes]:
    """Open the regular file ``path`` for reading in binary; ``error`` naming it otherwise."""
    path = Path(path)
    _regular(path, what, error)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
