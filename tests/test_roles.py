"""One role table: a plugin adds a role (tests/plugins/new_role.py) and it works end to end: registry,
run config (TOML and --set), ``realfill plugins`` (and --json), a ``--note`` flag on config and fill."""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from pathlib import Path

import pytest

from realfill.cli import main
from realfill.components import BUILTIN_ROLES, DEFAULT_STAGE, ROLES, STAGES, Role
from realfill.config import dump_config, resolve_config
from realfill.errors import UserError
from realfill.plugins import BUILTIN_PLUGINS, RealfillPlugins, RealfillPluginWarning
from tests.conftest import DummyEntryPoint

FAST = ["--steps", "1", "--samples", "1", "--set", "sample.steps=1", "--set", "train.batch_size=1",
        "--set", "train.resolution=32", "--no-compare"]


ABLATE_FAST = ["--steps", "2", "--samples", "2", "--set", "sample.steps=1", "--set", "train.batch_size=1",
               "--set", "train.resolution=32", "--metric", "psnr", "--no-tui"]


@pytest.fixture
def with_note(fake_entry_points):
    fake_entry_points(DummyEntryPoint("notes", "new_role", dist="realfill-notes", version="0.3"))


@pytest.fixture
def with_postprocess(fake_entry_points):
    fake_entry_points(DummyEntryPoint("postprocessing", "postprocess_role", dist="realfill-postprocess"))


def load() -> RealfillPlugins:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RealfillPluginWarning)
        return RealfillPlugins()


def test_the_role_table_drives_hooks_and_registries(plugins):
    from realfill import hookspecs

    assert ROLES == tuple(role.name for role in BUILTIN_ROLES) and len(set(ROLES)) == len(ROLES)
    for role in BUILTIN_ROLES:
        assert callable(getattr(hookspecs, role.hook))
        assert plugins.registry(role.name).role == role.name
        assert role.stage in STAGES and role.plural  # every built-in role says both
        assert role.hook.removeprefix("realfill_register_") in role.plural.replace(" strategies", "")
    assert plugins.config_roles == tuple(r for r in BUILTIN_ROLES if r.field is not None)
    assert all(r.affects == "report" for r in BUILTIN_ROLES if r.field is None)  # metrics, baselines: no stage


def test_a_role_that_says_nothing_more_keeps_working_and_keys_training():
    role = Role("postprocess", object, "realfill_register_postprocesses", "postprocessing steps", "postprocess")
    assert (role.stage, role.affects, DEFAULT_STAGE) == (None, "train", "train")  # the safe choice: never merged
    assert role.plural_name == "postprocesses"  # not "postprocesss"
    assert Role("entry", object, "h", "x").plural_name == "entries"
    with pytest.raises(ValueError, match="stage 'training' is not one of train, sample, rank, report"):
        Role("x", object, "realfill_register_xs", "xs", stage="training")


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
    with pytest.raises(UserError, match="unknown config section 'note'"):
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


def test_a_plugin_role_without_a_stage_is_an_ablation_axis_of_its_own(with_postprocess, example_scene, tmp_path,
                                                                      capsys):
    """The issue's check: two components of a role that declares no stage make 2 runs with 2 trainings
    (undeclared means training), with a column of their own in results.csv."""
    out = tmp_path / "abl"
    args = ["ablate", str(example_scene), "--preset", "smoke", "--postprocess", "identity", "--postprocess", "flip",
            "--out", str(out), *ABLATE_FAST]
    assert main([*args, "--plan"]) == 0
    plan = capsys.readouterr().out
    assert "plan: 2 runs on 1 scene: 2 trainings, 2 samplings" in plan and not out.exists()
    assert main(args) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["postprocess"] for r in rows) == ["flip", "identity"]
    assert all(r["status"] == "ok" for r in rows)
    assert len(list((out / "stages" / "train").iterdir())) == 2
    assert main(["plugins"]) == 0
    assert "postprocesses" in capsys.readouterr().out  # the table's title: the plural, not "postprocesss"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_a_run_folder_made_before_a_role_plugin_resumes_unchanged(fake_entry_points, example_scene, tmp_path,
                                                                  capsys):
    """A fill and an ablation made without the plugin, resumed with it installed (its role at its default):
    the same run name, config.toml and keys, nothing trained again, exit 0."""
    run, abl = tmp_path / "run", tmp_path / "abl"
    fill = ["fill", str(example_scene), "--preset", "smoke", "--out", str(run), *FAST]
    ablate = ["ablate", str(example_scene), "--preset", "smoke", "--matcher", "sift", "--matcher", "warp",
              "--out", str(abl), *ABLATE_FAST]
    assert main(fill) == 0 and main(ablate) == 0
    made, stages, runs = _digest(run), _digest(abl / "stages"), _digest(abl / "runs")
    fake_entry_points(DummyEntryPoint("notes", "new_role"), DummyEntryPoint("postprocessing", "postprocess_role"))
    capsys.readouterr()
    assert main([*fill, "--resume"]) == 0
    assert "training already finished" in capsys.readouterr().err
    again = _digest(run)
    for name in ("config.toml", "run.json", "train_log.jsonl", "result.png", "ranking.json"):
        assert again[name] == made[name], name
    assert {k: v for k, v in again.items() if k.startswith("samples/")} == \
        {k: v for k, v in made.items() if k.startswith("samples/")}
    assert main(ablate) == 0
    assert _digest(abl / "stages") == stages and _digest(abl / "runs") == runs  # the same keys: all reused
    assert [r["note"] for r in csv.DictReader((abl / "results.csv").open())] == ["none", "none"]
