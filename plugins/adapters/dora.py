"""``dora``: peft DoRA (``LoraConfig(use_dora=True)``, Liu et al. 2024, weight-decomposed LoRA: a LoRA on the
direction of each weight plus a trained magnitude per output) on the same modules as ``lora``, with its
defaults (rank 8, alpha 16, dropout 0.1). Saved in diffusers' LoRA format with the magnitudes, so a stock
diffusers pipeline reads ``adapter/`` with ``load_lora_weights`` (diffusers 0.42: UNets, the FLUX
transformer and the CLIP text encoders)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from realfill.diffusion import DENOISER_GROUP
from realfill.hookspecs import hookimpl
from realfill_plugins.adapters.peft_family import LoraFormatAdapter, PeftSettings


class Dora(LoraFormatAdapter):
    name = "dora"
    summary = "peft DoRA (LoRA on the direction + trained magnitudes) on the modules lora trains"

    class Config(PeftSettings):
        name: Literal["dora"] = "dora"
        dropout: float = Field(0.1, ge=0, lt=1)

    def peft_config(self, targets):
        from peft import LoraConfig  # start-up time

        c = self.config
        return LoraConfig(r=c.rank, lora_alpha=float(c.alpha), lora_dropout=c.dropout, init_lora_weights="gaussian",
                          use_dora=True, target_modules=list(targets))

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
