"""A test plugin file: a real (small) masking strategy, ``center-box``, a box centred in the crop."""

from typing import Literal

import torch

from realfill import hookimpl
from realfill.components import ComponentConfig, MaskingStrategy


class CenterBox(MaskingStrategy):
    name = "center-box"
    summary = "one box centred in the crop, a fixed fraction of each side"

    class Config(ComponentConfig):
        name: Literal["center-box"] = "center-box"
        fraction: float = 0.5

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        masks = torch.zeros(batch_size, 1, height, width)
        h, w = round(height * self.config.fraction), round(width * self.config.fraction)
        top, left = (height - h) // 2, (width - w) // 2
        masks[:, :, top : top + h, left : left + w] = 1
        return masks


@hookimpl
def realfill_register_masking(registry):
    registry.add(CenterBox)
