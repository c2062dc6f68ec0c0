"""``sd2-inpaint`` / ``sdxl-inpaint`` from one original-format checkpoint file (``backbone.model=FILE``,
``backbone.config=FOLDER``): a tiny pipeline written in the LDM / Stability layout by
:func:`tests.sd_single_file.save_single_file` loads through the real backbone class and diffusers'
``from_single_file`` with the same weights and the same samples; a missing configuration is one line
naming the places looked.

The SDXL case uses ``build_tiny_sdxl(text_encoder_2_width=48)``: diffusers decides which of the file's two
text encoders goes into ``text_encoder_2`` by width (CLIP-L's is tried first and taken when its width matches,
as it never does for the real 768 / 1280), so with ``tiny-sdxl``'s two 32-wide encoders it loads CLIP-L's
weights into ``text_encoder_2`` and leaves its projection uninitialised;
:func:`test_sdxl_single_file_with_equal_encoder_widths_is_refused` shows that and the error it gives."""

from __future__ import annotations

import shutil

import pytest
import torch

from realfill.errors import MissingWeightsError, UserError
from tests.sd_single_file import save_single_file

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PARTS = {"sd2-inpaint": ("unet", "vae", "text_encoder"),
         "sdxl-inpaint": ("unet", "vae", "text_encoder", "text_encoder_2")}


def _tiny(name: str, **settings):
    from realfill_plugins.backbones.tiny import build_tiny_sd2, build_tiny_sdxl

    return build_tiny_sd2() if name == "sd2-inpaint" else build_tiny_sdxl(**{"text_encoder_2_width": 48, **settings})


def _backbone(name: str, **settings):
    from realfill_plugins.backbones.sd2_inpaint import SD2Inpaint
    from realfill_plugins.backbones.sdxl_inpaint import SDXLInpaint

    cls = SD2Inpaint if name == "sd2-inpaint" else SDXLInpaint
    return cls(cls.Config(**settings))


def _single_file(name: str, tmp_path, **settings):
    """The tiny pipeline, its diffusers folder (the configuration) and its single original-format file."""
    pipeline = _tiny(name, **settings)
    pipeline.save_pretrained(tmp_path / "config")
    return pipeline, tmp_path / "config", save_single_file(pipeline, tmp_path / "model.safetensors")


def _sample(model) -> torch.Tensor:
    image = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:] = 1
    return model.generate(image, mask, "a photo of sks", generators=[torch.Generator().manual_seed(0)],
                          scheduler=model.make_scheduler("ddim"), steps=3)


@pytest.mark.slow
def test_single_file_is_in_the_original_layout(tmp_path):
    """What the file holds is Stability's layout, not diffusers' (or from_single_file would not convert)."""
    from safetensors import safe_open

    _, _, sd2 = _single_file("sd2-inpaint", tmp_path / "sd2")
    _, _, sdxl = _single_file("sdxl-inpaint", tmp_path / "sdxl")
    keys = {}
    for name, path in (("sd2", sd2), ("sdxl", sdxl)):
        with safe_open(str(path), "pt") as f:
            keys[name] = set(f.keys())
    for expected in ("model.diffusion_model.input_blocks.0.0.weight",
                     "model.diffusion_model.middle_block.1.proj_in.weight",
                     "model.diffusion_model.output_blocks.1.2.conv.weight",
                     "first_stage_model.decoder.up.0.block.0.conv1.weight",
                     "first_stage_model.encoder.mid.attn_1.q.weight",
                     "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight",
                     "cond_stage_model.model.positional_embedding", "cond_stage_model.model.ln_final.weight"):
        assert expected in keys["sd2"], expected
    for expected in ("model.diffusion_model.label_emb.0.0.weight",
                     "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
                     "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight",
                     "conditioner.embedders.1.model.text_projection"):
        assert expected in keys["sdxl"], expected
    everything = keys["sd2"] | keys["sdxl"]
    assert not any(part in k for k in everything for part in ("down_blocks", "up_blocks", "mid_block", "resnets"))


@pytest.mark.parametrize("name", ["sd2-inpaint", "sdxl-inpaint"])
def test_real_backbone_loads_a_single_file_with_the_same_weights_and_samples(name, tmp_path, empty_hub_cache):
    from realfill_plugins.backbones.sd_family import sd_inpaint_model

    tiny, config, path = _single_file(name, tmp_path)
    model = _backbone(name, model=str(path), config=str(config)).load()
    for part in PARTS[name]:
        expected, loaded = getattr(tiny, part).state_dict(), getattr(model.pipeline, part).state_dict()
        assert set(loaded) == set(expected), part
        for key, tensor in expected.items():
            assert torch.equal(loaded[key], tensor), f"{part}.{key}"
    reference = sd_inpaint_model(_tiny(name))
    torch.testing.assert_close(_sample(model), _sample(reference))


def test_default_config_is_the_default_model_in_the_local_cache(tmp_path, empty_hub_cache):
    """``config`` unset: the default model id's configuration, found in the local model cache (laid out
    here as the hub lays it out: refs/main names the snapshot)."""
    from realfill_plugins.backbones.sd2_inpaint import DEFAULT_MODEL

    tiny, config, path = _single_file("sd2-inpaint", tmp_path)
    repo = empty_hub_cache / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    shutil.copytree(config, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    model = _backbone("sd2-inpaint", model=str(path)).load()
    assert torch.equal(model.denoiser.conv_in.weight, tiny.unet.conv_in.weight)


@pytest.mark.parametrize("name", ["sd2-inpaint", "sdxl-inpaint"])
def test_missing_single_file_config_names_the_places_looked(name, tmp_path, empty_hub_cache):
    from realfill_plugins.backbones.sd2_inpaint import DEFAULT_MODEL as SD2
    from realfill_plugins.backbones.sdxl_inpaint import DEFAULT_MODEL as SDXL

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not read: the configuration is looked for first")
    default = SD2 if name == "sd2-inpaint" else SDXL
    with pytest.raises(MissingWeightsError) as info:
        _backbone(name, model=str(path)).load()
    message = str(info.value)
    assert "\n" not in message
    for fragment in (str(path), f"the local model cache {empty_hub_cache} for '{default}'",
                     "backbone.config=FOLDER", f"hf download {default} --include '*.json'"):
        assert fragment in message, message
    with pytest.raises(MissingWeightsError, match=f"{tmp_path / 'nope'} \\(no such folder\\)"):
        _backbone(name, model=str(path), config=str(tmp_path / "nope")).load()
    with pytest.raises(MissingWeightsError, match="for 'someone/other-model'"):
        _backbone(name, model=str(path), config="someone/other-model").load()
    with pytest.raises(UserError, match="backbone.config: .* without model_index.json"):
        _backbone(name, model=str(path), config=str(tmp_path)).load()


def test_broken_single_file_is_one_line(tmp_path):
    _, config, _ = _single_file("sd2-inpaint", tmp_path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError) as info:
        _backbone("sd2-inpaint", model=str(broken), config=str(config)).load()
    message = str(info.value)
    assert "\n" not in message and str(broken) in message and "could not be loaded" in message


def test_sdxl_single_file_with_equal_encoder_widths_is_refused(tmp_path):
    """``tiny-sdxl`` itself (both encoders 32 wide): diffusers fills ``text_encoder_2`` from the CLIP-L
    weights and leaves its projection on the meta device; the loader says so instead of sampling with it."""
    from diffusers import StableDiffusionXLInpaintPipeline

    tiny, config, path = _single_file("sdxl-inpaint", tmp_path, text_encoder_2_width=32)
    raw = StableDiffusionXLInpaintPipeline.from_single_file(str(path), config=str(config), local_files_only=True)
    assert raw.text_encoder_2.text_projection.weight.is_meta
    assert torch.equal(raw.text_encoder_2.get_input_embeddings().weight,
                       tiny.text_encoder.get_input_embeddings().weight)  # encoder 1's, not encoder 2's
    with pytest.raises(UserError, match="holds no text_encoder_2 weights for text_projection.weight"):
        _backbone("sdxl-inpaint", model=str(path), config=str(config)).load()


@pytest.mark.slow
def test_cli_missing_single_file_config_is_one_line_exit_2(example_scene, tmp_path):
    from tests.test_cli import assert_one_line_error, realfill

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not read")
    proc = realfill("fill", str(example_scene), "--preset", "smoke", "--backbone", "sd2-inpaint",
                    "--set", f"backbone.model={path}", "--out", str(tmp_path / "run"),
                    env={"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"})
    assert_one_line_error(proc, f"the configuration of the single file {path} not found", "backbone.config=FOLDER")
    assert not (tmp_path / "run").exists()
