"""The one place where exceptions of other libraries become the SDK's own, at the boundary.

Parsers and torch raise what suits them: ``RecursionError`` for deeply nested JSON/TOML, a bare
``ValueError`` for an integer of more than 4,300 digits, ``UnicodeError`` for a lone surrogate or
non-UTF-8 bytes, ``torch.distributed.checkpoint``'s ``CheckpointException`` (which derives from
``BaseException`` and so slips past every ``except Exception``), and ``RuntimeError`` from
``torch.save`` when the disk is full. :func:`foreign_errors` wraps the call that reads or writes one
input and re-raises each as the SDK's error naming that input; a failed *write* stays an
:class:`OSError`, as docs/reliability.md promises.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from chameleon_sdk.errors import ChameleonError, CheckpointError

__all__ = ["foreign_errors", "is_dcp_exception"]


_MALFORMED = (KeyError, TypeError, AttributeError, IndexError, ZeroDivisionError, ValueError)


def is_dcp_exception(exc: BaseException) -> bool:
    """Whether ``exc`` is ``torch.distributed.checkpoint``'s ``CheckpointException`` (matched by
    name and module, so that torch.distributed is never imported for the check)."""
    cls = type(exc)
    return cls.__name__ == "CheckpointException" and cls.__module__.startswith("torch.distributed")


def _is_write_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(s in text for s in ("write failed", "failed writing", "unexpected pos", "iostream error"))


def _is_allocation_failure(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "size calculation overflowed" in text)


@contextlib.contextmanager
def foreign_errors(
    what: str, error: type[ChameleonError], *, writing: bool = False, interpreting: bool = False
) -> Iterator[None]:
    """Re-raise other libraries' exceptions from the block as ``error`` (or :class:`OSError` for a
    failed write) whose message names ``what``; the SDK's own errors and ``KeyboardInterrupt`` pass.

    :param writing: the block writes ``what``: a ``RuntimeError`` of torch's file writer becomes an
        :class:`OSError` (a full disk), not ``error``.
    :param interpreting: the block interprets the contents of ``what`` (a checkpoint's config read by
        a format plugin): a ``KeyError``, ``TypeError``, ``AttributeError``, ``IndexError``,
        ``ZeroDivisionError`` or ``ValueError`` there means the contents are malformed, and a failed
        allocation (``MemoryError``, torch's allocator) that they describe something too large.
    """
    try:
        yield
    except ChameleonError:
        raise
    except BaseException as exc:
        mapped = _mapped(exc, what, error, writing=writing, interpreting=interpreting)
        if mapped is None:
            raise
        raise mapped from exc


def _mapped(
    exc: BaseException, what: str, error: type[ChameleonError], *, writing: bool, interpreting: bool
) -> BaseException | None:
    """The SDK's exception for ``exc`` (see :func:`foreign_errors`), or None to let it pass."""
    if isinstance(exc, RecursionError):
        return error(f"{what} is nested too deeply to read")
    if isinstance(exc, UnicodeError):
        reason, position = getattr(exc, "reason", exc), getattr(exc, "start", "?")
        return error(f"{what} holds text that is not valid Unicode ({reason}, position {position})")
    if isinstance(exc, ValueError) and "limit" in str(exc) and "digits" in str(exc):  # sys.set_int_max_str_digits
        return error(f"{what} holds an integer with too many digits (more than 4,300)")
    if writing and isinstance(exc, RuntimeError) and _is_write_failure(exc):
        return OSError(errno.EIO, f"writing {what} failed (is the disk full?): {exc}")
    if is_dcp_exception(exc):
        first = next(iter(getattr(exc, "failures", {}).values()), exc)
        first = first[0] if isinstance(first, tuple) else first
        return CheckpointError(f"{what} cannot be loaded: {type(first).__name__}: {first}")
    if interpreting and isinstance(exc, _MALFORMED):
        return error(f"{what} is malformed: {type(exc).__name__}: {exc}")
    if interpreting and (isinstance(exc, MemoryError) or _is_allocation_failure(exc)):
        return error(f"{what} describes something too large to build: {str(exc)[:200]}")
    return None
