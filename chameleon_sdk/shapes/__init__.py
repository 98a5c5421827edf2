"""Moved to :mod:`chameleon_apps.shapes`; this name keeps working, with a warning, for one release."""

from chameleon_apps.shapes import *  # noqa: F403
from chameleon_apps.shapes import __all__  # noqa: F401

from chameleon_sdk.moved_modules import warn_moved

warn_moved(__name__, "chameleon_apps.shapes")
