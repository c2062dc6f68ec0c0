"""``lama-boxes``: the paper's training masks, the union of 1-30 random rectangles, each side 3%-25% of the
image, inverted with probability 0.5 (LaMa-style; RealFill Sec. 4). Every item, reference or target, gets
a fresh mask; the target's unknown region is excluded by the loss, not by the mask."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from realfill.components import ComponentConfig, MaskingStrategy
from realfill.hookspecs import hookimpl


class BoxesConfig(ComponentConfig):
    min_boxes: int = Field(1, ge=1)
    max_boxes: int = Field(30, ge=1)
    min_side: float = Field(0.03, gt=0, le=1)  # fraction of the image side
    max_side: float = Field(0.25, gt=0, le=1)
    invert_prob: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_boxes > self.max_boxes:
            raise ValueError(f"min_boxes ({self.min_boxes}) is more than max_boxes ({self.max_boxes})")
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) is more than max_side ({self.max_side})")
        return self


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def box_masks(config: BoxesConfig, batch_size: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``[B, 1, H, W]`` float 0/1: per item, the union of random boxes, inverted with ``invert_prob``."""
    masks = torch.zeros(batch_size, 1, height, width)
    ys, xs = torch.arange(height)[:, None], torch.arange(width)[None, :]
    for b in range(batch_size):
        n = int(torch.randint(config.min_boxes, config.max_boxes + 1, (1,), generator=generator))
        hs = (_uniform(generator, n, config.min_side, config.max_side) * height).round().clamp(min=1)
        ws = (_uniform(generator, n, config.min_side, config.max_side) * width).round().clamp(min=1)
        y0 = (torch.rand(n, generator=generator) * (height - hs + 1)).floor()
        x0 = (torch.rand(n, generator=generator) * (width - ws + 1)).floor()
        inside = ((ys[None] >= y0[:, None, None]) & (ys[None] < (y0 + hs)[:, None, None])
                  & (xs[None] >= x0[:, None, None]) & (xs[None] < (x0 + ws)[:, None, None]))
        masks[b, 0] = inside.any(0).float()
    invert = torch.rand(batch_size, generator=generator) < config.invert_prob
    masks[invert] = 1.0 - masks[invert]
    return masks


class LamaBoxes(MaskingStrategy):
    name = "lama-boxes"
    summary = "the paper's masks: union of 1-30 random boxes (sides 3-25%), inverted with p=0.5"

    class Config(BoxesConfig):
        name: Literal["lama-boxes"] = "lama-boxes"

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        return box_masks(self.config, batch_size, height, width, generator)


@hookimpl
def realfill_register_masking(registry):
    registry.add(LamaBoxes)
