"""Moved to :mod:`chameleon_apps.demo`; this name keeps working, with a warning, for one release."""

import sys

import chameleon_apps.demo

from chameleon_sdk.moved_modules import warn_moved

warn_moved(__name__, "chameleon_apps.demo")
sys.modules[__name__] = chameleon_apps.demo
