"""realfill: reference-driven authentic image completion (RealFill, SIGGRAPH 2024) as swappable components."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("realfill")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from realfill.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
