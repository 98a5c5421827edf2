"""Moved to :mod:`chameleon_apps.shapes.world`; this name keeps working, with a warning, for one release."""

import sys

import chameleon_apps.shapes.world

from chameleon_sdk.moved_modules import warn_moved

warn_moved(__name__, "chameleon_apps.shapes.world")
sys.modules[__name__] = chameleon_apps.shapes.world
