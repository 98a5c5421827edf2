"""Old module names that moved out of the core; each keeps working, with a warning, for one release."""

from __future__ import annotations

import warnings


def warn_moved(old: str, new: str) -> None:
    """Warn that module ``old`` is now ``new``; called by the stub left at the old name."""
    warnings.warn(
        f"{old} moved to {new} (the chameleon_apps package); the old name goes in the next release",
        DeprecationWarning,
        stacklevel=3,  # past the shim, to the import that reached it
    )
