"""The FLUX.1 Fill family (diffusers ``FluxFillPipeline``) as an :class:`~realfill.diffusion.InpaintModel`;
the backbones ``flux-fill`` and ``tiny-flux`` load a pipeline and wrap it here (:meth:`FluxBackbone.wrap`).

A rectified-flow transformer over 2x2-packed 16-channel latents (VAE scaling and shift factors), CLIP pooled
+ T5 sequence conditioning and a guidance embedding. What differs from the SD family is said here, through
the same methods the trainer and sampler call for every backbone:

- training follows diffusers' FLUX scripts (``train_dreambooth_lora_flux.py``, ``examples/flux-fill``):
  ``u`` from ``compute_density_for_timestep_sampling`` (``weighting_scheme``, logit-normal by default),
  ``t = scheduler.timesteps[int(u * 1000)]``, ``x_t = (1 - sigma) x0 + sigma noise``, the target
  ``noise - x0``, ``compute_loss_weighting_for_sd3`` on the error, the guidance embedding at ``guidance``;
- :meth:`denoise` packs the noisy latents, the masked-image latents and the mask exactly as
  ``FluxFillPipeline.prepare_mask_latents`` does (the pixel mask's 8x8 cells as 64 channels, then 2x2
  tokens) and unpacks the prediction, so the trainer works on unpacked latents as for SD;
- :meth:`loss_weights` is 0 on every packed token (16x16 pixels) touching the target's unknown region;
- :meth:`generate` is the stock pipeline's ``__call__`` (flow-matching Euler with its resolution-dependent
  shift), so a stock ``FluxFillPipeline`` with our LoRA samples exactly what we sample.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from realfill.attention import attention_processor
from realfill.components import GUIDANCE_MAX, Backbone, ComponentConfig, SamplingDefaults
from realfill.diffusion import InpaintModel, loss_weights
from realfill.errors import UserError

#: the LoRA targets of the FLUX transformer: attention projections of the image stream (to_q/k/v, to_out.0;
#: the single-stream blocks' to_q/k/v too) and of the text stream (add_q/k/v_proj, to_add_out)
FLUX_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
WEIGHTING_SCHEMES = ("logit_normal", "mode", "sigma_sqrt", "cosmap", "none")
#: ``backbone.quantize``: the frozen transformer's linear weights as stored (none: the backbone's dtype)
QUANTIZATIONS = ("none", "int8-weight-only")
QUANT_EXTRA = "pip install 'realfill[quant]' (torchao>=0.12)"


def quantize_transformer(transformer: nn.Module, kind: str, device: Any = None) -> nn.Module:
    """The transformer's ``nn.Linear`` weights quantized in place (``int8-weight-only``: torchao's
    ``Int8WeightOnlyConfig``, int8 weights with a scale per output row, computed in the weights' former
    dtype), each moved to ``device`` first, one layer at a time, so a 12B bf16 transformer (22 GiB) reaches a
    24 GB GPU as int8 (11 GiB) without ever being there whole. Before any adapter: peft wraps a quantized
    linear as ``TorchaoLoraLinear`` (the LoRA in float32 beside the frozen int8 base), which trains, saves
    and loads as any LoRA. ``none`` changes nothing."""
    if kind == "none":
        return transformer
    if kind not in QUANTIZATIONS:
        raise UserError(f"backbone.quantize: '{kind}'; one of {', '.join(QUANTIZATIONS)}")
    quiet = logging.getLogger("torchao")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its CUDA-only kernels announce, at import, that a CPU build lacks them
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise UserError(f"backbone.quantize='{kind}' needs torchao, which is not installed: {QUANT_EXTRA}") from None
    finally:
        quiet.setLevel(level)
    quantize_(transformer, Int8WeightOnlyConfig(), device=device)
    return transformer


class FlowMatchingSettings(ComponentConfig):
    """The rectified-flow training settings of a FLUX backbone (defaults: diffusers' FLUX scripts), and how
    its frozen transformer is stored."""

    # the frozen transformer's linear weights: "none" (in backbone.dtype) or "int8-weight-only" (torchao,
    # the `quant` extra: half of bf16's bytes, the LoRA beside it in float32; the paper-flux-24gb preset)
    quantize: Literal["none", "int8-weight-only"] = "none"

    # how timesteps are drawn and errors weighted (compute_density_for_timestep_sampling /
    # compute_loss_weighting_for_sd3): logit_normal (default), mode, sigma_sqrt, cosmap, none (uniform)
    weighting_scheme: Literal["logit_normal", "mode", "sigma_sqrt", "cosmap", "none"] = "logit_normal"
    # the logit-normal's mean and spread: at +-10 sigmoid(u) is already 0 or 1 to 4 decimals (every draw at
    # one end of the schedule), so wider ones change nothing but can overflow
    logit_mean: float = Field(0.0, ge=-10, le=10)
    logit_std: float = Field(1.0, gt=0, le=10)
    # "mode": u = 1 - u - mode_scale * (cos(pi u / 2)^2 - 1 + u) stays in [0, 1] (an index the schedule has)
    # for every u only for mode_scale in [-1, 7.2] (SD3's default 1.29); outside it a negative index is read
    mode_scale: float = Field(1.29, ge=-1, le=7.2)
    # the guidance embedding in training (examples/flux-fill trains Fill with --guidance_scale=1); at most
    # GUIDANCE_MAX, as sample.guidance_scale (1e308 is inf in the embedding: a nan loss)
    guidance: float = Field(1.0, ge=0, le=GUIDANCE_MAX)


class FluxBackbone(Backbone):
    """The base of the family's backbones: their sampling defaults, and the model from their config (a
    :class:`FlowMatchingSettings` with ``max_sequence_length``)."""

    #: FLUX.1 Fill's own sampling: flow-matching Euler (the model's default_scheduler), 50 steps, guidance 30
    sampling = SamplingDefaults(steps=50, guidance_scale=30.0)
    #: a training crop is packed into 2x2 tokens of 8x latents: its side a multiple of 16 pixels
    resolution_step = 16

    def quantize(self, model: FluxInpaintModel, device: Any = None) -> FluxInpaintModel:
        """``backbone.quantize`` applied to the loaded model's transformer (after any dtype cast: a quantized
        weight keeps the dtype it had), its layers moved to ``device`` as they are quantized."""
        quantize_transformer(model.denoiser, self.config.quantize, device)
        return model

    def wrap(self, pipeline) -> FluxInpaintModel:
        """``pipeline`` as an InpaintModel with this backbone's training settings."""
        c = self.config
        return FluxInpaintModel(pipeline, weighting_scheme=c.weighting_scheme, logit_mean=c.logit_mean,
                                logit_std=c.logit_std, mode_scale=c.mode_scale, guidance=c.guidance,
                                max_sequence_length=c.max_sequence_length)


class FluxInpaintModel(InpaintModel):
    """A ``FluxFillPipeline``: VAE latents (16 channels, shift and scale), a Fill transformer (384 input
    channels: 64 noisy + 64 masked-image + 256 mask per token), CLIP (trainable) and T5 (frozen)."""

    denoiser_name = "transformer"
    denoiser_lora_targets = FLUX_LORA_TARGETS
    default_scheduler = "euler"  # flow-matching Euler: the only sampler of a flow-matching model here

    def __init__(self, pipeline, *, weighting_scheme: str = "logit_normal", logit_mean: float = 0.0,
                 logit_std: float = 1.0, mode_scale: float = 1.29, guidance: float = 1.0,
                 max_sequence_length: int = 512):
        # diffusers on use, here and below: the CLI's start-up imports every backbone module without it
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.vae = pipeline.vae
        self.denoiser = pipeline.transformer
        self.text_encoders = [pipeline.text_encoder]  # CLIP (pooled); LoRA may train it
        self.t5 = pipeline.text_encoder_2  # frozen, as in the FLUX scripts
        self.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)
        self.latent_factor = pipeline.vae_scale_factor
        self.latent_channels = pipeline.vae.config.latent_channels
        self.size_multiple = self.latent_factor * 2  # 2x2 packing
        if weighting_scheme not in WEIGHTING_SCHEMES:
            raise UserError(f"backbone.weighting_scheme: '{weighting_scheme}'; one of {', '.join(WEIGHTING_SCHEMES)}")
        self.weighting_scheme, self.logit_mean, self.logit_std = weighting_scheme, logit_mean, logit_std
        self.mode_scale, self.guidance, self.max_sequence_length = mode_scale, guidance, max_sequence_length
        self.device = pipeline.transformer.device
        self.dtype = pipeline.transformer.dtype
        self._tokens: dict[tuple, Any] = {}
        self._t5_cache: dict[tuple, torch.Tensor] = {}
        self._ids: dict[tuple, torch.Tensor] = {}
        self._schedules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def frozen_modules(self) -> list[nn.Module]:
        return [self.vae, self.t5]

    def text_encoder_modules(self) -> list[nn.Module]:
        return [*self.text_encoders, self.t5]

    def set_attention(self, kind: str) -> None:
        """The VAE's attention takes ``kind``; the transformer keeps its FLUX processor (rotary embeddings,
        joint text-image attention), which has no plain-matmul variant. That processor calls PyTorch's SDPA
        through diffusers' attention dispatch (its ``native`` backend, unless ``DIFFUSERS_ATTN_BACKEND`` says
        otherwise), so ``train.attention``'s SDPA pin reaches it (tests/test_flux.py counts the kernels)."""
        self.vae.set_attn_processor(attention_processor(kind))

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> FluxInpaintModel:
        super().to(device, dtype)
        self._t5_cache.clear()
        return self

    # -- images ---------------------------------------------------------------------------------------

    def _latents(self, posterior, generator):
        latents = posterior.sample(generator=generator) if generator is not None else posterior.mode()
        config = self.vae.config
        return ((latents - config.shift_factor) * config.scaling_factor).to(self.dtype)

    def encode_images(self, images, generator=None):
        vae_dtype = next(self.vae.parameters()).dtype
        return self._latents(self.vae.encode(images.to(vae_dtype)).latent_dist, generator)

    def encode_image_pair(self, images, masked, generator=None):
        """One VAE pass over both batches, each posterior then sampled in turn (as two encodes draw)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self.vae.use_slicing or images.shape != masked.shape:
            return super().encode_image_pair(images, masked, generator)
        vae_dtype = next(self.vae.parameters()).dtype
        first, second = self.vae.encode(torch.cat([images, masked]).to(vae_dtype)).latent_dist.parameters.chunk(2)
        return (self._latents(DiagonalGaussianDistribution(first), generator),
                self._latents(DiagonalGaussianDistribution(second), generator))

    def decode_latents(self, latents):
        vae_dtype = next(self.vae.parameters()).dtype
        config = self.vae.config
        return self.vae.decode((latents / config.scaling_factor + config.shift_factor).to(vae_dtype)).sample

    def latent_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The pixel mask ``[B, 1, H, W]`` as ``FluxFillPipeline.prepare_mask_latents`` lays it out before
        packing: each latent cell's ``f x f`` pixels as ``f * f`` channels, ``[B, f*f, H/f, W/f]``."""
        b, _, height, width = mask.shape
        f = self.latent_factor
        h, w = height // f, width // f
        return mask[:, 0].reshape(b, h, f, w, f).permute(0, 2, 4, 1, 3).reshape(b, f * f, h, w)

    # -- text -----------------------------------------------------------------------------------------

    def _token_ids(self, tokenizer, prompts: list[str], length: int):
        key = (id(tokenizer), tuple(prompts), length)
        if key not in self._tokens:
            self._tokens[key] = tokenizer(prompts, padding="max_length", max_length=length, truncation=True,
                                          return_length=False, return_overflowing_tokens=False,
                                          return_tensors="pt").input_ids
        return self._tokens[key]

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """What the pipeline's ``encode_prompt`` gives: CLIP's pooled output (``pooled_projections``;
        gradients flow when CLIP trains) and T5's last hidden states (``encoder_hidden_states``, padded to
        ``max_sequence_length``; T5 is frozen, so its output is cached per prompt list)."""
        pipe = self.pipeline
        clip = pipe.text_encoder
        ids = self._token_ids(pipe.tokenizer, prompts, pipe.tokenizer_max_length)
        pooled = clip(ids.to(clip.device), output_hidden_states=False).pooler_output
        pooled = pooled.to(dtype=clip.dtype, device=self.device)
        key = tuple(prompts)
        if key not in self._t5_cache:
            with torch.no_grad():
                t5_ids = self._token_ids(pipe.tokenizer_2, prompts, self.max_sequence_length)
                embeds = self.t5(t5_ids.to(self.t5.device), output_hidden_states=False)[0]
            if len(self._t5_cache) >= 8:
                self._t5_cache.clear()
            self._t5_cache[key] = embeds.to(dtype=self.t5.dtype, device=self.device)
        return {"pooled_projections": pooled, "encoder_hidden_states": self._t5_cache[key]}

    # -- the denoiser ---------------------------------------------------------------------------------

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` -> ``[B, h/2 * w/2, 4C]`` (the pipeline's ``_pack_latents``)."""
        b, c, h, w = latents.shape
        return self.pipeline._pack_latents(latents, b, c, h, w)

    def unpack(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The inverse of :meth:`pack` for an ``h x w`` latent grid (the pipeline's ``_unpack_latents``)."""
        f = self.latent_factor
        return self.pipeline._unpack_latents(tokens, h * f, w * f, f)

    def _image_ids(self, h: int, w: int, device, dtype) -> torch.Tensor:
        """The pipeline's ``_prepare_latent_image_ids`` for an ``h x w`` token grid, kept per grid, device and
        dtype: it builds them on the CPU, and copying them to a GPU at every step made the host wait."""
        key = (h, w, str(device), dtype)
        if key not in self._ids:
            self._ids[key] = self.pipeline._prepare_latent_image_ids(1, h, w, device, dtype)
        return self._ids[key]

    def _schedule(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The training schedule's timesteps and sigmas on ``device`` (copied once, not at every step)."""
        key = str(device)
        if key not in self._schedules:
            self._schedules[key] = (self.noise_scheduler.timesteps.to(device), self.noise_scheduler.sigmas.to(device))
        return self._schedules[key]

    def denoise(self, noisy, timesteps, mask, masked_latents, cond):
        """The transformer's velocity for unpacked ``noisy`` latents at ``timesteps`` (scheduler timesteps,
        sigma x 1000), given :meth:`latent_mask`'s mask and the masked-image latents: the hidden states are
        ``cat(packed noisy, cat(packed masked latents, packed mask))`` as ``FluxFillPipeline`` builds them."""
        b, _, h, w = noisy.shape
        dtype = noisy.dtype
        condition = torch.cat([self.pack(masked_latents.to(dtype)), self.pack(mask.to(dtype))], dim=-1)
        hidden = torch.cat([self.pack(noisy), condition], dim=2)
        embeds = cond["encoder_hidden_states"]
        text_ids = torch.zeros(embeds.shape[1], 3, device=noisy.device, dtype=self.pipeline.text_encoder.dtype)
        image_ids = self._image_ids(h // 2, w // 2, noisy.device, embeds.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full([b], self.guidance, device=noisy.device, dtype=torch.float32)
        out = self.denoiser(hidden_states=hidden, timestep=timesteps.to(dtype) / 1000, guidance=guidance,
                            pooled_projections=cond["pooled_projections"], encoder_hidden_states=embeds,
                            txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
        return self.unpack(out, h, w)

    # -- the rectified-flow objective (diffusers' FLUX training scripts) ---------------------------------

    def sample_training_timesteps(self, batch_size, generator):
        from diffusers.training_utils import compute_density_for_timestep_sampling

        u = compute_density_for_timestep_sampling(self.weighting_scheme, batch_size, logit_mean=self.logit_mean,
                                                  logit_std=self.logit_std, mode_scale=self.mode_scale,
                                                  generator=generator)
        schedule = self.noise_scheduler.timesteps
        indices = (u * self.noise_scheduler.config.num_train_timesteps).long().clamp(max=len(schedule) - 1)
        return schedule[indices]

    def sigmas(self, timesteps: torch.Tensor, ndim: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The training schedule's sigma of each timestep, ``[B, 1, ...]`` (the scripts' ``get_sigmas``)."""
        schedule, sigmas = self._schedule(timesteps.device)
        index = (schedule[None, :] == timesteps[:, None]).int().argmax(dim=1)
        sigma = sigmas[index].to(dtype)
        return sigma.reshape(-1, *[1] * (ndim - 1))

    def add_noise(self, latents, noise, timesteps):
        sigma = self.sigmas(timesteps, latents.ndim, latents.dtype)
        return (1.0 - sigma) * latents + sigma * noise

    def training_target(self, latents, noise, timesteps):
        return noise - latents

    def timestep_loss_weighting(self, timesteps):
        if self.weighting_scheme not in ("sigma_sqrt", "cosmap"):
            return None  # compute_loss_weighting_for_sd3 gives ones
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        return compute_loss_weighting_for_sd3(self.weighting_scheme, self.sigmas(timesteps)).float()

    def loss_weights(self, unknown):
        """0 on every packed token (``2f x 2f`` pixels) touching the unknown region, 1 elsewhere, spread over
        the token's 2x2 latent cells: the error is excluded per token, where the transformer sees it."""
        tokens = loss_weights(unknown, 2 * self.latent_factor)
        return tokens.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)

    # -- sampling -------------------------------------------------------------------------------------

    def make_scheduler(self, name: str):
        """``auto`` or ``euler``: the flow-matching Euler scheduler of the pipeline (the resolution-dependent
        shift is set by the pipeline at each call); the DDPM-family samplers do not apply."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        if name not in ("auto", "euler"):
            raise UserError(f"sample.scheduler: '{name}' is a DDPM-family sampler; FLUX is a flow-matching model: "
                            "use 'auto' or 'euler' (flow-matching Euler)")
        return FlowMatchEulerDiscreteScheduler.from_config(self.pipeline.scheduler.config)

    def generate(self, image, mask, prompt, *, generators, scheduler, steps, guidance_scale=30.0):
        """The stock ``FluxFillPipeline.__call__`` (``guidance_scale`` is the embedded guidance: FLUX Fill's
        default is 30); ``image`` in ``[-1, 1]``, ``mask`` 0/1, both ``[1, C, H, W]``."""
        self.pipeline.scheduler = scheduler
        height, width = image.shape[-2:]
        n = len(generators)
        out = self.pipeline(
            prompt=[prompt] * n, image=((image + 1) / 2).expand(n, -1, -1, -1), mask_image=mask.expand(n, -1, -1, -1),
            height=height, width=width, num_inference_steps=steps, guidance_scale=guidance_scale,
            generator=list(generators), output_type="pt", max_sequence_length=self.max_sequence_length,
        )
        return out.images.float().clamp(0, 1)
