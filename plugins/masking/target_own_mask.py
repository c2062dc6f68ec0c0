"""``target-own-mask``: references get the paper's random boxes; the target always trains with its own
mask (the region to fill), so the model practises exactly the completion it will be asked for. One public
RealFill fork found this better than random masks on the target."""

from __future__ import annotations

from typing import Literal

from realfill.components import MaskingStrategy
from realfill.hookspecs import hookimpl
from realfill_plugins.masking.lama_boxes import BoxesConfig, box_masks


class TargetOwnMask(MaskingStrategy):
    name = "target-own-mask"
    summary = "references: random boxes (as lama-boxes); the target: always its own mask"

    class Config(BoxesConfig):
        name: Literal["target-own-mask"] = "target-own-mask"

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        masks = box_masks(self.config, batch_size, height, width, generator)
        masks[is_target] = target_masks[is_target].float()
        return masks


@hookimpl
def realfill_register_masking(registry):
    registry.add(TargetOwnMask)
