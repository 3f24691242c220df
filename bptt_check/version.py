"""The version of bptt-check (read by the build and written into every report)."""

__version__ = "0.2.0"
