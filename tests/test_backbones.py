"""Backbones: tiny twins of SD2/SDXL (architecture, seeded weights), real ones loading offline from a local
folder, missing weights named, and the real-size LoRA parameter counts of docs/memory.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realfill.errors import MissingWeightsError, UserError


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _backbone(plugins, name, **settings):
    return plugins.registry("backbone").create(plugins.registry("backbone").get(name).Config(**settings))


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
def test_tiny_backbones_have_the_inpainting_architecture(plugins, name):
    model = _backbone(plugins, name).load()
    unet = model.denoiser
    assert unet.config.in_channels == 9 and unet.config.out_channels == 4  # noisy + mask + masked latents
    assert model.latent_factor == 8 and model.latent_channels == 4
    image = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert model.encode_images(image).shape == (1, 4, 8, 8)
        cond = model.encode_prompts(["a photo of sks", ""])
    if name == "tiny-sdxl":
        assert len(model.text_encoders) == 2
        assert cond["encoder_hidden_states"].shape[-1] == unet.config.cross_attention_dim == 64  # both encoders
        assert cond["text_embeds"].shape == (2, 32)  # pooled
        assert model.time_ids(64, 64, 1).tolist() == [[64, 64, 0, 0, 64, 64]]
    else:
        assert len(model.text_encoders) == 1 and set(cond) == {"encoder_hidden_states"}
    assert not torch.equal(cond["encoder_hidden_states"][0], cond["encoder_hidden_states"][1])


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
def test_prompt_and_image_pair_encoding_give_the_pipelines_results(plugins, name):
    """encode_prompts caches the tokens but gives exactly the pipeline's encode_prompt; encode_image_pair
    (one VAE pass) gives what two encode_images calls give on the same generator."""
    model = _backbone(plugins, name).load()
    prompts = ["a photo of sks", ""]
    with torch.no_grad():
        ours = [model.encode_prompts(prompts) for _ in range(2)]  # the second from cached tokens
        if name == "tiny-sdxl":
            embeds, _, pooled, _ = model.pipeline.encode_prompt(prompts, device=model.device,
                                                                num_images_per_prompt=1,
                                                                do_classifier_free_guidance=False)
            stock = {"encoder_hidden_states": embeds, "text_embeds": pooled}
        else:
            stock = {"encoder_hidden_states": model.pipeline.encode_prompt(prompts, model.device, 1, False)[0]}
        for cond in ours:
            assert set(cond) == set(stock) and all(torch.equal(cond[k], stock[k]) for k in stock)

        images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        masked = images * (torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(1)) < 0.5)
        g = torch.Generator().manual_seed(5)
        pair = model.encode_image_pair(images, masked, generator=g)
        after_pair = torch.rand(1, generator=g)
        g = torch.Generator().manual_seed(5)
        single = model.encode_images(images, generator=g), model.encode_images(masked, generator=g)
        assert torch.equal(after_pair, torch.rand(1, generator=g))  # the same draws
    for a, b in zip(pair, single):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(pair[0], pair[1])


def test_tiny_weights_follow_the_seed(plugins):
    a = _backbone(plugins, "tiny-sd2").load().denoiser.state_dict()
    b = _backbone(plugins, "tiny-sd2").load().denoiser.state_dict()
    c = _backbone(plugins, "tiny-sd2", seed=1).load().denoiser.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_tiny_tokenizer_is_offline_and_distinguishes_prompts():
    from realfill_plugins.backbones.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    ids = tokenizer(["a photo of sks", "a photo of xyz"]).input_ids
    assert ids[0][0] == tokenizer.bos_token_id and ids[0][-1] == tokenizer.eos_token_id
    assert ids[0] != ids[1]


@pytest.mark.parametrize("name", ["sd2-inpaint", "sdxl-inpaint"])
def test_missing_weights_name_every_place(plugins, name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as info:
        _backbone(plugins, name).load()
    message = str(info.value)
    assert "local model cache" in message and "hf download" in message and "--set backbone.model=" in message
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "nope.safetensors")):
        _backbone(plugins, name, model=str(tmp_path / "nope.safetensors")).load()
    with pytest.raises(UserError, match="model_index.json"):
        _backbone(plugins, name, model=str(tmp_path)).load()


@pytest.mark.parametrize(("real", "builder"), [("sd2-inpaint", "build_tiny_sd2"), ("sdxl-inpaint", "build_tiny_sdxl")])
def test_real_backbone_loads_a_local_model_folder(plugins, tmp_path, real, builder):
    """The real backbone's loader on a diffusers folder (here the tiny twin, saved): same weights, same samples."""
    from realfill_plugins.backbones import tiny

    getattr(tiny, builder)().save_pretrained(tmp_path / "model")
    model = _backbone(plugins, real, model=str(tmp_path / "model")).load()
    reference = _backbone(plugins, f"tiny-{real.split('-')[0]}").load()
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:] = 1
    for name in ("unet", "vae", "text_encoder"):
        loaded, built = getattr(model.pipeline, name).state_dict(), getattr(reference.pipeline, name).state_dict()
        assert loaded.keys() == built.keys() and all(torch.equal(loaded[k], built[k]) for k in loaded), name
    out = [m.generate(image, mask, "a photo of sks", generators=[torch.Generator().manual_seed(0)],
                      scheduler=m.make_scheduler("ddim"), steps=3) for m in (model, reference)]
    # the same weights; oneDNN may pick another kernel for tensors laid out differently in memory, which
    # moved samples by up to 6e-7 (measured), so the samples are compared to float tolerance
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_real_size_lora_parameter_counts_match_the_docs():
    """docs/memory.md's figures, recomputed on the meta device (no weights)."""
    from benchmarks.architecture import lora_parameter_counts

    sd2 = lora_parameter_counts("sd2")
    assert sd2["denoiser_params"] == 865_925_124 and sd2["text_encoder_params"] == 340_387_840
    assert sd2["denoiser_lora"] == 1_659_904 and sd2["text_encoder_lora"] == 23 * 4 * 2 * 8 * 1024
    sdxl = lora_parameter_counts("sdxl")
    assert sdxl["denoiser_params"] == 2_567_478_084
    assert (sdxl["text_encoder_params"], sdxl["text_encoder_2_params"]) == (123_060_480, 694_659_840)
    assert sdxl["denoiser_lora"] == 11_612_160 and sdxl["lora_total"] == 14_823_424
