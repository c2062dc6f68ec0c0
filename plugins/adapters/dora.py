"""``dora``: peft DoRA (``LoraConfig(use_dora=True)``, Liu et al. 2024, weight-decomposed LoRA: a LoRA on the
direction of each weight plus a trained magnitude per output) on the same modules as ``lora``, with its
defaults (rank 8, alpha 16, dropout 0.1). Saved in diffusers' LoRA format with the magnitudes, so a stock
diffusers pipeline reads ``adapter/`` with ``load_lora_weights`` (diffusers 0.42: UNets, the FLUX
transformer and the CLIP text encoders)."""

from __future__ import annotations

from typing import Literal

from realfill.diffusion import DENOISER_GROUP
from realfill.hookspecs import hookimpl
from realfill_plugins.adapters.lora import Lora


class Dora(Lora):
    name = "dora"
    summary = "peft DoRA (LoRA on the direction + trained magnitudes) on the modules lora trains"
    use_dora = True  # the rest of its peft config is lora's

    class Config(Lora.Config):
        name: Literal["dora"] = "dora"

    def lora_layers(self, module, key: str) -> dict:
        layers = super().lora_layers(module, key)
        if key == DENOISER_GROUP:
            return layers
        # transformers' text-encoder loader (inside load_lora_weights) reads a DoRA magnitude under
        # "<module>.lora_magnitude_vector.weight"; peft's state dict names it without ".weight", which the
        # loader then drops with an "unexpected keys" report and leaves the magnitudes untrained
        return {(k + ".weight" if k.endswith("lora_magnitude_vector") else k): v for k, v in layers.items()}


@hookimpl
def realfill_register_adapters(registry):
    registry.add(Dora)
