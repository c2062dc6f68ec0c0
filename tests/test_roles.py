"""One role table: a plugin adds a role (tests/plugins/new_role.py) and it works end to end: registry,
run config (TOML and --set), ``realfill plugins`` (and --json), a ``--note`` flag on config and fill."""

from __future__ import annotations

import json
import warnings

import pytest

from realfill.cli import main
from realfill.components import BUILTIN_ROLES, ROLES
from realfill.config import dump_config, resolve_config
from realfill.errors import UserError
from realfill.plugins import BUILTIN_PLUGINS, RealfillPlugins, RealfillPluginWarning
from tests.conftest import DummyEntryPoint

FAST = ["--steps", "1", "--samples", "1", "--set", "sample.steps=1", "--set", "train.batch_size=1",
        "--set", "train.resolution=32", "--no-compare"]


@pytest.fixture
def with_note(fake_entry_points):
    fake_entry_points(DummyEntryPoint("notes", "new_role", dist="realfill-notes", version="0.3"))


def load() -> RealfillPlugins:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RealfillPluginWarning)
        return RealfillPlugins()


def test_the_role_table_drives_hooks_and_registries(plugins):
    from realfill import hookspecs

    assert ROLES == ("backbone", "adapter", "masking", "ranker", "metric", "baseline", "tracker")
    for role in BUILTIN_ROLES:
        assert callable(getattr(hookspecs, role.hook))
        assert plugins.registry(role.name).role == role.name
    assert [r.field for r in plugins.config_roles] == ["backbone", "adapter", "masking", "ranker"]


def test_builtins_are_found_by_walking_the_package_in_a_fixed_order():
    assert BUILTIN_PLUGINS == tuple(sorted(BUILTIN_PLUGINS))
    assert "realfill_plugins.rankers.sift" in BUILTIN_PLUGINS and len(BUILTIN_PLUGINS) >= 20


def test_a_plugin_role_has_a_registry_and_a_run_config_field(with_note, tmp_path):
    plugins = load()
    assert plugins.roles[-1].name == "note" and plugins.registry("note").names() == ["none", "text-note"]
    assert resolve_config(preset="smoke", plugins=plugins).note.name == "none"  # the role's default
    config = resolve_config(preset="smoke", overrides=["note.name=text-note", "note.text=hi"], plugins=plugins)
    assert (config.note.name, config.note.text) == ("text-note", "hi")
    toml = tmp_path / "config.toml"
    toml.write_text(dump_config(config))
    assert resolve_config(config_file=toml, plugins=plugins).note.text == "hi"
    toml.write_text(dump_config(config) + "bogus = 1\n")  # lands in the last section, [note]
    with pytest.raises(UserError, match=r"unknown config key 'note.bogus'"):
        resolve_config(config_file=toml, plugins=plugins)
    with pytest.raises(UserError, match=r"unknown note 'nope'.*known notes: none, text-note"):
        resolve_config(preset="smoke", overrides=["note.name=nope"], plugins=plugins)


def test_without_the_plugin_the_role_is_not_there(plugins):
    assert "note" not in plugins.registries
    with pytest.raises(UserError, match="unknown config key 'note'"):
        resolve_config(preset="smoke", overrides=["note.name=none"], plugins=plugins)


def test_realfill_plugins_lists_the_new_role(with_note, capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data["components"]["note"]] == ["none", "text-note"]
    info = {p["name"]: p for p in data["plugins"]}["notes"]
    assert info["components"] == {"note": ["none", "text-note"]} and info["version"] == "0.3"
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "notes" in out and "text-note" in out


def test_the_role_flag_on_config_and_a_typo_is_one_line(with_note, capsys, tmp_path):
    assert main(["config", "--preset", "smoke", "--note", "text-note", "--set", "note.text=hey"]) == 0
    out = capsys.readouterr().out
    assert '[note]\nname = "text-note"\ntext = "hey"' in out
    assert main(["fill", str(tmp_path), "--preset", "smoke", "--note", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown note 'nope'" in err
    with pytest.raises(SystemExit):
        main(["fill", "--help"])
    assert "--note NOTE" in capsys.readouterr().out


def test_the_role_flag_on_fill_reaches_the_component(with_note, example_scene, tmp_path):
    run = tmp_path / "run"
    assert main(["fill", str(example_scene), "--preset", "smoke", "--note", "text-note", "--set", "note.text=hi",
                 "--out", str(run), *FAST]) == 0
    assert (run / "NOTE.txt").read_text() == "hi"
    assert 'name = "text-note"' in (run / "config.toml").read_text()


def test_hook_realfill_add_roles(with_note):
    """The hook itself: the declared role joins the table and its register hook becomes a spec."""
    plugins = load()
    role = plugins.roles[-1]
    assert (role.name, role.field, role.cli_flags, role.default) == ("note", "note", ("--note",), "none")
    assert plugins.pm.hook.realfill_register_notes.spec is not None
