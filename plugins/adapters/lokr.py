"""``lokr``: peft LoKr (``LoKrConfig``, the Kronecker-product update of LyCORIS: each weight update is
``w1 (x) (w2a w2b)``, far fewer parameters than a LoRA of the same rank) on the modules ``lora`` trains;
rank 8, alpha 16, no dropout by default. diffusers' ``load_lora_weights`` reads LoRA only: saved as peft
state dicts (``adapter/<module>_peft.safetensors``), read back with peft."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from realfill.hookspecs import hookimpl
from realfill_plugins.adapters.peft_family import LycorisSettings, PeftFileAdapter


class Lokr(PeftFileAdapter):
    name = "lokr"
    summary = "peft LoKr (Kronecker-product update) on the modules lora trains; peft files, not diffusers LoRA"

    class Config(LycorisSettings):
        name: Literal["lokr"] = "lokr"
        # also factor w1 into two low-rank matrices (fewer parameters still)
        decompose_both: bool = False
        # the factor the Kronecker product splits each side by; -1: as near the square root as divides
        decompose_factor: Literal[-1] | Annotated[int, Field(ge=1, le=4096)] = -1

    def peft_config(self, targets):
        from peft import LoKrConfig  # start-up time

        c = self.config
        return LoKrConfig(r=c.rank, alpha=float(c.alpha), rank_dropout=c.rank_dropout, module_dropout=c.module_dropout,
                          decompose_both=c.decompose_both, decompose_factor=c.decompose_factor,
                          target_modules=list(targets))


@hookimpl
def realfill_register_adapters(registry):
    registry.add(Lokr)
