"""``full``: fine-tune every parameter of the denoiser and, optionally, of the text encoder(s). Works on
any backbone (latent or pixel). Saved as ``adapter/<module>.safetensors``, one file per trained module
(``denoiser.safetensors``, ``text_encoder.safetensors``, ...; a run folder from before the denoiser's group was
named so holds ``unet.safetensors``, which loads as well)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file

from realfill.atomic import canonical_safetensors
from realfill.components import Adapter, ComponentConfig, accept_old_spellings
from realfill.diffusion import DENOISER_GROUP, TEXT_ENCODER_GROUP
from realfill.errors import UserError
from realfill.hookspecs import hookimpl


#: the denoiser's file in run folders written before its group was named ``denoiser``
OLD_DENOISER_FILE = "unet.safetensors"


class Full(Adapter):
    name = "full"
    summary = "full fine-tune of the denoiser (UNet), optionally the text encoder(s)"

    class Config(ComponentConfig):
        name: Literal["full"] = "full"
        train_text_encoder: bool = False
        # learning rates for a full fine-tune; None = train.lr_denoiser / train.lr_text_encoder ("lr_unet": the
        # old spelling of lr_denoiser)
        lr_denoiser: float | None = Field(None, gt=0, le=1)  # at most 1, as train.lr_denoiser
        lr_text_encoder: float | None = Field(None, gt=0, le=1)

        @model_validator(mode="before")
        @classmethod
        def _old_spellings(cls, data: Any) -> Any:
            return accept_old_spellings(data, {"lr_unet": "lr_denoiser"})

    def _modules(self, model):
        return model.trainable_modules(include_text_encoders=self.config.train_text_encoder)

    def apply(self, model) -> list[dict]:
        groups: dict[str, dict] = {}
        for key, module in self._modules(model).items():
            module.requires_grad_(True)
            group = DENOISER_GROUP if key == DENOISER_GROUP else TEXT_ENCODER_GROUP
            entry = groups.setdefault(group, {"name": group, "params": []})
            entry["params"].extend(module.parameters())
            lr = self.config.lr_denoiser if group == DENOISER_GROUP else self.config.lr_text_encoder
            if lr is not None:
                entry["lr"] = lr
        return list(groups.values())

    def save(self, model, directory) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for key, module in self._modules(model).items():
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, str(Path(directory) / f"{key}.safetensors"))
            canonical_safetensors(Path(directory) / f"{key}.safetensors")

    def load(self, model, directory) -> None:
        for key, module in self._modules(model).items():
            path = Path(directory) / f"{key}.safetensors"
            if key == DENOISER_GROUP and not path.is_file() and (Path(directory) / OLD_DENOISER_FILE).is_file():
                path = Path(directory) / OLD_DENOISER_FILE
            if not path.is_file():
                raise UserError(f"{path}: no such weights file; train first or point at a run's adapter/")
            missing, unexpected = module.load_state_dict(load_file(str(path)), strict=False)
            if missing or unexpected:
                raise UserError(f"{path}: does not fit backbone module '{key}' "
                                f"({len(missing)} missing, {len(unexpected)} unexpected keys); same backbone?")


@hookimpl
def realfill_register_adapters(registry):
    registry.add(Full)
