"""What the peft adapters (``lora``, ``dora``, ``loha``, ``lokr``) share: the settings every one of them has,
injecting a peft config into the denoiser and the text encoder(s), and the two file formats they save in.
A helper module: it registers no component (each adapter's own module does).

- :class:`LoraFormatAdapter` (``lora``, ``dora``): the pipeline's own ``save_lora_weights`` with the peft
  configs as metadata, so a stock diffusers pipeline reads ``adapter/`` with ``load_lora_weights``.
- :class:`PeftFileAdapter` (``loha``, ``lokr``): diffusers' ``load_lora_weights`` reads LoRA only, so these
  are saved as peft state dicts, one ``adapter/<module>_peft.safetensors`` per trained module with its peft
  config as the file's metadata, and loaded back with peft (:func:`peft.set_peft_model_state_dict`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from pydantic import Field

from realfill.atomic import canonical_safetensors, save_safetensors
from realfill.components import Adapter, ComponentConfig
from realfill.diffusion import DENOISER_GROUP, TEXT_ENCODER_GROUP
from realfill.errors import UserError

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
#: peft config keys that say where and when, not what: peft fills them in when it injects the layers
BOOKKEEPING = {"base_model_name_or_path", "revision", "inference_mode", "peft_version", "runtime_config"}


class PeftSettings(ComponentConfig):
    """The settings every peft adapter has (RealFill's recipe: rank 8, alpha 16, on the denoiser's attention
    and the text encoder(s))."""

    # rank at most 4096, above the width of any projection here (FLUX's 3072); the scale alpha / rank at
    # most 4096 (alpha 1e308 is inf in float32, and 0 * inf, the untrained adapter's output, a nan)
    rank: int = Field(8, ge=1, le=4096)
    alpha: float = Field(16, gt=0, le=4096)
    # the denoiser's target modules; None: the backbone's (InpaintModel.denoiser_lora_targets)
    unet_targets: list[str] | None = None
    train_text_encoder: bool = True
    text_encoder_targets: list[str] = ["q_proj", "k_proj", "v_proj", "out_proj"]


class LycorisSettings(PeftSettings):
    """LoHa's and LoKr's settings beyond every peft adapter's: their dropouts (none by default)."""

    # the chance of dropping each rank (row) of the update, and the whole module's update, in a step
    rank_dropout: float = Field(0.0, ge=0, lt=1)
    module_dropout: float = Field(0.0, ge=0, lt=1)


def sorted_sets(config: dict) -> dict:
    """A peft config as a dict with its sets sorted: peft keeps target_modules as a set, whose order changes
    with the process's string hashing; sorted, a file's bytes are the same in every identical seeded run."""
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.items()}


class PeftAdapter(Adapter):
    """A peft adapter on the denoiser and, with ``train_text_encoder``, the text encoder(s). Subclasses say
    :meth:`peft_config` (the peft config for a module's target names) and how they save and load."""

    def peft_config(self, targets: list[str]):
        raise NotImplementedError

    @classmethod
    def check_backbone(cls, backbone) -> str | None:
        """Why ``backbone`` (a class) cannot train this adapter, or None: peft adapters inject into and save
        through a diffusers pipeline (checked when the config is, before the run folder is made)."""
        if not backbone.diffusers_pipeline:
            return f"adapter '{cls.name}' saves through a diffusers pipeline, which backbone '{backbone.name}' has " \
                   "not; use --adapter full"
        return None

    def require_pipeline(self, model):
        pipeline = getattr(model, "pipeline", None)
        if pipeline is None or not hasattr(pipeline, "save_lora_weights"):
            raise UserError(f"adapter '{self.name}': backbone '{type(model).__name__}' is not a diffusers pipeline; "
                            "use --adapter full")
        return pipeline

    def trained_modules(self, model) -> dict:
        return model.trainable_modules(include_text_encoders=self.config.train_text_encoder)

    def targets(self, model, key: str) -> list[str]:
        if key != DENOISER_GROUP:
            return list(self.config.text_encoder_targets)
        targets = self.config.unet_targets
        return list(targets if targets is not None else model.denoiser_lora_targets)

    @staticmethod
    def file_prefix(model, key: str) -> str:
        """The pipeline's name for a trained module (``unet`` or ``transformer``, ``text_encoder``...)."""
        return model.denoiser_name if key == DENOISER_GROUP else key

    def inject(self, model) -> None:
        """Add this adapter's peft layers to every trained module (one line naming the key on a bad target)."""
        for key, module in self.trained_modules(model).items():
            try:
                with warnings.catch_warnings():
                    # a quantized base (backbone.quantize): peft warns that merge() would fail; we never merge
                    warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")
                    module.add_adapter(self.peft_config(self.targets(model, key)))
            except ValueError as exc:  # peft's "Target modules ... not found" (NoMatchingPeftModuleError)
                field = "unet_targets" if key == DENOISER_GROUP else "text_encoder_targets"
                raise UserError(f"adapter.{field}: {exc}") from None

    def apply(self, model) -> list[dict]:
        self.require_pipeline(model)
        self.inject(model)
        groups: list[dict] = []
        for key, module in self.trained_modules(model).items():
            params = [p for p in module.parameters() if p.requires_grad]
            group = DENOISER_GROUP if key == DENOISER_GROUP else TEXT_ENCODER_GROUP
            if groups and groups[-1]["name"] == group:
                groups[-1]["params"].extend(params)
            else:
                groups.append({"name": group, "params": params})
        return groups


class LoraFormatAdapter(PeftAdapter):
    """Saved in diffusers' LoRA format (``pytorch_lora_weights.safetensors``), read by ``load_lora_weights``."""

    def lora_layers(self, module, key: str) -> dict:
        from diffusers.utils import convert_state_dict_to_diffusers  # start-up time: peft and diffusers take seconds
        from peft.utils import get_peft_model_state_dict

        return convert_state_dict_to_diffusers(get_peft_model_state_dict(module))

    def save(self, model, directory) -> None:
        pipeline = self.require_pipeline(model)
        layers, metadata = {}, {}
        for key, module in self.trained_modules(model).items():
            prefix = self.file_prefix(model, key)
            layers[f"{prefix}_lora_layers"] = self.lora_layers(module, key)
            # dropout is for training only; saved as 0 because diffusers' load_lora_weights leaves the new
            # UNet LoRA layers in train mode, where a saved dropout would randomise every stock sample
            config = {**module.peft_config["default"].to_dict(), "lora_dropout": 0.0}
            metadata[f"{prefix}_lora_adapter_metadata"] = sorted_sets(config)
        Path(directory).mkdir(parents=True, exist_ok=True)
        type(pipeline).save_lora_weights(directory, **layers, **metadata, weight_name=LORA_WEIGHTS_NAME)
        canonical_safetensors(Path(directory) / LORA_WEIGHTS_NAME)  # the same run, the same bytes

    def load(self, model, directory) -> None:
        path = Path(directory) / LORA_WEIGHTS_NAME
        if not path.is_file():
            raise UserError(f"{path}: no {self.name} weights here; train first (realfill train) or point at a "
                            "run's adapter/")
        self.require_pipeline(model).load_lora_weights(str(directory), weight_name=LORA_WEIGHTS_NAME)


class PeftFileAdapter(PeftAdapter):
    """Saved as peft state dicts (``<module>_peft.safetensors``, the peft config in the file's metadata)."""

    @staticmethod
    def weights_path(directory, key: str) -> Path:
        return Path(directory) / f"{key}_peft.safetensors"

    def save(self, model, directory) -> None:
        from peft.utils import get_peft_model_state_dict  # start-up time

        Path(directory).mkdir(parents=True, exist_ok=True)
        for key, module in self.trained_modules(model).items():
            state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(module).items()}
            config = sorted_sets(module.peft_config["default"].to_dict())
            path = self.weights_path(directory, key)
            save_safetensors(state, path, metadata={"peft_config": json.dumps(config, sort_keys=True, default=str),
                                                    "adapter": self.name})
            canonical_safetensors(path)

    def load(self, model, directory) -> None:
        from peft.utils import set_peft_model_state_dict  # start-up time
        from safetensors import safe_open

        self.require_pipeline(model)
        for key, module in self.trained_modules(model).items():
            path = self.weights_path(directory, key)
            if not path.is_file():
                raise UserError(f"{path}: no {self.name} weights here; train first (realfill train) or point at a "
                                "run's adapter/")
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
                saved = metadata.get("adapter")
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
            if saved != self.name:
                raise UserError(f"{path}: holds adapter '{saved}', not '{self.name}'; sample with the run's config")
            wanted = sorted_sets(self.peft_config(self.targets(model, key)).to_dict())
            found = json.loads(metadata.get("peft_config", "{}"))
            differ = sorted(k for k in wanted if k not in BOOKKEEPING and json.dumps(wanted[k], default=str) != json.dumps(found.get(k), default=str))
            if differ:  # the same shapes may hold another rank's or alpha's update (LoKr): the settings must agree
                raise UserError(f"{path}: does not fit backbone module '{key}' (saved with other adapter settings: "
                                f"{', '.join(differ)}); sample with the run's config")
            if "default" not in getattr(module, "peft_config", {}):
                module.add_adapter(self.peft_config(self.targets(model, key)))
            try:
                result = set_peft_model_state_dict(module, state)
            except RuntimeError as exc:  # a tensor of another shape: another rank, another backbone
                raise UserError(f"{path}: does not fit backbone module '{key}' ({str(exc).splitlines()[-1].strip()}); "
                                "same backbone and adapter settings?") from None
            if result.unexpected_keys:
                raise UserError(f"{path}: does not fit backbone module '{key}' ({len(result.unexpected_keys)} "
                                "unexpected keys); same backbone and adapter settings?")
            module.requires_grad_(False)
