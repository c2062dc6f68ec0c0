"""Masking strategy ``border-bands``: bands along the image borders, as outpainting needs."""

from typing import Literal

import torch
from pydantic import Field

from realfill import hookimpl
from realfill.components import ComponentConfig, MaskingStrategy

__version__ = "0.1.0"


class BorderBands(MaskingStrategy):
    name = "border-bands"
    summary = "1-4 bands along the borders, each 10-40% of the side (outpainting-shaped holes)"

    class Config(ComponentConfig):
        name: Literal["border-bands"] = "border-bands"
        min_fraction: float = Field(0.1, gt=0, lt=1)
        max_fraction: float = Field(0.4, gt=0, lt=1)
        max_sides: int = Field(4, ge=1, le=4)

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        cfg = self.config
        masks = torch.zeros(batch_size, 1, height, width)
        for i in range(batch_size):
            sides = int(torch.randint(1, cfg.max_sides + 1, (1,), generator=generator))
            for side in torch.randperm(4, generator=generator)[:sides].tolist():
                fraction = cfg.min_fraction + (cfg.max_fraction - cfg.min_fraction) * float(
                    torch.rand((), generator=generator)
                )
                extent = height if side in (0, 1) else width
                band = max(1, round(fraction * extent))
                if side == 0:
                    masks[i, :, :band, :] = 1
                elif side == 1:
                    masks[i, :, height - band :, :] = 1
                elif side == 2:
                    masks[i, :, :, :band] = 1
                else:
                    masks[i, :, :, width - band :] = 1
        return masks


@hookimpl
def realfill_register_masking(registry):
    registry.add(BorderBands)
