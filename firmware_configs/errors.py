"""Errors loading profiles and templates."""

from __future__ import annotations


class FirmwareConfigError(ValueError):
    """A profile, template or model description that cannot be used; names file and field."""
