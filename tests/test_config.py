"""Run configs: presets validate, overrides apply, typos name the bad key and the valid ones."""

from __future__ import annotations

import pytest

from realfill.config import dump_config, resolve_config, run_name, write_config
from realfill.config_files import load_preset, preset_names, read_toml
from realfill.errors import UserError


@pytest.mark.parametrize("preset", ["paper", "paper-flux", "smoke", "cpu"])
def test_every_preset_validates(preset, plugins):
    config = resolve_config(preset=preset, plugins=plugins)
    data = load_preset(preset)
    for role in plugins.config_roles:  # every role of the table a preset names
        assert getattr(config, role.field).name == data[role.field]["name"]


def test_presets_ship_with_the_package():
    assert {"paper", "paper-flux", "smoke", "cpu"} <= set(preset_names())


def test_paper_preset_holds_the_papers_recipe(plugins):
    config = resolve_config(preset="paper", plugins=plugins)
    assert (config.backbone.name, config.adapter.name, config.masking.name, config.ranker.name) == (
        "sd2-inpaint", "lora", "lama-boxes", "loftr",
    )
    t, s = config.train, config.sample
    assert (t.steps, t.batch_size, t.resolution) == (2000, 16, 512)
    assert (t.lr_denoiser, t.lr_text_encoder, t.weight_decay, t.max_grad_norm) == (2e-4, 4e-5, 1e-2, 1.0)
    assert (t.prompt, t.prompt_dropout, t.full_mask_prob) == ("a photo of sks", 0.1, 0.1)
    assert (s.scheduler, s.steps, s.guidance_scale, s.num_samples) == ("ddpm", 200, 1.0, 64)


def test_set_overrides_parse_toml_values(plugins):
    config = resolve_config(
        preset="smoke",
        overrides=["train.steps=7", "train.prompt=a photo of xyz", "train.gradient_checkpointing=true", "seed=5"],
        plugins=plugins,
    )
    assert config.train.steps == 7 and config.train.prompt == "a photo of xyz"
    assert config.train.gradient_checkpointing is True and config.seed == 5


def test_typo_in_a_section_key_names_it_and_the_valid_keys(plugins):
    with pytest.raises(UserError) as info:
        resolve_config(preset="smoke", overrides=["train.stpes=10"], plugins=plugins)
    message = str(info.value)
    assert "unknown config key 'train.stpes'" in message
    assert "steps" in message.split("valid keys there:")[1] and "\n" not in message


def test_typo_in_a_component_key_names_the_components_keys(plugins):
    with pytest.raises(UserError) as info:
        resolve_config(preset="smoke", overrides=["ranker.no_such_key=1"], plugins=plugins)
    message = str(info.value)
    assert "unknown config key 'ranker.no_such_key'" in message
    valid = message.split("valid keys there:")[1]
    assert "name" in valid and set(plugins.registry("ranker").get("sift").Config.model_fields) <= {
        k.strip() for k in valid.split(",")
    }


def test_wrong_value_type_names_the_key(plugins):
    with pytest.raises(UserError, match=r"config key 'train.steps'.*got 'many'"):
        resolve_config(preset="smoke", overrides=["train.steps=many"], plugins=plugins)


def test_unknown_component_lists_the_known(plugins):
    with pytest.raises(UserError) as info:
        resolve_config(preset="smoke", components={"ranker": "nosuch"}, plugins=plugins)
    assert "unknown ranker 'nosuch'" in str(info.value)
    for name in plugins.registry("ranker").names():
        assert name in str(info.value)


def test_choosing_another_component_drops_the_previous_ones_settings(plugins, tmp_path):
    config_file = tmp_path / "c.toml"
    config_file.write_text(dump_config(resolve_config(preset="smoke", plugins=plugins)))
    other = [n for n in plugins.registry("ranker").names() if n != "sift"][0]
    config = resolve_config(config_file=config_file, components={"ranker": other}, plugins=plugins)
    assert config.ranker.name == other


def test_resolved_config_round_trips_through_toml(plugins, tmp_path):
    config = resolve_config(preset="smoke", overrides=["train.steps=3", "sample.num_samples=2"], plugins=plugins)
    write_config(config, tmp_path / "config.toml")
    again = resolve_config(config_file=tmp_path / "config.toml", plugins=plugins)
    assert again == config
    assert run_name(again) == run_name(config) == "tiny-sd2+lora+lama-boxes+sift-s3-r64-n2-seed0"


def test_broken_config_file_names_the_file(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[train\nsteps = 1")
    with pytest.raises(UserError, match=f"{bad}: not a valid TOML file"):
        read_toml(bad)
    with pytest.raises(UserError, match="no such config file"):
        read_toml(tmp_path / "missing.toml")


def test_unknown_preset_lists_presets():
    with pytest.raises(UserError, match="unknown preset 'papr'; presets: .*paper"):
        load_preset("papr")


@pytest.mark.parametrize("item", ["train.steps", "=3", "train..steps=3"])
def test_malformed_set_items(item, plugins):
    with pytest.raises(UserError, match="--set"):
        resolve_config(preset="smoke", overrides=[item], plugins=plugins)


def test_lr_unet_is_read_as_lr_denoiser_and_written_as_it(plugins, tmp_path, capsys):
    """The denoiser's learning rate is named for the denoiser; ``lr_unet``, its old spelling, still loads from
    a config file and --set, and both at once is one line."""
    from realfill.cli import main

    assert main(["config", "--preset", "paper"]) == 0
    shown = capsys.readouterr().out
    assert "lr_denoiser = 0.0002" in shown and "lr_unet" not in shown
    old = tmp_path / "old.toml"
    old.write_text(dump_config(resolve_config(preset="smoke", plugins=plugins)).replace("lr_denoiser", "lr_unet")
                   .replace("lr_unet = 0.0002", "lr_unet = 0.003"))
    assert "lr_unet = 0.003" in old.read_text()
    assert resolve_config(config_file=old, plugins=plugins).train.lr_denoiser == 0.003
    assert resolve_config(preset="smoke", overrides=["train.lr_unet=5e-3"], plugins=plugins).train.lr_denoiser == 5e-3
    with pytest.raises(UserError, match="'lr_unet' is the old spelling of 'lr_denoiser'"):
        resolve_config(preset="smoke", overrides=["train.lr_unet=5e-3", "train.lr_denoiser=1e-3"], plugins=plugins)
    config = resolve_config(preset="cpu", overrides=["adapter.lr_unet=1e-2"], plugins=plugins)
    assert config.adapter.lr_denoiser == 1e-2  # the full adapter's own key, renamed alike


def test_a_run_folder_written_with_lr_unet_resumes_and_keeps_its_spelling(example_scene, tmp_path, capsys):
    """A run folder from before the rename (its config.toml says ``lr_unet``): --resume accepts it with the
    same settings, trains nothing again, and leaves config.toml as it was."""
    from realfill.cli import main

    run = tmp_path / "run"
    fill = ["fill", str(example_scene), "--preset", "smoke", "--steps", "1", "--samples", "1", "--set",
            "sample.steps=1", "--set", "train.batch_size=1", "--set", "train.resolution=32", "--no-compare",
            "--out", str(run)]
    assert main(fill) == 0
    saved = run / "config.toml"
    saved.write_text(saved.read_text().replace("lr_denoiser", "lr_unet"))  # what the code before wrote
    before, log = saved.read_bytes(), (run / "train_log.jsonl").read_bytes()
    capsys.readouterr()
    assert main([*fill, "--resume"]) == 0
    assert "training already finished" in capsys.readouterr().err
    assert saved.read_bytes() == before and (run / "train_log.jsonl").read_bytes() == log
    assert main(["fill", str(example_scene), "--config", str(saved), "--out", str(run), "--resume",
                 "--no-compare"]) == 0  # its own config.toml, as the resume advice says
