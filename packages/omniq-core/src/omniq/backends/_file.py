"""Deprecated alias of the file backend's old internals package: use :mod:`omniq.backends.file`.

Kept only so ``from omniq.backends._file import layout`` (tests/faults) still
imports; the layout module is now :mod:`omniq.backends.file.layout`.
"""

from omniq.backends.file import layout

__all__ = ["layout"]
