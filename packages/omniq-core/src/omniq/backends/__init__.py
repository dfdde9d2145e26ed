"""The core's own backends (memory, file).

They register through the ``omniq`` entry-point group exactly like any
third-party backend; nothing here is imported by the rest of the core.
"""
