"""Render hook signatures exactly as docs/plugin_hooks.md shows them (and its test checks)."""

from __future__ import annotations

import inspect

from realfill import hookspecs


def hook_names() -> list[str]:
    return [name for name, obj in vars(hookspecs).items() if name.startswith("realfill_") and inspect.isfunction(obj)]


def signature(name: str) -> str:
    """``realfill_x(a: T, b: U) -> None``, annotations as written in hookspecs.py."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"
