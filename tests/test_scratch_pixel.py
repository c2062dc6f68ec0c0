"""scratch-pixel: built from its config, deterministically; and trained by the shared loop, it learns.

The learning check runs the whole loop (``realfill.training.fine_tune`` with the ``full`` adapter and the
paper's masks, then ``realfill.sampling.sample_completions``) on the bundled real scene at a tiny budget,
and measures the error *inside the region to fill* against the ground truth. A broken loss mask (the
target's blanked hole leaking into the loss teaches gray), a broken composite or a loss that does not
reach the denoiser all keep that error from falling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realfill.config import resolve_config
from realfill.errors import UserError
from realfill.scene import load_scene
from realfill_plugins.backbones.scratch_pixel import DISCLAIMER, PixelInpaintModel, ScratchPixel
from realfill_plugins.metrics.pixel import psnr
from realfill.device import model_compute

training = pytest.importorskip("realfill.training", reason="the shared training loop (realfill/training.py)")
sampling = pytest.importorskip("realfill.sampling", reason="the shared sampler (realfill/sampling.py)")

#: a budget that runs in seconds on one core: 32 px, a two-level UNet
TINY = [
    "train.resolution=32", "train.batch_size=4", "train.lr_denoiser=2e-3", "train.lr_schedule=cosine",
    "train.warmup_steps=10", "train.log_every=50", "train.checkpoint_every=0",
    "backbone.block_out_channels=[16,32,32]", "sample.steps=10", "sample.num_samples=2", "sample.batch_size=2",
]


def _weights(model: PixelInpaintModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.denoiser.state_dict().items()}


def test_builds_from_config_deterministically(plugins):
    config = ScratchPixel.Config(block_out_channels=(16, 32), attention_levels=1, seed=3)
    a, b = plugins.registry("backbone").create(config).load(), ScratchPixel(config.model_copy()).load()
    other = ScratchPixel(config.model_copy(update={"seed": 4})).load()
    wa, wb, wo = _weights(a), _weights(b), _weights(other)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wo[k]) for k in wa)
    unet = a.denoiser
    assert unet.config.in_channels == 7 and unet.config.out_channels == 3
    assert tuple(unet.config.block_out_channels) == (16, 32)
    assert unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D")
    assert a.latent_factor == 1 and a.size_multiple == 2 and a.text_encoders == []
    assert a.noise_scheduler.config.prediction_type == "sample"
    # the global RNG is not consumed by building the model
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    ScratchPixel(config).load()
    assert torch.equal(torch.rand(1), expected)


def test_denoise_shapes_and_pixel_space_identity():
    model = ScratchPixel(ScratchPixel.Config(block_out_channels=(16, 32, 32))).load()
    image = torch.rand(2, 3, 24, 36) * 2 - 1
    assert torch.equal(model.decode_latents(model.encode_images(image)), image)
    mask = (torch.rand(2, 1, 24, 36) > 0.5).float()
    out = model.denoise(image, torch.tensor([10, 900]), mask, image * (1 - mask), {})
    assert out.shape == (2, 3, 24, 36) and torch.isfinite(out).all()
    assert model.encode_prompts(["a photo of sks"]) == {}


def test_channels_last_gives_the_same_prediction():
    config = ScratchPixel.Config(block_out_channels=(16, 32))
    plain, fast = ScratchPixel(config).load(), ScratchPixel(config.model_copy(update={"channels_last": True})).load()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    with torch.no_grad():
        a = plain.denoise(x, torch.tensor([5, 500]), mask, x, {})
        b = fast.denoise(x, torch.tensor([5, 500]), mask, x, {})
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "override, words",
    [
        ("backbone.attention_levels=4", "attention_levels"),
        ("backbone.block_out_channels=[12,24]", "norm_num_groups"),
        ("backbone.prediction_type='x0'", "prediction_type"),
        ("backbone.depth=3", "unknown config key 'backbone.depth'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override, words):
    with pytest.raises(UserError) as info:
        resolve_config(preset="cpu", overrides=[override])
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_cpu_preset_uses_it_and_says_what_it_is():
    config = resolve_config(preset="cpu")
    assert config.backbone.name == "scratch-pixel" and config.adapter.name == "full"
    assert "from scratch" in ScratchPixel.disclaimer and "NOT the paper's" in DISCLAIMER


def _masked_psnr(model, scene, config) -> float:
    s = config.sample
    samples = sampling.sample_completions(
        model, scene.target, scene.mask, prompt=config.train.prompt, resolution=config.train.resolution,
        scheduler=s.scheduler, steps=s.steps, num_samples=s.num_samples, batch_size=s.batch_size,
        mask_dilate=s.mask_dilate, feather=s.feather, seed=config.seed,
    )
    known = ~scene.mask
    for sample in samples:  # the composite keeps the target's pixels away from the blend band
        far = known & (sampling.blend_weights(scene.mask, s.mask_dilate, s.feather) == 0)
        assert np.array_equal(sample[far], scene.target[far])
    return float(np.mean([psnr(x, scene.gt, scene.mask) for x in samples]))


@pytest.mark.slow
def test_training_makes_the_masked_error_fall(plugins, example_scene, tmp_path):
    """The whole loop on the real scene, 250 steps at 32 px: the fill moves towards the ground truth, well
    past the untrained model and up to filling the hole with the target's mean known colour (this tiny
    budget gets no further; the cpu preset's budget is measured in docs/cpu_backbone.md)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = resolve_config(preset="cpu", overrides=[*TINY, "train.steps=250"], plugins=plugins)
    scene = load_scene(example_scene)
    backbone = plugins.registry("backbone").create(config.backbone)
    model = backbone.load("cpu")
    before = _masked_psnr(model, scene, config)

    adapter, masking = plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking)
    trainer = training.fine_tune(model, adapter, masking, scene, config, tmp_path,
                                  compute=model_compute(model, config.train))
    after = _masked_psnr(model, scene, config)

    mean_fill = scene.target.copy()
    mean_fill[scene.mask] = scene.target[~scene.mask].mean(axis=0).round().astype(np.uint8)
    flat = psnr(mean_fill, scene.gt, scene.mask)
    # measured here (2 cores): untrained 10.99 dB, trained 12.34 dB, flat mean colour 12.27 dB
    assert trainer.step == 250
    assert after > before + 1.0, (before, after)
    assert after > flat - 0.25, (flat, after)
