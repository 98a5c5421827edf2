"""Moved to :mod:`chameleon_apps.shapes.evaluate`; this name keeps working, with a warning, for one release."""

import sys

import chameleon_apps.shapes.evaluate

from chameleon_sdk.moved_modules import warn_moved

warn_moved(__name__, "chameleon_apps.shapes.evaluate")
sys.modules[__name__] = chameleon_apps.shapes.evaluate
