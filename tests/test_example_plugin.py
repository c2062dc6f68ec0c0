"""The example third-party package plugins/example-plugin, really installed (into a temp folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "example-plugin"  # a copy: building writes build/ beside it
    shutil.copytree(ROOT / "plugins" / "example-plugin", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return target


def run_with(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "REALFILL_DISABLE_PLUGIN_AUTOLOAD": ""}
    return subprocess.run([sys.executable, "-m", "realfill", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_installed_plugin_is_listed_with_its_version(installed):
    proc = run_with(installed, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    plugin = {p["name"]: p for p in data["plugins"]}["border-bands"]
    assert plugin == {
        "name": "border-bands", "version": "0.1.0", "builtin": False,
        "distribution": "realfill-border-bands", "components": {"masking": ["border-bands"]},
    }


@pytest.mark.slow
def test_installed_plugin_is_usable_by_name(installed):
    proc = run_with(installed, "config", "--preset", "smoke", "--masking", "border-bands", "--set", "masking.max_fraction=0.3")
    assert proc.returncode == 0, proc.stderr
    assert 'name = "border-bands"' in proc.stdout and "max_fraction = 0.3" in proc.stdout
    typo = run_with(installed, "config", "--preset", "smoke", "--masking", "border-bands", "--set", "masking.max_fracton=0.3")
    assert typo.returncode == 2 and "masking.max_fracton" in typo.stderr and "max_fraction" in typo.stderr


def test_border_bands_masks_are_bands_along_the_borders(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    from realfill_border_bands import BorderBands

    masker = BorderBands(BorderBands.Config(min_fraction=0.1, max_fraction=0.4))
    masks = masker.make_masks(64, 40, 60, is_target=torch.zeros(64, dtype=torch.bool),
                              target_masks=torch.zeros(64, 1, 40, 60), generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, 40, 60) and set(masks.unique().tolist()) == {0.0, 1.0}
    for mask in masks[:, 0].bool():
        assert mask.any() and not mask.all()
        rows_full, cols_full = mask.all(dim=1), mask.all(dim=0)
        # every masked pixel lies in a fully masked row or column touching a border
        assert (mask <= (rows_full[:, None] | cols_full[None, :])).all()
        assert rows_full[0] or rows_full[-1] or cols_full[0] or cols_full[-1]
    fractions = masks.mean(dim=(1, 2, 3))
    # one 10% band at least; four 40% bands leave at least the central 20% x 20% unmasked
    assert fractions.min() >= 0.1 - 1 / 40 and fractions.max() <= 1 - (1 - 2 * 0.4) ** 2 + 1e-6
