"""A test plugin file that adds a component and then raises inside its registration hook."""

from typing import Literal

import torch

from realfill import hookimpl
from realfill.components import ComponentConfig, MaskingStrategy


class HalfRegistered(MaskingStrategy):
    name = "half-registered"
    summary = "registered by a plugin whose hook then raises"

    class Config(ComponentConfig):
        name: Literal["half-registered"] = "half-registered"

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        return torch.ones(batch_size, 1, height, width)


@hookimpl
def realfill_register_masking(registry):
    registry.add(HalfRegistered)
    raise RuntimeError("boom while registering")
