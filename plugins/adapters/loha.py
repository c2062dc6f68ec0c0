"""``loha``: peft LoHa (``LoHaConfig``, the low-rank Hadamard product of LyCORIS / FedPara: each weight update
is the element-wise product of two rank-r products, rank up to r squared for 2x a LoRA's parameters) on the
modules ``lora`` trains; rank 8, alpha 16, no dropout by default. diffusers' ``load_lora_weights`` reads
LoRA only: saved as peft state dicts (``adapter/<module>_peft.safetensors``), read back with peft."""

from __future__ import annotations

from typing import Literal

from realfill.hookspecs import hookimpl
from realfill_plugins.adapters.peft_family import LycorisSettings, PeftFileAdapter


class Loha(PeftFileAdapter):
    name = "loha"
    summary = "peft LoHa (low-rank Hadamard product) on the modules lora trains; peft files, not diffusers LoRA"

    class Config(LycorisSettings):
        name: Literal["loha"] = "loha"

    def peft_config(self, targets):
        from peft import LoHaConfig  # start-up time

        c = self.config
        return LoHaConfig(r=c.rank, alpha=float(c.alpha), rank_dropout=c.rank_dropout, module_dropout=c.module_dropout,
                          target_modules=list(targets))


@hookimpl
def realfill_register_adapters(registry):
    registry.add(Loha)
