"""``backbone-untuned``: the fill pipeline with ``train.steps = 0``, the backbone without fine-tuning (the
paper's "SD Inpaint" row). A pipeline baseline: it is a run config, not an image operation."""

from __future__ import annotations

from typing import Literal

from realfill.components import Baseline, ComponentConfig
from realfill.hookspecs import hookimpl


class UntunedBackbone(Baseline):
    name = "backbone-untuned"
    summary = "the run's backbone without fine-tuning (the same run with train.steps = 0)"
    kind = "pipeline"
    overrides = ("train.steps=0",)

    class Config(ComponentConfig):
        name: Literal["backbone-untuned"] = "backbone-untuned"


@hookimpl
def realfill_register_baselines(registry):
    registry.add(UntunedBackbone)
