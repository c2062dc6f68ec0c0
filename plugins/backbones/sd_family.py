"""The Stable Diffusion inpainting family as an :class:`~realfill.diffusion.InpaintModel`: SD2
(``StableDiffusionInpaintPipeline``) and SDXL (``StableDiffusionXLInpaintPipeline``). The backbones
``sd2-inpaint``, ``sdxl-inpaint``, ``tiny-sd2`` and ``tiny-sdxl`` load a pipeline and wrap it here.

What the family shares (:class:`DiffusersInpaintModel`): VAE latents (8x downsampling, the VAE's scaling
factor), a 9-channel UNet (noisy + mask + masked-image latents), DDPM training with the checkpoint's schedule,
and sampling through the stock pipeline's ``__call__``, so a stock pipeline with our LoRA samples exactly what
we sample. Prompts are encoded as the pipeline's ``encode_prompt`` does, with the tokens cached.

What SDXL does differently is all in :class:`SDXLInpaintModel`: two text encoders (penultimate hidden
states of both, the pooled output of the second), the UNet's added conditioning (pooled embeddings and time
ids), a VAE kept in float32 when the model is float16 (``force_upcast``), and ``strength=1.0`` in the
pipeline's call.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from realfill.attention import attention_processor
from realfill.components import Backbone, SamplingDefaults
from realfill.diffusion import Conditioning, InpaintModel
from realfill.weights import load_single_file


class SDBackbone(Backbone):
    """The base of the family's backbones: what they declare alike."""

    #: the paper's sampling (RealFill: DDPM, 200 steps, no classifier-free guidance)
    sampling = SamplingDefaults(steps=200, guidance_scale=1.0)


class DiffusersInpaintModel(InpaintModel):
    """An SD2-style inpainting pipeline (VAE latents, 9-channel UNet, one CLIP text encoder).

    :func:`sd_inpaint_model` wraps any pipeline of the family in the class that fits it (SDXL's UNet takes
    ``text_time`` added conditioning: :class:`SDXLInpaintModel`)."""

    default_scheduler = "ddpm"  # the paper's sampler
    #: the diffusers pipeline's name of the denoiser: LoRA files key its weights by it
    denoiser_name = "unet"
    #: extra keyword arguments of the stock pipeline's ``__call__``
    call_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.vae = pipeline.vae
        self.denoiser = pipeline.unet
        self.text_encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)) if e is not None]
        self.noise_scheduler = self._training_scheduler(pipeline.scheduler)
        self.latent_factor = pipeline.vae_scale_factor
        self.latent_channels = pipeline.vae.config.latent_channels
        downsamples = len(pipeline.unet.config.block_out_channels) - 1
        self.size_multiple = self.latent_factor * 2**downsamples
        self.device = pipeline.unet.device
        self.dtype = pipeline.unet.dtype
        self._tokens: dict[tuple, Any] = {}

    @staticmethod
    def _training_scheduler(scheduler):
        """DDPM with the checkpoint's schedule. ``clip_sample`` is forced off: a latent model must never clip
        its latents to [-1, 1], and where a checkpoint's scheduler config lacks the key, diffusers' DDPM and
        DDIM default to clipping (the samplers of :meth:`make_scheduler` inherit this config)."""
        # diffusers on use: the CLI's start-up imports every backbone module without it
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(scheduler.config, clip_sample=False)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.vae]

    # -- the VAE ----------------------------------------------------------------------------------------

    @property
    def vae_dtype(self) -> torch.dtype:
        """The VAE's own dtype: the model's (SDXL's may stay float32: :class:`SDXLInpaintModel`)."""
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
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # on use, as above

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

    # -- text -------------------------------------------------------------------------------------------

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
        inputs = self._token_ids(self.pipeline.tokenizer, prompts)
        encoder = self.pipeline.text_encoder
        mask = inputs.attention_mask.to(encoder.device) if getattr(encoder.config, "use_attention_mask", False) else None
        embeds = encoder(inputs.input_ids.to(encoder.device), attention_mask=mask)[0]  # where it is (offloaded)
        return {"encoder_hidden_states": embeds.to(dtype=encoder.dtype, device=self.device)}

    # -- the denoiser and sampling ------------------------------------------------------------------------

    def added_conditioning(self, cond: Conditioning, height: int, width: int, batch: int) -> dict | None:
        """The UNet's ``added_cond_kwargs`` for a ``height x width`` image: none for SD2."""
        return None

    def denoise(self, noisy, timesteps, mask, masked_latents, cond):
        model_input = torch.cat([noisy, mask.to(noisy.dtype), masked_latents.to(noisy.dtype)], dim=1)
        h, w = noisy.shape[-2] * self.latent_factor, noisy.shape[-1] * self.latent_factor
        return self.denoiser(
            model_input, timesteps, encoder_hidden_states=cond["encoder_hidden_states"],
            added_cond_kwargs=self.added_conditioning(cond, h, w, noisy.shape[0]), return_dict=False,
        )[0]

    def generate(self, image, mask, prompt, *, generators, scheduler, steps, guidance_scale=1.0):
        """The stock pipeline's ``__call__`` (so a stock pipeline with the same weights gives the same
        samples); ``image`` in ``[-1, 1]``, ``mask`` 0/1, both ``[1, C, H, W]``."""
        self.pipeline.scheduler = scheduler
        height, width = image.shape[-2:]
        n = len(generators)
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
            **self.call_kwargs,
        )
        self._settle_vae()  # the SDXL pipeline leaves an upcast VAE in float16
        return out.images.float().clamp(0, 1)


def is_sdxl_pipeline(pipeline) -> bool:
    """Whether ``pipeline``'s UNet takes SDXL's added conditioning (pooled text embeddings and time ids)."""
    return getattr(pipeline.unet.config, "addition_embed_type", None) == "text_time"


def sd_inpaint_model(pipeline) -> DiffusersInpaintModel:
    """The family's model for ``pipeline``: :class:`SDXLInpaintModel` for an SDXL pipeline, else
    :class:`DiffusersInpaintModel` (SD2). The one place that chooses."""
    return SDXLInpaintModel(pipeline) if is_sdxl_pipeline(pipeline) else DiffusersInpaintModel(pipeline)


#: the family's modules a single checkpoint file must hold every weight of (those the pipeline has)
SINGLE_FILE_MODULES = ("unet", "vae", "text_encoder", "text_encoder_2")


def load_sd_single_file(pipeline_class, *, what: str, path, config: str, dtype, extra: dict, aliases=()):
    """A single SD2 / SDXL checkpoint file (``load_pipeline``'s ``single_file``): the core's loader, checked
    against the family's layout, the configuration from ``config`` or, for the default model, its aliases."""
    return load_single_file(pipeline_class, what=what, path=path, configs=[config, *aliases], dtype=dtype,
                            extra=extra, modules=SINGLE_FILE_MODULES)


class SDXLInpaintModel(DiffusersInpaintModel):
    """An SDXL-style inpainting pipeline: every difference from SD2 is in this class."""

    # the SD2 pipeline's call fills the whole mask by default; SDXL's takes strength 0.9999 unless told
    call_kwargs = {"strength": 1.0}

    @property
    def vae_dtype(self) -> torch.dtype:
        """float32 for an SDXL VAE that overflows in float16 (``force_upcast`` in its config; diffusers' SDXL
        training scripts keep it in float32 "to avoid NaN losses"), else the model's."""
        if self.dtype == torch.float16 and self.vae.config.force_upcast:
            return torch.float32
        return self.dtype

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """Both text encoders' penultimate hidden states, joined, and the second's pooled output
        (``text_embeds``), as the pipeline's ``encode_prompt`` gives them."""
        pipe = self.pipeline
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

    def added_conditioning(self, cond, height, width, batch):
        return {"text_embeds": cond["text_embeds"], "time_ids": self.time_ids(height, width, batch)}
