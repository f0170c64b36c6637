"""Errors of the scale-out controller. All are ValueErrors: a request the current topology cannot
honour. The controller validates every request completely before it touches a switch, so after one
of these is raised every switch, instance and placement is exactly as it was."""

from __future__ import annotations


class ScaleoutError(ValueError):
    """A scale-out / scale-in request that cannot be carried out (nothing was changed)."""


class RangeNotOwnedError(ScaleoutError):
    """The flow-ID range is not (entirely) owned by the named instance."""


class NoFreeCoreError(ScaleoutError):
    """Placement found no free core on any eligible server."""


class HardwareTableFullError(ScaleoutError):
    """A hardware-switch update would exceed the switch's rule capacity."""


__all__ = ["HardwareTableFullError", "NoFreeCoreError", "RangeNotOwnedError", "ScaleoutError"]
