"""What a backbone's ``load()`` returns: an inpainting diffusion model, as training and sampling see it.

:class:`InpaintModel` is generic over latent vs pixel space and over zero, one or two text encoders:

- ``denoiser`` takes ``noisy (+) mask (+) masked-image latents`` (the 9-channel SD inpainting input; a
  pixel-space model takes ``3 + 1 + 3``) and predicts what ``noise_scheduler.config.prediction_type`` says
  (``epsilon``, ``v_prediction`` or ``sample``);
- ``encode_images`` / ``decode_latents`` map ``[-1, 1]`` images to the space the denoiser works in
  (``latent_factor`` pixels per latent cell: 8 for the SD VAEs, 1 in pixel space);
- ``encode_prompts`` returns the conditioning as a dict of batch-first tensors (empty without a text
  encoder); :func:`select_conditioning` and :func:`cat_conditioning` index and join such dicts;
- ``generate`` samples completions; the default is the generic loop of :mod:`realfill.sampling`;
  :class:`DiffusersInpaintModel` uses its stock diffusers pipeline so that our samples are exactly what
  ``StableDiffusion(XL)InpaintPipeline`` gives for the same weights.

- the training objective (``sample_training_timesteps``, ``add_noise``, ``training_target``, ``loss_weights``,
  ``timestep_loss_weighting``) defaults to DDPM training from ``noise_scheduler``; a flow-matching model
  overrides it (:class:`realfill.flux.FluxInpaintModel`, FLUX.1 Fill, which also packs its latents inside
  ``denoise``).

Training (:mod:`realfill.training`) and sampling need only the members below, and hold no branch on the
backbone's family, so a new backbone (a third-party one, ``scratch-pixel``, the next flow-matching model)
subclasses :class:`InpaintModel` and fills in the abstract methods (docs/plugin_hooks.md: the backbone
contract).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Conditioning = dict[str, torch.Tensor]

#: the parameter-group names adapters and learning rates use (TrainConfig.lr_unet / lr_text_encoder)
DENOISER_GROUP = "unet"
TEXT_ENCODER_GROUP = "text_encoder"


#: query x key positions per head at or under which :class:`SmallMathAttnProcessor` takes the plain matmuls
SMALL_ATTENTION = 64 * 64


class SmallMathAttnProcessor:
    """A diffusers attention processor: SDPA, except where a head attends over at most ``SMALL_ATTENTION``
    query-key pairs, which take diffusers' plain processor (batched matmuls and a softmax).

    For ``train.compile`` on a CPU (``train.attention = "auto"``): inside a compiled graph inductor fuses the
    plain processor's softmax and scaling around its matmuls, while SDPA's flash kernel stays one opaque
    call. One attention layer's compiled forward and backward, 2 threads here: at 64 tokens the plain
    processor ran 2.1x SDPA's speed at head width 16 and 1.1x at 64; at 256 tokens 0.74x and 1.02x; at
    1,024 and 4,096 tokens 0.38-0.73x, and it holds every score matrix (docs/benchmarks.md). The choice is
    made per call from the shapes, so a model's small attentions (tiny-sd2's; SD2's 8x8 mid-block
    self-attention at 512 px) take the matmuls and its large ones SDPA."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        self.sdpa, self.plain = AttnProcessor2_0(), AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        queries = hidden_states.shape[1] if hidden_states.ndim == 3 else math.prod(hidden_states.shape[2:])
        keys = queries if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        processor = self.plain if queries * keys <= SMALL_ATTENTION else self.sdpa
        return processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def attention_processor(kind: str):
    """A new diffusers attention processor for ``set_attention``'s ``kind``: ``sdpa`` (AttnProcessor2_0),
    ``default`` (AttnProcessor, the plain one) or ``small-math`` (:class:`SmallMathAttnProcessor`)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    return {"sdpa": AttnProcessor2_0, "default": AttnProcessor, "small-math": SmallMathAttnProcessor}[kind]()


class InpaintModel:
    """An inpainting diffusion model. Subclasses set the attributes and implement the abstract methods."""

    #: the network trained and called at every step (a UNet for the SD backbones)
    denoiser: nn.Module
    #: the text encoders, in the order their names in :meth:`trainable_modules` follow; empty if none
    text_encoders: list[nn.Module]
    #: the training noise schedule (a diffusers scheduler; ``config.prediction_type`` is honoured)
    noise_scheduler: Any
    #: pixels per latent cell (8 for SD VAEs, 1 in pixel space)
    latent_factor: int = 8
    #: channels of what the denoiser denoises (4 SD latents; 3 in RGB pixel space)
    latent_channels: int = 4
    #: image sides (pixels) must be multiples of this for the denoiser (its downsampling x latent_factor)
    size_multiple: int = 64
    #: the resolution the published weights were trained at (a hint; TrainConfig.resolution decides)
    native_resolution: int = 512
    #: the denoiser's name in its diffusers pipeline (``unet``; ``transformer`` for FLUX): LoRA files use it
    denoiser_name: str = "unet"
    #: the denoiser's LoRA target modules when the adapter does not name them (``adapter.unet_targets``)
    denoiser_lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    # -- what every backbone implements -------------------------------------------------------------

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[-1, 1]`` -> what the denoiser works on (scaled latents, or the pixels)."""
        raise NotImplementedError

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`encode_images`: -> ``[B, 3, H, W]`` in about ``[-1, 1]``."""
        raise NotImplementedError

    def encode_image_pair(self, images: torch.Tensor, masked: torch.Tensor, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_images(images)`` then ``encode_images(masked)``, drawing from ``generator`` in that order
        (what training encodes every step). Override to do both in one pass with the same result."""
        return self.encode_images(images, generator=generator), self.encode_images(masked, generator=generator)

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """The conditioning for each prompt, batch-first tensors (``{}`` for an unconditional model).

        Gradients flow when a text encoder trains; call under ``torch.no_grad()`` otherwise."""
        return {}

    def denoise(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor,
        masked_latents: torch.Tensor,
        cond: Conditioning,
    ) -> torch.Tensor:
        """The denoiser's prediction for ``noisy`` at ``timesteps``, given the latent-size ``mask``
        (1 = fill) and the encoded masked image."""
        raise NotImplementedError

    # -- the training objective (defaults: DDPM-style, from ``noise_scheduler``; flow matching overrides) --
    #
    # The trainer calls these in this order every step, and holds no branch on the backbone's family:
    # ``noise = randn(latents.shape, generator)``, ``t = sample_training_timesteps(B, generator)``, then
    # ``add_noise``, ``denoise``, ``training_target``, and the squared error weighted by ``loss_weights``
    # (and ``timestep_loss_weighting`` where it is not None). Everything lives in the space ``encode_images``
    # returns (unpacked latents, for a model that packs them inside ``denoise``).

    def sample_training_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """The step's timesteps ``[B]`` (on the CPU), drawn from ``generator`` only: uniform integers below
        ``num_train_timesteps``, as DDPM training draws them."""
        return torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The noisy input at ``timesteps`` (the training schedule's forward process)."""
        return self.noise_scheduler.add_noise(latents, noise, timesteps)

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What :meth:`denoise` should predict: the noise, the velocity or the clean sample, as the training
        schedule's ``prediction_type`` says."""
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        if kind == "sample":
            return latents
        from realfill.errors import UserError

        raise UserError(f"backbone: unsupported prediction_type '{kind}' (epsilon, v_prediction or sample)")

    def loss_weights(self, unknown: torch.Tensor) -> torch.Tensor:
        """Per-cell loss weights from the pixel-size unknown region ``[B, 1, H, W]`` (1 = the target's
        unknown pixels): 0 on every cell of the denoiser's output that touches it, 1 elsewhere; broadcast
        against the prediction, and the loss is averaged over the weighted cells and channels."""
        return loss_weights(unknown, self.latent_factor)

    def timestep_loss_weighting(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """A per-item factor on the squared error ``[B, 1, 1, 1]``, or None for none (DDPM training)."""
        return None

    # -- shared behaviour (override where a backbone differs) ----------------------------------------

    def latent_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A pixel-size mask ``[B, 1, H, W]`` at the denoiser's size (nearest, as the SD pipelines do)."""
        if self.latent_factor == 1:
            return mask
        h, w = mask.shape[-2] // self.latent_factor, mask.shape[-1] // self.latent_factor
        return F.interpolate(mask, size=(h, w))

    def trainable_modules(self, include_text_encoders: bool = True) -> dict[str, nn.Module]:
        """Modules an adapter may train, by the name used for files and learning rates:
        ``unet`` (the denoiser), ``text_encoder``, ``text_encoder_2`` (unless ``include_text_encoders``
        is False, as adapters configured not to train them ask)."""
        modules: dict[str, nn.Module] = {DENOISER_GROUP: self.denoiser}
        for i, encoder in enumerate(self.text_encoders if include_text_encoders else []):
            modules[TEXT_ENCODER_GROUP if i == 0 else f"{TEXT_ENCODER_GROUP}_{i + 1}"] = encoder
        return modules

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that never train (a VAE); kept in eval mode without gradients."""
        return []

    def freeze(self) -> None:
        """No parameter trains until an adapter says so."""
        for module in [*self.trainable_modules().values(), *self.frozen_modules()]:
            module.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        for module in self.trainable_modules().values():
            for method in ("enable_gradient_checkpointing", "gradient_checkpointing_enable"):
                if hasattr(module, method):
                    getattr(module, method)()
                    break

    def set_attention(self, kind: str) -> None:
        """``sdpa`` (PyTorch's scaled_dot_product_attention), ``default`` (the plain processor) or
        ``small-math`` (:class:`SmallMathAttnProcessor`)."""

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> InpaintModel:
        for module in [*self.trainable_modules().values(), *self.frozen_modules()]:
            if dtype is None:
                module.to(device)
            else:
                module.to(device=device, dtype=dtype)
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        return self

    def make_scheduler(self, name: str) -> Any:
        """A sampling scheduler (``ddpm``, ``ddim``, ``dpm``, ``euler``; ``auto``: the backbone's own, DDPM
        here as in the paper) from the training schedule's config."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

        classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
                   "euler": EulerDiscreteScheduler, "auto": DDPMScheduler}
        return classes[name].from_config(self.noise_scheduler.config)

    def generate(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        prompt: str,
        *,
        generators: list[torch.Generator],
        scheduler: Any,
        steps: int,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Sample ``len(generators)`` completions of ``image`` (``[1, 3, H, W]`` in ``[-1, 1]``) where
        ``mask`` (``[1, 1, H, W]``, 1 = fill) says; one generator per sample. Returns ``[N, 3, H, W]`` in
        ``[0, 1]``, not yet composited. The default is the generic loop of :mod:`realfill.sampling`."""
        from realfill.sampling import denoise_loop

        return denoise_loop(self, image, mask, prompt, generators=generators, scheduler=scheduler, steps=steps,
                            guidance_scale=guidance_scale)


def loss_weights(unknown: torch.Tensor, cell: int) -> torch.Tensor:
    """1 on ``cell`` x ``cell``-pixel cells whose pixels are all known, 0 on any cell touching the unknown
    region (``unknown``: ``[B, 1, H, W]``, 1 = unknown)."""
    if cell > 1:
        unknown = F.max_pool2d(unknown, kernel_size=cell, stride=cell)
    return 1.0 - unknown


def select_conditioning(cond: Conditioning, index: torch.Tensor) -> Conditioning:
    """The rows ``index`` of every tensor in ``cond``."""
    return {key: value[index] for key, value in cond.items()}


def cat_conditioning(conds: list[Conditioning]) -> Conditioning:
    if not conds or not conds[0]:
        return {}
    return {key: torch.cat([c[key] for c in conds]) for key in conds[0]}


# -------------------------------------------------------------------------------------------------
# The diffusers family: StableDiffusionInpaintPipeline (SD2) and StableDiffusionXLInpaintPipeline (SDXL).
# Training encodes prompts and time ids with the pipeline's own methods, so training and sampling agree.
# -------------------------------------------------------------------------------------------------


class DiffusersInpaintModel(InpaintModel):
    """An SD2- or SDXL-style inpainting pipeline (VAE latents, 9-channel UNet, CLIP text encoder(s))."""

    latent_factor = 8

    def __init__(self, pipeline, *, native_resolution: int = 512):
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.vae = pipeline.vae
        self.denoiser = pipeline.unet
        self.text_encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)) if e is not None]
        self.noise_scheduler = self._training_scheduler(pipeline.scheduler)
        self.is_sdxl = getattr(pipeline.unet.config, "addition_embed_type", None) == "text_time"
        self.latent_factor = pipeline.vae_scale_factor
        self.latent_channels = pipeline.vae.config.latent_channels
        downsamples = len(pipeline.unet.config.block_out_channels) - 1
        self.size_multiple = self.latent_factor * 2**downsamples
        self.native_resolution = native_resolution
        self.device = pipeline.unet.device
        self.dtype = pipeline.unet.dtype
        self._tokens: dict[tuple, Any] = {}

    @staticmethod
    def _training_scheduler(scheduler):
        """DDPM with the checkpoint's schedule. ``clip_sample`` is forced off: a latent model must never clip
        its latents to [-1, 1], and where a checkpoint's scheduler config lacks the key, diffusers' DDPM and
        DDIM default to clipping (the samplers of :meth:`make_scheduler` inherit this config)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(scheduler.config, clip_sample=False)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.vae]

    @property
    def vae_dtype(self) -> torch.dtype:
        """The VAE's own dtype: float32 for an SDXL VAE that overflows in float16 (``force_upcast`` in its
        config; diffusers' SDXL training scripts keep it in float32 "to avoid NaN losses"), else the model's."""
        if self.is_sdxl and self.dtype == torch.float16 and self.vae.config.force_upcast:
            return torch.float32
        return self.dtype

    def _settle_vae(self) -> torch.dtype:
        """Put the VAE back in :attr:`vae_dtype` and return it. The SDXL pipeline's ``_encode_vae_image`` and
        decoding cast an upcast VAE back to float16 after each call, so every encode and decode and every
        :meth:`generate` settles it again (a no-op when it is already there)."""
        wanted = self.vae_dtype
        if next(self.vae.parameters()).dtype != wanted:
            self.vae.to(wanted)
        return wanted

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> DiffusersInpaintModel:
        super().to(device, dtype)
        self._settle_vae()  # with or without a dtype given: a float16 SDXL loaded as such upcasts its VAE too
        return self

    def set_attention(self, kind: str) -> None:
        for module in (self.denoiser, self.vae):
            module.set_attn_processor(attention_processor(kind))

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        vae_dtype = self._settle_vae()
        return self._latents(self.vae.encode(images.to(vae_dtype)).latent_dist, generator)

    def _latents(self, posterior, generator: torch.Generator | None) -> torch.Tensor:
        latents = posterior.sample(generator=generator) if generator is not None else posterior.mode()
        return (latents * self.vae.config.scaling_factor).to(self.dtype)

    def encode_image_pair(self, images, masked, generator=None):
        """One VAE pass over both batches (half the calls into the encoder; each item's moments are what
        its own pass gives), then each posterior sampled in turn, as two :meth:`encode_images` calls do."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self.vae.use_slicing or images.shape != masked.shape:
            return super().encode_image_pair(images, masked, generator)
        vae_dtype = self._settle_vae()
        moments = self.vae.encode(torch.cat([images, masked]).to(vae_dtype)).latent_dist.parameters
        first, second = moments.chunk(2)
        return (self._latents(DiagonalGaussianDistribution(first), generator),
                self._latents(DiagonalGaussianDistribution(second), generator))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae_dtype = self._settle_vae()
        return self.vae.decode(latents.to(vae_dtype) / self.vae.config.scaling_factor).sample

    def _token_ids(self, tokenizer, prompts: list[str]):
        """The pipeline's tokenization (padded and truncated to the tokenizer's length), kept per prompt
        list: training encodes the same two prompts every step."""
        key = (id(tokenizer), tuple(prompts))
        if key not in self._tokens:
            self._tokens[key] = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                                          truncation=True, return_tensors="pt")
        return self._tokens[key]

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """What the pipeline's ``encode_prompt`` gives (no guidance, one image per prompt, no clip skip),
        with the tokens cached: ``tests/test_backbones.py`` checks the two agree bit for bit."""
        pipe = self.pipeline
        if not self.is_sdxl:
            inputs = self._token_ids(pipe.tokenizer, prompts)
            encoder = pipe.text_encoder
            mask = inputs.attention_mask.to(self.device) if getattr(encoder.config, "use_attention_mask", False) else None
            embeds = encoder(inputs.input_ids.to(self.device), attention_mask=mask)[0]
            return {"encoder_hidden_states": embeds.to(dtype=encoder.dtype, device=self.device)}
        pairs = [(t, e) for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
                 if t is not None and e is not None]
        hidden, pooled = [], None
        for tokenizer, encoder in pairs:
            out = encoder(self._token_ids(tokenizer, prompts).input_ids.to(encoder.device), output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:  # the pooled output of the last encoder (with projection)
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        embeds = torch.cat(hidden, dim=-1).to(dtype=pipe.text_encoder_2.dtype, device=self.device)
        return {"encoder_hidden_states": embeds, "text_embeds": pooled.to(self.device)}

    def time_ids(self, height: int, width: int, batch: int) -> torch.Tensor:
        """SDXL's added time ids for a ``height x width`` image, uncropped: what the pipeline uses when
        sampling at that size (original = target size, crop at (0, 0))."""
        size = (height, width)
        projection_dim = self.text_encoders[-1].config.projection_dim
        ids, _ = self.pipeline._get_add_time_ids(
            size, (0, 0), size, 6.0, 2.5, size, (0, 0), size, dtype=self.dtype,
            text_encoder_projection_dim=projection_dim,
        )
        return ids.to(self.device).repeat(batch, 1)

    def denoise(self, noisy, timesteps, mask, masked_latents, cond):
        model_input = torch.cat([noisy, mask.to(noisy.dtype), masked_latents.to(noisy.dtype)], dim=1)
        added = None
        if self.is_sdxl:
            h, w = noisy.shape[-2] * self.latent_factor, noisy.shape[-1] * self.latent_factor
            added = {"text_embeds": cond["text_embeds"], "time_ids": self.time_ids(h, w, noisy.shape[0])}
        return self.denoiser(
            model_input, timesteps, encoder_hidden_states=cond["encoder_hidden_states"],
            added_cond_kwargs=added, return_dict=False,
        )[0]

    def generate(self, image, mask, prompt, *, generators, scheduler, steps, guidance_scale=1.0):
        """The stock pipeline's ``__call__`` (so a stock pipeline with the same weights gives the same
        samples); ``image`` in ``[-1, 1]``, ``mask`` 0/1, both ``[1, C, H, W]``."""
        self.pipeline.scheduler = scheduler
        height, width = image.shape[-2:]
        n = len(generators)
        kwargs: dict[str, Any] = {}
        if self.is_sdxl:
            kwargs["strength"] = 1.0
        out = self.pipeline(
            prompt=[prompt] * n,
            image=((image + 1) / 2).expand(n, -1, -1, -1),  # the pipeline takes tensors in [0, 1]
            mask_image=mask.expand(n, -1, -1, -1),
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=list(generators),
            output_type="pt",
            **kwargs,
        )
        self._settle_vae()  # the SDXL pipeline leaves an upcast VAE in float16
        return out.images.float().clamp(0, 1)


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> ``[1, 3, H, W]`` float in ``[-1, 1]``."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def to_tensor_mask(mask: np.ndarray) -> torch.Tensor:
    """HxW bool -> ``[1, 1, H, W]`` float 0/1."""
    return torch.from_numpy(np.array(mask)).float()[None, None]


# -------------------------------------------------------------------------------------------------
# Finding real weights offline: a local model folder, a single checkpoint file, or the local HF cache.
# -------------------------------------------------------------------------------------------------

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def hub_cache_dir():
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cache_place(model: str) -> str:
    """How an error names the place a model id was looked for."""
    return f"the local model cache {hub_cache_dir()} for '{model}'"


def load_pipeline(pipeline_class, *, what: str, model: str, default_model: str, variant: str | None,
                  dtype: torch.dtype, config: str | None = None, extra: dict | None = None,
                  aliases: tuple[str, ...] = (), how: str | None = None, single_file=None):
    """``pipeline_class`` from ``model``: a diffusers model folder, a single ``.safetensors``/``.ckpt`` file
    (described by ``config``, a diffusers model folder or a model id in the local cache; default
    ``default_model``), or a model id in the local cache. Never downloads. ``aliases``: other hub ids of the
    same weights, also looked for in the cache when ``model`` (or a single file's ``config``) is
    ``default_model`` (a model moved on the hub: SD2 inpainting from stabilityai to sd2-community). Raises
    :class:`MissingWeightsError` naming every place looked and ``how`` to provide the weights (default: `hf
    download` and backbone.model). ``single_file(pipeline_class, what=, path=, config=, dtype=, extra=)``
    loads a single file where the whole-pipeline ``from_single_file`` does not fit (FLUX's transformer file)."""
    import warnings
    from pathlib import Path

    from realfill.errors import MissingWeightsError, UserError

    warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)

    extra = dict(extra or {})
    path = Path(model).expanduser()
    places: list[str] = []
    how = how or (f"Download them once where there is network (`hf download {default_model}` fills the local "
                  f"model cache), or copy a diffusers model folder or a single checkpoint file here and pass "
                  f"--set backbone.model=PATH")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"backbone.model: {path} is a folder without model_index.json; give a diffusers "
                            "model folder (as saved by save_pretrained) or a single checkpoint file")
        try:
            return pipeline_class.from_pretrained(str(path), torch_dtype=dtype, variant=variant,
                                                  local_files_only=True, **extra)
        except (OSError, ValueError) as exc:
            raise UserError(f"backbone.model: {path} could not be loaded as {pipeline_class.__name__} ({exc})") from None
    if path.is_file():
        if single_file is not None:
            return single_file(pipeline_class, what=what, path=path, config=config or default_model, dtype=dtype,
                               extra=extra)
        configs = [config] if config else [default_model, *aliases]
        return _load_single_file(pipeline_class, what=what, path=path, configs=configs, dtype=dtype, extra=extra)
    if path.suffix in (".safetensors", ".ckpt") or model.startswith((".", "/", "~")):
        places.append(f"{path} (no such file or folder)")
    else:
        for model_id in [model, *(aliases if model == default_model else ())]:
            places.append(cache_place(model_id))
            try:
                return pipeline_class.from_pretrained(model_id, torch_dtype=dtype, variant=variant,
                                                      local_files_only=True, **extra)
            except (OSError, ValueError):
                pass
    raise MissingWeightsError(what, places, how)


def single_file_config_folder(config: str) -> tuple[str | None, str]:
    """The local diffusers model folder that ``config`` names (a folder, or a model id whose
    ``model_index.json`` is in the local cache) and the place looked; ``(None, place)`` when there is none.
    Resolving it here, never by a model id, keeps ``from_single_file`` from falling back to a download."""
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    from realfill.errors import UserError

    folder = Path(config).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise UserError(f"backbone.config: {folder} is a folder without model_index.json; give the diffusers "
                            "model folder (as saved by save_pretrained) whose configuration the single file has")
        return str(folder), str(folder)
    if folder.exists():
        raise UserError(f"backbone.config: {folder} is a file; give a diffusers model folder or a model id")
    if config.startswith((".", "/", "~")) or config.count("/") != 1:
        return None, f"{folder} (no such folder)"
    place = cache_place(config)
    cached = try_to_load_from_cache(config, "model_index.json")
    if isinstance(cached, str):
        return str(Path(cached).parent), place
    return None, place


def _load_single_file(pipeline_class, *, what: str, path, configs: list[str], dtype: torch.dtype, extra: dict):
    """``pipeline_class.from_single_file`` on ``path`` with the configuration the first of ``configs`` that
    resolves names, checked: every weight of the UNet, VAE and text encoder(s) must come from the file."""
    from realfill.errors import MissingWeightsError, UserError

    places = []
    for config in configs:
        folder, place = single_file_config_folder(config)
        places.append(place)
        if folder is not None:
            break
    if folder is None:
        how = (f"Set backbone.config to a diffusers model folder of the same architecture (--set "
               f"backbone.config=FOLDER), or fill the local model cache once where there is network (`hf "
               f"download {configs[0]} --include '*.json' --include '*.txt'` fetches only the configuration)")
        raise MissingWeightsError(what, places, how, missing=f"the configuration of the single file {path}")
    try:
        pipeline = pipeline_class.from_single_file(str(path), config=folder, torch_dtype=dtype,
                                                   local_files_only=True, **extra)
    except Exception as exc:  # a broken or foreign file fails in many ways (safetensors, pickle, shapes, keys)
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"backbone.model: {path} could not be loaded as a single {pipeline_class.__name__} file "
                        f"with the configuration in {folder} ({type(exc).__name__}: {reason})") from None
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipeline, name, None)
        absent = [key for key, tensor in module.state_dict().items() if tensor.is_meta] if module is not None else []
        if absent:  # diffusers loads leniently: what the file lacks would stay uninitialised
            raise UserError(f"backbone.model: {path} holds no {name} weights for {', '.join(absent[:3])}"
                            f"{' ...' if len(absent) > 3 else ''} ({len(absent)} missing): is it a checkpoint of "
                            f"the architecture in {folder}?")
    return pipeline
