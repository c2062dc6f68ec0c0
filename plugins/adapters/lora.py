"""``lora``: peft LoRA on the denoiser's attention projections and on the text encoder(s) (RealFill's recipe:
rank 8, alpha 16, dropout 0.1). The denoiser's targets default to the backbone's (``to_q/k/v``, ``to_out.0``
for the SD UNets; the image and text streams' projections for the FLUX transformer). Saved with the
pipeline's own ``save_lora_weights`` (with the adapter configs as metadata, dropout set to 0), so a stock
diffusers pipeline reads ``adapter/`` with ``load_lora_weights`` and samples exactly what we sample."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from realfill.hookspecs import hookimpl
from realfill_plugins.adapters.peft_family import LORA_WEIGHTS_NAME, LoraFormatAdapter, PeftSettings

WEIGHTS_NAME = LORA_WEIGHTS_NAME


class Lora(LoraFormatAdapter):
    name = "lora"
    summary = "peft LoRA on denoiser attention (UNet to_q/k/v/out; FLUX both streams) and text encoder(s)"

    #: DoRA's switch (``dora`` subclasses this adapter and sets it)
    use_dora = False

    class Config(PeftSettings):
        name: Literal["lora"] = "lora"
        dropout: float = Field(0.1, ge=0, lt=1)

    def peft_config(self, targets):
        from peft import LoraConfig  # start-up time: peft takes seconds, and plugins load for every command

        c = self.config
        # float(): the default alpha is the int 16, a config read back from TOML holds 16.0; the adapter's
        # metadata must not tell a fresh run from its --config repeat
        return LoraConfig(r=c.rank, lora_alpha=float(c.alpha), lora_dropout=c.dropout, init_lora_weights="gaussian",
                          use_dora=self.use_dora, target_modules=list(targets))


@hookimpl
def realfill_register_adapters(registry):
    registry.add(Lora)
