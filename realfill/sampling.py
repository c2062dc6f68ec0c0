"""Sampling: N completions of the target in batches, seeded per sample, pasted back with a feathered mask.

The paper's settings are the defaults (``SampleConfig``): DDPM, 200 steps, guidance 1.0. Sample ``i`` uses
its own generator seeded ``seed + i``, so a sample does not depend on the batch size it was drawn in.
The mask is dilated by ``mask_dilate`` pixels and feathered over ``feather`` more (at the target's size);
outside that band the result *is* the target, bit for bit.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from realfill.diffusion import InpaintModel, cat_conditioning, to_tensor_image, to_tensor_mask


def sampling_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The (height, width) to sample at: the target's aspect ratio, longer side ``resolution``, each side a
    multiple of ``multiple`` (the denoiser's size step) and at least one step."""
    scale = resolution / max(height, width)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def training_scale_resolution(height: int, width: int, train_resolution: int) -> int:
    """The longer side at which the target appears at the scale training saw it: training crops squares of
    the short side (scale 1) down to ``train_resolution``, so the short side maps to ``train_resolution``."""
    return int(round(train_resolution * max(height, width) / min(height, width)))


def blend_weights(mask: np.ndarray, dilate: int, feather: int) -> np.ndarray:
    """Per-pixel weight of the sample in the composite: 1 on the mask grown by ``dilate`` pixels, falling
    linearly to 0 over the next ``feather`` pixels, and exactly 0 beyond."""
    mask = np.asarray(mask, dtype=bool)
    if dilate == 0 and feather == 0:
        return mask.astype(np.float32)
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)  # 0 inside the mask
    if feather == 0:
        return (distance <= dilate).astype(np.float32)
    return np.clip((dilate + feather - distance) / feather, 0.0, 1.0).astype(np.float32)


def composite(sample: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights * sample + (1 - weights) * target`` in uint8; the target's own pixels where weight is 0."""
    w = weights[..., None]
    blended = np.clip(np.rint(w * sample.astype(np.float32) + (1 - w) * target.astype(np.float32)), 0, 255)
    return np.where(w > 0, blended.astype(np.uint8), target)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Any pixel touching the region to fill stays in it (area average > 0)."""
    if mask.shape == (height, width):
        return mask
    small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return small > 1e-6


def paste_back(images: torch.Tensor, target: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Generated ``[N, 3, h, w]`` images in ``[0, 1]`` -> uint8 at the target's size (bicubic), each
    composited over ``target`` with ``weights`` (:func:`blend_weights`): the known pixels stay the target's."""
    height, width = target.shape[:2]
    if images.shape[-2:] != (height, width):
        images = F.interpolate(images.float().cpu(), size=(height, width), mode="bicubic", align_corners=False)
    arrays = (images.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return [composite(a, target, weights) for a in arrays]


@torch.no_grad()
def denoise_loop(
    model: InpaintModel,
    image: torch.Tensor,
    mask: torch.Tensor,
    prompt: str,
    *,
    generators: list[torch.Generator],
    scheduler: Any,
    steps: int,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """The generic inpainting sampler over :class:`InpaintModel`'s methods (any backbone, latent or pixel).

    ``image``: ``[1, 3, H, W]`` in ``[-1, 1]``; ``mask``: ``[1, 1, H, W]`` 0/1 (1 = fill). Returns
    ``[N, 3, H, W]`` in ``[0, 1]`` for ``N = len(generators)``, the known region not yet pasted back."""
    device, dtype = model.device, model.dtype
    n = len(generators)
    image = image.to(device, dtype)
    mask = mask.to(device, dtype)
    latent_mask = model.latent_mask(mask)
    cond = model.encode_prompts([prompt] * n)
    use_cfg = guidance_scale > 1.0
    if use_cfg:
        cond = cat_conditioning([model.encode_prompts([""] * n), cond])
    scheduler.set_timesteps(steps, device=device)
    # the stock pipelines' order of draws: each sample's initial noise, then its masked-image encoding
    masked_image = image * (mask < 0.5)
    shape = (1, model.latent_channels, *latent_mask.shape[-2:])
    noise = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in generators]
    latents = torch.cat(noise).to(device, dtype) * scheduler.init_noise_sigma
    masked_latents = torch.cat([model.encode_images(masked_image, generator=g) for g in generators])
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    rep = 2 if use_cfg else 1
    masks = latent_mask.expand(n * rep, -1, -1, -1)
    masked = torch.cat([masked_latents] * rep)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * rep), t)
        timesteps = t.reshape(1).expand(n * rep).to(device)
        prediction = model.denoise(model_input, timesteps, masks, masked, cond)
        if use_cfg:
            uncond, text = prediction.chunk(2)
            prediction = uncond + guidance_scale * (text - uncond)
        latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
    return ((model.decode_latents(latents).float() + 1) / 2).clamp(0, 1)


def sample_completions(
    model: InpaintModel,
    target: np.ndarray,
    mask: np.ndarray,
    *,
    prompt: str,
    resolution: int,
    scheduler: str = "ddpm",
    steps: int = 200,
    guidance_scale: float = 1.0,
    num_samples: int = 64,
    batch_size: int = 8,
    mask_dilate: int = 8,
    feather: int = 8,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """``num_samples`` completions of ``target`` (HxWx3 uint8) where ``mask`` (HxW bool) is True, each at
    the target's size and composited with :func:`blend_weights`; sample ``i`` is seeded ``seed + i``."""
    height, width = target.shape[:2]
    h, w = sampling_size(height, width, resolution, model.size_multiple)
    image = to_tensor_image(_resize(target, h, w))
    small_mask = to_tensor_mask(_resize_mask(mask, h, w))
    weights = blend_weights(mask, mask_dilate, feather)
    sampler = model.make_scheduler(scheduler)
    results: list[np.ndarray] = []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        generators = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(count)]
        images = model.generate(image, small_mask, prompt, generators=generators, scheduler=sampler, steps=steps,
                                guidance_scale=guidance_scale)
        results.extend(paste_back(images, target, weights))
        if on_batch is not None:
            on_batch(len(results), num_samples)
    return results
