"""registry.toml and the registered built-ins agree: removing one from either side fails here."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from realfill.components import ROLES
from realfill.inventory import builtin_entries, read

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = read(ROOT / "registry.toml")


@pytest.mark.parametrize("entry", INVENTORY, ids=lambda e: f"{e['role']}:{e['name']}")
def test_every_inventory_entry_resolves(entry, plugins):
    assert entry["role"] in ROLES
    component = plugins.registry(entry["role"]).get(entry["name"])
    assert plugins.registry(entry["role"]).plugin_of(entry["name"]) == entry["plugin"]
    assert importlib.import_module(entry["plugin"]).__name__ == entry["plugin"]
    assert entry["summary"] == component.summary and entry["summary"]
    assert entry["needs"] == list(component.needs)


def test_every_registered_builtin_is_in_the_inventory(plugins):
    listed = {(e["role"], e["name"]) for e in INVENTORY}
    registered = {(e["role"], e["name"]) for e in builtin_entries(plugins)}
    assert registered - listed == set(), "add them to registry.toml (realfill plugins --inventory)"
    assert listed - registered == set(), "listed in registry.toml but no built-in registers them"


def test_the_design_names_are_all_there():
    listed = {(e["role"], e["name"]) for e in INVENTORY}
    expected = {
        ("backbone", "sd2-inpaint"), ("backbone", "sdxl-inpaint"), ("backbone", "tiny-sd2"),
        ("backbone", "tiny-sdxl"), ("backbone", "scratch-pixel"), ("adapter", "lora"), ("adapter", "full"),
        ("masking", "lama-boxes"), ("masking", "target-own-mask"), ("ranker", "loftr"),
        ("ranker", "lightglue"), ("ranker", "sift"),
    }
    assert expected <= listed
