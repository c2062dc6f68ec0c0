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
# -- issue 29: no setting silently ignored; every bad value one line, exit 2 --------------------------------


def test_constant_schedule_with_warmup_is_refused_and_constant_with_warmup_warms_up(example_scene, tmp_path,
                                                                                    capsys, one_thread):
    """diffusers' ``constant`` ignores ``num_warmup_steps``: the pair is refused (it trained without warmup
    before), and ``constant_with_warmup`` ramps the logged learning rates up over the warmup."""
    import json

    from realfill.cli import main

    out = tmp_path / "run"
    quick = ["--preset", "smoke", "--steps", "6", "--set", "train.batch_size=2", "--set", "train.log_every=1",
             "--set", "train.checkpoint_every=0", "--set", "train.warmup_steps=4", "--out", str(out)]
    assert main(["train", str(example_scene), *quick]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.warmup_steps" in err and "constant_with_warmup" in err, err
    assert not out.exists()
    assert main(["train", str(example_scene), *quick, "--set", "train.lr_schedule=constant_with_warmup"]) == 0
    assert 'lr_schedule = "constant_with_warmup"' in (out / "config.toml").read_text()
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4, 5, 6]
    for group, full in logged[-1]["lr"].items():  # each parameter group's rate, as a share of its own
        assert [entry["lr"][group] / full for entry in logged] == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1, 1, 1])
    assert 2e-4 in logged[-1]["lr"].values()  # the denoiser's train.lr_unet, reached after the warmup


@pytest.mark.parametrize("override, key", [
    # case 8: baselines' settings
    ("baselines.multi-homography.clean=1000000000", "baselines.multi-homography.clean"),
    ("baselines.multi-homography.band=1000000000", "baselines.multi-homography.band"),
    ("baselines.tiny-flux-kontext.seed=1180591620717411303424", "baselines.tiny-flux-kontext.seed"),
    ("baselines.tiny-flux-kontext.resolution=100000", "baselines.tiny-flux-kontext.resolution"),
    ("baselines.flux-kontext.resolution=100000", "baselines.flux-kontext.resolution"),
    ("baselines.telea.radius=1e20", "baselines.telea.radius"),
    ("baselines.telea.radius=100000", "baselines.telea.radius"),
    # case 9: the run's components
    ("ranker.max_keypoints=1000000000000", "ranker.max_keypoints"),
    ("masking.max_boxes=1000000000000", "masking.max_boxes"),
    # case 10: a baseline's device
    ("baselines.tiny-flux-kontext.device=banana", "baselines.tiny-flux-kontext.device"),
])
def test_issue_29_values_are_refused_by_config_in_one_line(override, key, capsys):
    from realfill.cli import main

    assert main(["config", "--preset", "smoke", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"'{key}'" in err and "Traceback" not in err, err


@pytest.mark.parametrize("component, override", [
    ("scratch-pixel", "backbone.layers_per_block=100000"),
    ("tiny-flux", "backbone.guidance=1e308"),
    ("tiny-flux", "backbone.mode_scale=1e308"),
    ("tiny-flux", "backbone.mode_scale=-2"),
])
def test_a_backbone_setting_that_would_crash_late_is_refused_by_config(component, override, capsys):
    from realfill.cli import main

    key = override.split("=")[0]
    argv = ["config", "--preset", "smoke", "--set", f"backbone.name={component}", "--set",
            "backbone.weighting_scheme=mode" if component == "tiny-flux" else "train.steps=1", "--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"'{key}'" in err, err


def test_a_baseline_on_a_gpu_this_machine_lacks_is_refused_before_any_work(example_scene, tmp_path, capsys):
    """``baselines.NAME.device=cuda`` with no CUDA GPU stops when the config is read, not after the run's
    training, sampling and ranking (where the editor first loads its model)."""
    import torch

    from realfill.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: cuda is a device it has")
    out = tmp_path / "run"
    argv = ["fill", str(example_scene), "--preset", "smoke", "--baseline", "tiny-flux-kontext",
            "--set", "baselines.tiny-flux-kontext.device=cuda", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'baselines.tiny-flux-kontext.device'" in err and "CUDA" in err, err
    assert not out.exists()
    assert main(["config", "--preset", "smoke", "--set", "baselines.tiny-flux-kontext.device=cpu"]) == 0


def test_a_misspelt_section_is_named(tmp_path, capsys):
    from realfill.cli import main

    path = tmp_path / "typo.toml"
    path.write_text('[backbone]\nname = "tiny-sd2"\n\n[trian]\nsteps = 3\n')
    assert main(["config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown config section 'trian'" in err and "train" in err, err
    assert "Field required" not in err


def test_a_config_file_with_a_utf8_byte_order_mark_reads(tmp_path, capsys):
    from realfill.cli import main

    assert main(["config", "--preset", "smoke", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Windows' Notepad saves "UTF-8 with BOM"
    assert read_toml(path)["train"]["steps"] == 3
    assert main(["config", "--config", str(path)]) == 0
    assert capsys.readouterr().out == text


def test_an_adapter_that_cannot_train_the_backbone_is_refused_before_any_file(example_scene, tmp_path, capsys):
    """Found by the property test: lora on scratch-pixel (a bare UNet) failed after the run folder was made
    (a rerun then met a folder it refused); the adapter class says so to the config instead."""
    from realfill.cli import main

    out = tmp_path / "run"
    argv = ["fill", str(example_scene), "--preset", "smoke", "--backbone", "scratch-pixel", "--adapter", "lora",
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'adapter.name'" in err and "--adapter full" in err, err
    assert not out.exists()
    assert main(["config", "--preset", "smoke", "--backbone", "scratch-pixel", "--adapter", "full"]) == 0
