"""registry.toml: the checked-in inventory of built-in components (kornia's test_api_surface habit).

``realfill plugins --inventory`` prints it from the live registries; tests/test_inventory.py fails when
the file and the registered built-ins disagree.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

HEADER = """\
# The inventory of realfill's built-in components: role, name (what users type), the plugin module
# that registers it, a one-line summary, and what it needs beyond the core install.
# tests/test_inventory.py fails if an entry does not resolve or a registered built-in is missing.
# Regenerate with: realfill plugins --inventory > registry.toml
"""


def builtin_entries(plugins) -> list[dict]:
    entries = []
    for role, registry in plugins.registries.items():
        for component in registry:
            plugin = registry.plugin_of(component.name)
            if not plugin.startswith("realfill_plugins."):
                continue
            entries.append(
                {
                    "role": role,
                    "name": component.name,
                    "plugin": plugin,
                    "summary": component.summary,
                    "needs": list(component.needs),
                }
            )
    return entries


def render(plugins) -> str:
    return HEADER + "\n" + tomli_w.dumps({"component": builtin_entries(plugins)})


def read(path: Path) -> list[dict]:
    return tomllib.loads(Path(path).read_text()).get("component", [])
