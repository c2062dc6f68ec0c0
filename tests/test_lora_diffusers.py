"""The LoRA (and DoRA) in adapter/ is what stock diffusers reads: a fresh StableDiffusionInpaintPipeline (and
the SDXL one) with ``load_lora_weights`` gives exactly the samples of the model we trained."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from realfill.config import resolve_config
from realfill.scene import load_scene
from tests.material import test_devices
from realfill.training import fine_tune
from realfill.device import model_compute


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("device", test_devices())
@pytest.mark.parametrize("adapter", ["lora", "dora"])
@pytest.mark.parametrize(("backbone", "builder"), [("tiny-sd2", "build_tiny_sd2"), ("tiny-sdxl", "build_tiny_sdxl")])
def test_stock_load_lora_weights_gives_the_same_samples(plugins, example_scene, tmp_path, backbone, builder, device,
                                                        adapter):
    from realfill_plugins.backbones import tiny

    config = resolve_config(preset="smoke", components={"backbone": backbone, "adapter": adapter},
                            overrides=["train.steps=4", "train.batch_size=4", "train.resolution=32",
                                       "train.lr_denoiser=5e-3", "train.lr_text_encoder=5e-3", f"device={device}"],
                            plugins=plugins)
    scene = load_scene(example_scene)
    model = plugins.registry("backbone").create(config.backbone).load(device=torch.device(device))
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    weights = tmp_path / "adapter" / "pytorch_lora_weights.safetensors"
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    if backbone == "tiny-sdxl":
        assert any(k.startswith("text_encoder_2.") for k in keys)
    if adapter == "dora":  # the trained magnitudes travel, the text encoders' too
        assert any(k.startswith("unet.") and "lora_magnitude_vector" in k for k in keys)
        assert any(k.startswith("text_encoder.") and "lora_magnitude_vector" in k for k in keys)

    stock = getattr(tiny, builder)(0).to(device)  # the same base weights, untouched by us
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(str(tmp_path / "adapter"))
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.zeros(1, 1, 32, 32, device=device)
    mask[..., 12:] = 1
    kwargs = dict(prompt="a photo of sks", image=image, mask_image=mask, height=32, width=32,
                  num_inference_steps=3, guidance_scale=1.0, strength=1.0, output_type="pt")
    theirs = stock(generator=torch.Generator().manual_seed(1), **kwargs).images
    ours = model.generate(image * 2 - 1, mask, "a photo of sks", generators=[torch.Generator().manual_seed(1)],
                          scheduler=model.make_scheduler("ddpm"), steps=3)
    base = getattr(tiny, builder)(0).to(device)
    base.set_progress_bar_config(disable=True)
    untrained = base(generator=torch.Generator().manual_seed(1), **kwargs).images
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert (ours - untrained).abs().max() > 1e-3  # the LoRA does change the samples
