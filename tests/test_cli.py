"""The command line as users meet it: versions, listings, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from realfill import __version__
from realfill.cli import main

ROOT = Path(__file__).resolve().parents[1]


def realfill(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    full_env = {**os.environ, "REALFILL_DISABLE_PLUGIN_AUTOLOAD": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "realfill", *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT,
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_version_is_one_line_with_the_libraries_an_issue_report_needs(tmp_path):
    import diffusers
    import peft
    import torch

    proc = realfill("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"realfill {__version__} (torch {torch.__version__}, diffusers {diffusers.__version__}, "
                           f"peft {peft.__version__})\n")


@pytest.mark.slow
def test_plugins_json_lists_every_builtin_component_by_role(plugins):
    proc = realfill("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    listed = {role: {c["name"] for c in comps} for role, comps in data["components"].items()}
    for role, registry in plugins.registries.items():
        assert set(registry.names()) <= listed[role]
    for plugin in data["plugins"]:
        assert plugin["version"] == __version__ if plugin["builtin"] else plugin["version"]
    owners = {c["plugin"] for comps in data["components"].values() for c in comps}
    assert owners <= {p["name"] for p in data["plugins"]}


def test_unknown_matcher_is_one_line_listing_known_rankers(example_scene, plugins, tmp_path):
    proc = realfill("fill", str(example_scene), "--preset", "smoke", "--matcher", "nosuch", "--out", str(tmp_path / "run"))
    line = assert_one_line_error(proc, "unknown ranker 'nosuch'")
    for name in plugins.registry("ranker").names():
        assert name in line
    assert not (tmp_path / "run").exists()


def test_config_typo_is_one_line_naming_the_key():
    proc = realfill("config", "--preset", "smoke", "--set", "train.stpes=10")
    assert_one_line_error(proc, "train.stpes", "valid keys there:", "steps")


def test_usage_errors_are_one_line(capsys):
    assert main(["config", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unrecognized arguments: --no-such-flag" in err


def test_config_prints_a_config_that_repeats(tmp_path, capsys):
    assert main(["config", "--preset", "smoke", "--steps", "3", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    saved = tmp_path / "config.toml"
    saved.write_text(text)
    assert main(["config", "--config", str(saved)]) == 0
    assert capsys.readouterr().out == text
    assert "steps = 3" in text and "seed = 4" in text


def test_no_plugin_flag_blocks_a_builtin(capsys):
    assert main(["--no-plugin", "rankers.sift", "plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "sift" not in {c["name"] for c in data["components"]["ranker"]}
