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
    return "write failed" in text or "failed writing" in text or "unexpected pos" in text


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
        ``ZeroDivisionError`` or ``ValueError`` there means the contents are malformed.
    """
    try:
        yield
    except ChameleonError:
        raise
    except _MALFORMED as exc:
        if interpreting and not isinstance(exc, (RecursionError, UnicodeError)):
            raise error(f"{what} is malformed: {type(exc).__name__}: {exc}") from exc
        with foreign_errors(what, error, writing=writing):
            raise
    except RecursionError:
        raise error(f"{what} is nested too deeply to read") from None
    except UnicodeError as exc:
        reason = getattr(exc, "reason", exc)
        raise error(
            f"{what} holds text that is not valid Unicode ({reason}, position {getattr(exc, 'start', '?')})"
        ) from None
    except ValueError as exc:
        if "limit" in str(exc) and "digits" in str(exc):  # sys.set_int_max_str_digits
            raise error(f"{what} holds an integer with too many digits (more than 4,300)") from None
        raise
    except RuntimeError as exc:
        if writing and _is_write_failure(exc):
            raise OSError(errno.EIO, f"writing {what} failed (is the disk full?): {exc}") from exc
        raise
    except BaseException as exc:
        if is_dcp_exception(exc):
            first = next(iter(getattr(exc, "failures", {}).values()), exc)
            raise CheckpointError(f"{what} cannot be loaded: {type(first).__name__}: {first}") from None
        raise
