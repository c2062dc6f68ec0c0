"""Sampling: the feathered composite keeps known pixels exactly; seeds; batches; the generic loop equals
the stock diffusers pipelines; SDXL samples end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from realfill.diffusion import denoise_loop
from realfill.sampling import (
    CPU_SAMPLE_BATCH,
    blend_weights,
    composite,
    fitting_batch,
    sample_completions,
    sampling_size,
    to_tensor_image,
    to_tensor_mask,
)
from tests.material import test_devices


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def photo():
    image = data.chelsea()[::6, ::6].copy()  # a real photo, 50x75
    mask = np.zeros(image.shape[:2], bool)
    mask[10:30, 40:70] = True
    return image, mask


def test_blend_weights_band():
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    weights = blend_weights(mask, dilate=3, feather=4)
    assert (weights[mask] == 1).all()
    assert weights[15, 12] == 1  # inside the dilation
    assert 0 < weights[15, 10] < 1  # in the feather
    assert weights[15, 7] == 0 and weights[0, 0] == 0  # beyond dilate + feather
    assert np.array_equal(blend_weights(mask, 0, 0) > 0, mask)


def test_composite_keeps_known_pixels_exactly_outside_the_band(photo):
    image, mask = photo
    noise = np.random.default_rng(0).integers(0, 256, image.shape, dtype=np.uint8)
    weights = blend_weights(mask, 2, 3)
    out = composite(noise, image, weights)
    assert np.array_equal(out[weights == 0], image[weights == 0])
    assert np.array_equal(out[weights == 1], noise[weights == 1])


def test_sampling_size_keeps_aspect_and_multiples():
    assert sampling_size(250, 370, 64, 16) == (48, 64)
    assert sampling_size(512, 512, 512, 64) == (512, 512)
    assert sampling_size(10, 1000, 64, 16) == (16, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
def test_generic_loop_equals_the_stock_pipeline(plugins, name):
    """The loop a pixel-space backbone uses gives what StableDiffusion(XL)InpaintPipeline gives."""
    model = plugins.registry("backbone").create(plugins.registry("backbone").get(name).Config()).load()
    image = to_tensor_image(data.astronaut()[::16, ::16])
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, 20:] = 1

    def gens():
        return [torch.Generator().manual_seed(i) for i in (5, 6)]

    for scheduler in ("ddpm", "euler"):
        stock = model.generate(image, mask, "a photo of sks", generators=gens(), scheduler=model.make_scheduler(scheduler), steps=4)
        ours = denoise_loop(model, image, mask, "a photo of sks", generators=gens(), scheduler=model.make_scheduler(scheduler), steps=4)
        assert stock.shape == (2, 3, 32, 32)
        torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
def test_same_seed_same_samples_and_batching_does_not_matter(plugins, photo, name):
    image, mask = photo
    model = plugins.registry("backbone").create(plugins.registry("backbone").get(name).Config()).load()
    kwargs = dict(prompt="a photo of sks", resolution=32, steps=3, num_samples=3, mask_dilate=2, feather=2)
    a = sample_completions(model, image, mask, batch_size=3, seed=7, **kwargs)
    b = sample_completions(model, image, mask, batch_size=2, seed=7, **kwargs)
    c = sample_completions(model, image, mask, batch_size=3, seed=8, **kwargs)
    assert len(a) == 3 and a[0].shape == image.shape and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # sample i is seeded seed + i
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], c[0])
    outside = blend_weights(mask, 2, 2) == 0
    assert all(np.array_equal(s[outside], image[outside]) for s in a)
    assert all(not np.array_equal(s[mask], image[mask]) for s in a)


def test_default_sampling_scale_is_the_training_scale():
    from realfill.sampling import training_scale_resolution

    # training's full-size crops map the short side (250 px) to 64 px; the target then samples at 95 x 64
    assert training_scale_resolution(250, 370, 64) == 95
    assert sampling_size(250, 370, training_scale_resolution(250, 370, 64), 4) == (64, 96)
    assert training_scale_resolution(300, 300, 48) == 48


def test_an_auto_batch_fits_the_free_memory_and_stays_within_the_samples_left():
    """``sample.batch_size = "auto"`` on a GPU: as many samples as 80% of the free bytes hold, at least one,
    at most those left to draw; off a GPU, the default batch."""
    assert fitting_batch(per_sample=2 * 2**30, free=40 * 2**30, remaining=63) == 16
    assert fitting_batch(per_sample=2 * 2**30, free=40 * 2**30, remaining=5) == 5
    assert fitting_batch(per_sample=50 * 2**30, free=40 * 2**30, remaining=63) == 1
    assert CPU_SAMPLE_BATCH == 8


@pytest.mark.parametrize("device", test_devices())
def test_auto_sampling_batches_draw_the_same_samples(plugins, photo, device):
    """``batch_size="auto"``: on the CPU batches of 8 (the same bytes as 8), on a GPU the first sample alone
    and then the batches its measured memory allows; either way a fixed batch's samples (each is seeded on
    its own)."""
    image, mask = photo
    model = plugins.registry("backbone").create(plugins.registry("backbone").get("tiny-sd2").Config()).load(device=torch.device(device))
    batches = []
    kwargs = dict(prompt="a photo of sks", resolution=32, steps=2, num_samples=10, mask_dilate=2, feather=2, seed=3)
    auto = sample_completions(model, image, mask, batch_size="auto",
                              on_batch=lambda done, total: batches.append(done), **kwargs)
    fixed = sample_completions(model, image, mask, batch_size=3, **kwargs)
    assert len(auto) == 10  # a batch's size may move a pixel by one level (float summation order), no more
    assert all(np.abs(x.astype(int) - y).max() <= 1 for x, y in zip(auto, fixed))
    eight = sample_completions(model, image, mask, batch_size=CPU_SAMPLE_BATCH, **kwargs)
    if device == "cpu":  # auto is the default batch here: the same bytes
        assert all(np.array_equal(x, y) for x, y in zip(auto, eight))
    if device == "cpu":
        assert batches == [8, 10]
    else:  # the measuring sample, then at least one batch of several (a tiny model on a GPU)
        assert batches[0] == 1 and batches[1] > 2
