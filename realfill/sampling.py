"""Sampling: N completions of the target in batches, seeded per sample, pasted back with a feathered mask.

The run config's ``sample`` section says how (``SampleConfig``; scheduler, steps and guidance left ``auto``
take the backbone's own: DDPM, 200 steps, guidance 1.0 for the SD family, as in the paper). Each backbone
draws the samples with ``InpaintModel.generate``; this module sizes, seeds and composites them. Sample ``i``
uses its own generator seeded ``seed + i``, so a sample does not depend on the batch size it was drawn in.
The mask is dilated by ``mask_dilate`` pixels and feathered over ``feather`` more (at the target's size);
outside that band the result *is* the target, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from realfill.attention import Attention
from realfill.diffusion import InpaintModel
from realfill.errors import UserError


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> ``[1, 3, H, W]`` float in ``[-1, 1]``."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def to_tensor_mask(mask: np.ndarray) -> torch.Tensor:
    """HxW bool -> ``[1, 1, H, W]`` float 0/1."""
    return torch.from_numpy(np.array(mask)).float()[None, None]


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


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (HxWx3 uint8) at ``height`` x ``width``, bicubic (itself when it is that size already)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Any pixel touching the region to fill stays in it (area average > 0)."""
    if mask.shape == (height, width):
        return mask
    small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return small > 1e-6


#: ``sample.batch_size = "auto"`` off a CUDA GPU: the default batch
CPU_SAMPLE_BATCH = 8
#: the share of a GPU's free memory ``auto`` plans to fill (the rest: fragmentation, kernels' workspaces)
AUTO_MEMORY_SHARE = 0.8


def fitting_batch(per_sample: int, free: int, remaining: int) -> int:
    """How many samples of ``per_sample`` bytes fit in ``AUTO_MEMORY_SHARE`` of ``free`` bytes, 1 to
    ``remaining``."""
    return max(1, min(remaining, int(free * AUTO_MEMORY_SHARE) // max(per_sample, 1)))


def _free_cuda_bytes(device: torch.device) -> int:
    """What the device has free, counting what torch's allocator holds unused as free."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def paste_back(images: torch.Tensor, target: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Generated ``[N, 3, h, w]`` images in ``[0, 1]`` -> uint8 at the target's size (bicubic), each
    composited over ``target`` with ``weights`` (:func:`blend_weights`): the known pixels stay the target's."""
    height, width = target.shape[:2]
    if images.shape[-2:] != (height, width):
        images = F.interpolate(images.float().cpu(), size=(height, width), mode="bicubic", align_corners=False)
    arrays = (images.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return [composite(a, target, weights) for a in arrays]


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
    batch_size: int | str = 8,
    mask_dilate: int = 8,
    feather: int = 8,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    attention: Attention | None = None,
) -> list[np.ndarray]:
    """``num_samples`` completions of ``target`` (HxWx3 uint8) where ``mask`` (HxW bool) is True, each at
    the target's size and composited with :func:`blend_weights`; sample ``i`` is seeded ``seed + i``. Every
    batch runs inside ``attention``'s SDPA pin (``train.attention`` as the command resolved it)."""
    height, width = target.shape[:2]
    h, w = sampling_size(height, width, resolution, model.size_multiple)
    image = to_tensor_image(resize_image(target, h, w))
    small_mask = to_tensor_mask(resize_mask(mask, h, w))
    weights = blend_weights(mask, mask_dilate, feather)
    sampler = model.make_scheduler(scheduler)
    device = torch.device(model.device)
    # "auto" on a GPU: the first sample alone, its peak memory measured, then batches that fit what is free
    measure = batch_size == "auto" and device.type == "cuda"
    if batch_size == "auto":
        batch_size = 1 if measure else CPU_SAMPLE_BATCH
    results: list[np.ndarray] = []
    start = 0
    while start < num_samples:
        count = min(batch_size, num_samples - start)
        generators = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(count)]
        if measure:
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        with (attention or Attention()).pinned():
            images = model.generate(image, small_mask, prompt, generators=generators, scheduler=sampler,
                                    steps=steps, guidance_scale=guidance_scale)
        if measure:
            per_sample = torch.cuda.max_memory_allocated(device) - before
            batch_size = fitting_batch(per_sample, _free_cuda_bytes(device), num_samples - start - count)
            measure = False
        start += count
        if not torch.isfinite(images).all():  # would be black pixels, ranked, and "done"
            raise UserError("sampling made nan/inf pixels: the fine-tuned weights diverged; lower train.lr_denoiser, "
                            "train.lr_text_encoder or the adapter's scale (adapter.alpha)")
        results.extend(paste_back(images, target, weights))
        if on_batch is not None:
            on_batch(len(results), num_samples)
    return results
