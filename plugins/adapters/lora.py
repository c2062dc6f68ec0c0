"""``lora``: peft LoRA on the denoiser's attention projections and on the text encoder(s) (RealFill's recipe:
rank 8, alpha 16, dropout 0.1). The denoiser's targets default to the backbone's (``to_q/k/v``, ``to_out.0``
for the SD UNets; the image and text streams' projections for the FLUX transformer). Saved with the
pipeline's own ``save_lora_weights`` (with the adapter configs as metadata, dropout set to 0), so a stock
diffusers pipeline reads ``adapter/`` with ``load_lora_weights`` and samples exactly what we sample."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field

from realfill.atomic import canonical_safetensors
from realfill.components import Adapter, ComponentConfig
from realfill.diffusion import DENOISER_GROUP, TEXT_ENCODER_GROUP
from realfill.errors import UserError
from realfill.hookspecs import hookimpl

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


class Lora(Adapter):
    name = "lora"
    summary = "peft LoRA on denoiser attention (UNet to_q/k/v/out; FLUX both streams) and text encoder(s)"

    class Config(ComponentConfig):
        name: Literal["lora"] = "lora"
        # rank at most 4096, above the width of any projection here (FLUX's 3072); the scale alpha / rank at
        # most 4096 (alpha 1e308 is inf in float32, and 0 * inf, the untrained adapter's output, a nan)
        rank: int = Field(8, ge=1, le=4096)
        alpha: float = Field(16, gt=0, le=4096)
        dropout: float = Field(0.1, ge=0, lt=1)
        # the denoiser's target modules; None: the backbone's (InpaintModel.denoiser_lora_targets)
        unet_targets: list[str] | None = None
        train_text_encoder: bool = True
        text_encoder_targets: list[str] = ["q_proj", "k_proj", "v_proj", "out_proj"]

    def _lora_config(self, targets):
        from peft import LoraConfig  # start-up time: peft takes seconds, and plugins load for every command

        c = self.config
        # float(): the default alpha is the int 16, a config read back from TOML holds 16.0; the adapter's
        # metadata must not tell a fresh run from its --config repeat
        return LoraConfig(r=c.rank, lora_alpha=float(c.alpha), lora_dropout=c.dropout, init_lora_weights="gaussian",
                          target_modules=list(targets))

    @classmethod
    def check_backbone(cls, backbone) -> str | None:
        if not backbone.diffusers_pipeline:
            return f"adapter 'lora' saves through a diffusers pipeline, which backbone '{backbone.name}' has not; " \
                   "use --adapter full"
        return None

    @staticmethod
    def _pipeline(model):
        pipeline = getattr(model, "pipeline", None)
        if pipeline is None or not hasattr(pipeline, "save_lora_weights"):
            raise UserError(
                f"adapter 'lora': backbone '{type(model).__name__}' is not a diffusers pipeline; use --adapter full"
            )
        return pipeline

    def _modules(self, model):
        return model.trainable_modules(include_text_encoders=self.config.train_text_encoder)

    def apply(self, model) -> list[dict]:
        self._pipeline(model)
        groups = []
        for key, module in self._modules(model).items():
            targets = self._denoiser_targets(model) if key == DENOISER_GROUP else self.config.text_encoder_targets
            try:
                with warnings.catch_warnings():
                    # a quantized base (backbone.quantize): peft warns that merge() would fail; we never merge
                    warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")
                    module.add_adapter(self._lora_config(targets))
            except ValueError as exc:
                raise UserError(f"adapter.{'unet' if key == DENOISER_GROUP else 'text_encoder'}_targets: {exc}") from None
            params = [p for p in module.parameters() if p.requires_grad]
            group = DENOISER_GROUP if key == DENOISER_GROUP else TEXT_ENCODER_GROUP
            if groups and groups[-1]["name"] == group:
                groups[-1]["params"].extend(params)
            else:
                groups.append({"name": group, "params": params})
        return groups

    def _denoiser_targets(self, model) -> list[str]:
        targets = self.config.unet_targets
        return list(targets if targets is not None else model.denoiser_lora_targets)

    @staticmethod
    def _file_prefix(model, key: str) -> str:
        """The pipeline's name for a trained module (``unet`` or ``transformer``, ``text_encoder``...)."""
        return model.denoiser_name if key == DENOISER_GROUP else key

    def save(self, model, directory) -> None:
        from diffusers.utils import convert_state_dict_to_diffusers  # start-up time, as peft's
        from peft.utils import get_peft_model_state_dict  # start-up time

        pipeline = self._pipeline(model)
        layers, metadata = {}, {}
        for key, module in self._modules(model).items():
            prefix = self._file_prefix(model, key)
            layers[f"{prefix}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
            # dropout is for training only; saved as 0 because diffusers' load_lora_weights leaves the new
            # UNet LoRA layers in train mode, where a saved dropout would randomise every stock sample
            config = {**module.peft_config["default"].to_dict(), "lora_dropout": 0.0}
            # peft keeps target_modules as a set, whose order changes with the process's string hashing:
            # sorted, the file's bytes are the same in every identical seeded run
            metadata[f"{prefix}_lora_adapter_metadata"] = {
                k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.items()}
        Path(directory).mkdir(parents=True, exist_ok=True)
        type(pipeline).save_lora_weights(directory, **layers, **metadata, weight_name=WEIGHTS_NAME)
        canonical_safetensors(Path(directory) / WEIGHTS_NAME)  # the same run, the same bytes

    def load(self, model, directory) -> None:
        path = Path(directory) / WEIGHTS_NAME
        if not path.is_file():
            raise UserError(f"{path}: no LoRA weights here; train first (realfill train) or point at a run's adapter/")
        self._pipeline(model).load_lora_weights(str(directory), weight_name=WEIGHTS_NAME)


@hookimpl
def realfill_register_adapters(registry):
    registry.add(Lora)
