"""Where a run config's data comes from, before it is validated (:mod:`realfill.config`): the named
presets, config files and run folders, and ``--set key=value`` overrides."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from realfill.components import BUILTIN_ROLES
from realfill.errors import UserError

#: run-config field -> registry role, for the built-in roles (the role table's ``field``s; a plugin's roles
#: are in ``plugins.config_roles``)
COMPONENT_FIELDS = {role.field: role.name for role in BUILTIN_ROLES if role.field is not None}


def preset_names() -> list[str]:
    files = resources.files("realfill") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in files.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict:
    names = preset_names()
    if name not in names:
        raise UserError(f"unknown preset '{name}'; presets: {', '.join(names)}")
    return tomllib.loads((resources.files("realfill") / "presets" / f"{name}.toml").read_text())


def config_file_of(path: Path) -> Path:
    """``path`` itself, or for a run folder its ``config.toml`` (an easy slip for ``RUN/config.toml``)."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.toml").is_file():
            return path / "config.toml"
        raise UserError(f"{path}: a folder without a config.toml, so not a run folder; give a config.toml "
                        "or a run folder")
    return path


def read_toml(path: Path) -> dict:
    path = config_file_of(path)
    try:
        # utf-8-sig: a file saved with a byte-order mark (Windows editors) reads as the same TOML
        return tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a valid TOML file ({exc})") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.steps=10`` -> (["train", "steps"], 10). Values are TOML literals, else strings."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set train.steps=10")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
        raise UserError(f"--set {item!r}: '{key}' is not a dotted key like train.steps")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def set_component(data: dict, field: str, name: str) -> None:
    """Choose the component for a role; a different name drops the previous component's settings."""
    section = data.get(field)
    if not isinstance(section, dict) or section.get("name") != name:
        data[field] = {"name": name}


def apply_override(data: dict, path: list[str], value: Any, component_fields=COMPONENT_FIELDS) -> None:
    if path[-1] == "name" and len(path) == 2 and path[0] in component_fields:
        set_component(data, path[0], value)
        return
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {'.'.join(path)}: '{part}' is a value, not a section")
        node = child
    node[path[-1]] = value


def base_data(*, preset: str | None = None, config_file: Path | None = None) -> tuple[dict, str]:
    """The unvalidated data a run config starts from, a saved config file or a preset (default ``paper``),
    and how messages name it."""
    if config_file is not None:
        return read_toml(config_file), str(config_file_of(config_file))
    return load_preset(preset or "paper"), f"preset '{preset or 'paper'}'"


def dotted_keys(table: dict, prefix: str = "") -> dict[str, Any]:
    """A nested TOML table as ``{"train.steps": 10, ...}`` (the keys ``--set`` takes)."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
