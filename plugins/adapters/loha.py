"""``loha``: peft LoHa (``LoHaConfig``, the low-rank Hadamard product of LyCORIS / FedPara: each weight update
is the element-wise product of two rank-r products, rank up to r squared for 2x a LoRA's parameters) on the
modules ``lora`` trains; rank 8, alpha 16, no dropout by default. diffusers' ``load_lora_weights`` reads
LoRA only: saved as peft state dicts (``adapter/<module>_peft.safetensors``), read back with peft."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from realfill.hookspecs import hookimpl
from realfill_plugins.adapters.peft_family import PeftFileAdapter, PeftSettings


class Loha(PeftFileAdapter):
    name = "loha"
    summary = "peft LoHa (low-rank Hadamard product) on the modules lora trains; peft files, not diffusers LoRA"

    class Config(PeftSettings):
        name: Literal["loha"] = "loha"
        # the chance of dropping each rank (row) of the update, and the whole module's update, in a step
        rank_dropout: float = Field(0.0, ge=0, lt=1)
        module_dropout: float = Field(0.0, ge=0, lt=1)

    def peft_config(self, targets):
        from peft import LoHaConfig  # start-up time

        c = self.config
        return LoHaConfig(r=c.rank, alpha=float(c.alpha), rank_dropout=c.rank_dropout, module_dropout=c.module_dropout,
                          target_modules=list(targets))


@hookimpl
def realfill_register_adapters(registry):
    registry.add(Loha)
