"""The training images of a scene and the random resized crops every step draws from them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# -- the training images ---------------------------------------------------------------------------


@dataclass
class TrainingImages:
    """The scene's images as ``[3, H, W]`` tensors in ``[-1, 1]`` (references first, the target last, its
    unknown pixels blanked to 0), with each one's unknown region ``[1, H, W]`` (zeros for references)."""

    images: list[torch.Tensor]
    unknown: list[torch.Tensor]
    is_target: list[bool]

    @classmethod
    def from_scene(cls, scene, resolution: int, crop_scale_min: float = 0.5) -> TrainingImages:
        # no crop needs more pixels than this: the smallest crop side is sqrt(crop_scale_min) x the short side
        limit = int(math.ceil(resolution / math.sqrt(crop_scale_min)))
        images, unknown, is_target = [], [], []
        for array, mask, target in [*[(r, None, False) for r in scene.references], (scene.target, scene.mask, True)]:
            image = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 127.5 - 1.0
            hole = torch.zeros(1, *image.shape[1:]) if mask is None else torch.from_numpy(mask).float()[None]
            if target:
                image = image * (1 - hole)  # the unknown pixels never reach the model (blanked before resizing)
            short = min(image.shape[1:])
            if short > limit:
                size = (round(image.shape[1] * limit / short), round(image.shape[2] * limit / short))
                image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
                hole = (F.interpolate(hole[None], size=size, mode="area")[0] > 0).float()
                if target:
                    image = image * (1 - hole)
            images.append(image)
            unknown.append(hole)
            is_target.append(target)
        return cls(images, unknown, is_target)

    def __len__(self) -> int:
        return len(self.images)


def random_resized_crops(
    data: TrainingImages, indices: list[int], resolution: int, scale_min: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square crops covering ``scale_min``-1 of each image's short side squared, resized to
    ``resolution``. Returns images ``[B,3,R,R]``, unknown ``[B,1,R,R]`` (1 where any unknown pixel fell)
    and is_target ``[B]``."""
    images, unknown = [], []
    for index in indices:
        image, hole = data.images[index], data.unknown[index]
        h, w = image.shape[1:]
        scale = scale_min + (1 - scale_min) * float(torch.rand((), generator=generator))
        side = max(1, int(round(math.sqrt(scale) * min(h, w))))
        top = int(torch.randint(0, h - side + 1, (), generator=generator))
        left = int(torch.randint(0, w - side + 1, (), generator=generator))
        crop = image[:, top : top + side, left : left + side][None]
        if side != resolution:
            crop = F.interpolate(crop, size=(resolution, resolution), mode="bilinear", antialias=side > resolution,
                                 align_corners=False)
        if not data.is_target[index]:  # a reference has no unknown pixels
            crop_hole = torch.zeros(1, 1, resolution, resolution)
        else:
            crop_hole = hole[:, top : top + side, left : left + side][None]
            if side != resolution:
                crop_hole = (F.interpolate(crop_hole, size=(resolution, resolution), mode="area") > 0).float()
        images.append(crop)
        unknown.append(crop_hole)
    is_target = torch.tensor([data.is_target[i] for i in indices])
    return torch.cat(images), torch.cat(unknown), is_target


@dataclass
class Batch:
    images: torch.Tensor
    unknown: torch.Tensor
    is_target: torch.Tensor
    masks: torch.Tensor
    drop_prompt: torch.Tensor
