"""The backbone contract: what a backbone's ``load()`` returns, an inpainting diffusion model as training
and sampling see it, and the helpers every backbone family shares.

:class:`InpaintModel` is generic over latent vs pixel space and over zero, one or two text encoders:

- ``denoiser`` takes ``noisy (+) mask (+) masked-image latents`` (the 9-channel SD inpainting input; a
  pixel-space model takes ``3 + 1 + 3``) and predicts what ``noise_scheduler.config.prediction_type`` says
  (``epsilon``, ``v_prediction`` or ``sample``);
- ``encode_images`` / ``decode_latents`` map ``[-1, 1]`` images to the space the denoiser works in
  (``latent_factor`` pixels per latent cell: 8 for the SD VAEs, 1 in pixel space);
- ``encode_prompts`` returns the conditioning as a dict of batch-first tensors (empty without a text
  encoder); :func:`select_conditioning` and :func:`cat_conditioning` index and join such dicts;
- ``generate`` samples completions; the default is :func:`denoise_loop`, the generic sampler over these
  methods (the SD and FLUX families in ``realfill_plugins.backbones`` call their stock diffusers pipelines
  instead, so that our samples are exactly what the stock pipeline gives for the same weights);
- the training objective (``sample_training_timesteps``, ``add_noise``, ``training_target``, ``loss_weights``,
  ``timestep_loss_weighting``) defaults to DDPM training from ``noise_scheduler``; a flow-matching model
  overrides it (``realfill_plugins.backbones.flux_family``, FLUX.1 Fill, which also packs its latents inside
  ``denoise``).

Training (:mod:`realfill.training`) and sampling (:mod:`realfill.sampling`) need only the members below and
hold no branch on the backbone's family, so a new backbone family (a third-party one, ``scratch-pixel``, the
next flow-matching model) subclasses :class:`InpaintModel` and fills in the abstract methods
(docs/plugin_hooks.md: the backbone contract). Its attention processors are in :mod:`realfill.attention`,
finding its weights offline in :mod:`realfill.weights`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from realfill.errors import UserError

Conditioning = dict[str, torch.Tensor]

#: the parameter-group names adapters and learning rates use (TrainConfig.lr_denoiser / lr_text_encoder),
#: whatever the denoiser is (a UNet, a transformer)
DENOISER_GROUP = "denoiser"
TEXT_ENCODER_GROUP = "text_encoder"

#: the names of a backbone config's ``dtype`` key (the weights' dtype)
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    #: the denoiser's name in its diffusers pipeline (the SD family's ``unet``, FLUX's ``transformer``, set by
    #: each family): LoRA files key its weights by it
    denoiser_name: str = "denoiser"
    #: the denoiser's LoRA target modules when the adapter does not name them (``adapter.unet_targets``)
    denoiser_lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    #: what ``sample.scheduler = "auto"`` samples with (:meth:`make_scheduler`): DDPM, as in the paper
    default_scheduler: str = "ddpm"
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
        (what training encodes every step). Override to do both in one pass with the same result.
        ``generator`` may be a list, one per item (diffusers' ``randn_tensor`` takes both): training draws
        each item's posterior from its own, so a micro-batch draws what the whole batch would."""
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
        :data:`DENOISER_GROUP`, then ``text_encoder``, then the further encoders numbered from 2 (unless
        ``include_text_encoders`` is False, as adapters configured not to train them ask)."""
        modules: dict[str, nn.Module] = {DENOISER_GROUP: self.denoiser}
        for i, encoder in enumerate(self.text_encoders if include_text_encoders else []):
            modules[TEXT_ENCODER_GROUP if i == 0 else f"{TEXT_ENCODER_GROUP}_{i + 1}"] = encoder
        return modules

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that never train (a VAE); kept in eval mode without gradients."""
        return []

    def text_encoder_modules(self) -> list[nn.Module]:
        """Every text encoder, trained or not: :attr:`text_encoders` and any that never trains (FLUX's T5)."""
        return list(self.text_encoders)

    def text_encoders_to(self, device: Any) -> list[nn.Module]:
        """Move the text encoders none of whose parameters train to ``device`` and return them (the trainer
        sends them off the GPU once the prompts are encoded, and back for sampling: the stock pipelines
        encode their prompts themselves). :attr:`device` stays the denoiser's."""
        frozen = [e for e in self.text_encoder_modules() if not any(p.requires_grad for p in e.parameters())]
        for encoder in frozen:
            encoder.to(device)
        return frozen

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

    def to_channels_last(self) -> None:
        """Every 4-D weight (the convolutions of a UNet and a VAE) in channels-last memory order; the values
        are the same, and modules without convolutions (text encoders, a transformer) are untouched."""
        for module in [*self.trainable_modules().values(), *self.frozen_modules()]:
            module.to(memory_format=torch.channels_last)

    def set_attention(self, kind: str) -> None:
        """``sdpa`` (PyTorch's scaled_dot_product_attention), ``default`` (the plain processor) or
        ``small-math`` (:class:`realfill.attention.SmallMathAttnProcessor`): ``realfill.attention``'s
        ``attention_processor(kind)`` makes them for diffusers modules. The default does nothing."""

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
        """A sampling scheduler (``ddpm``, ``ddim``, ``dpm``, ``euler``; ``auto``: the backbone's own,
        :attr:`default_scheduler`) from the training schedule's config. ``sample.scheduler`` names it; a
        backbone without some of these (a flow-matching model) raises :class:`UserError` for them."""
        # diffusers on use: the CLI's start-up (`realfill plugins`, `config`) imports this module without it
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

        classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
                   "euler": EulerDiscreteScheduler}
        return classes[self.default_scheduler if name == "auto" else name].from_config(self.noise_scheduler.config)

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
        ``[0, 1]``, not yet composited. The default is :func:`denoise_loop`, the generic sampler over the
        methods above."""
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


@torch.no_grad()
def denoise_loop(
    model: InpaintModel,
    image: torch.Tensor,
    mask: torch.Tensor,
    prompt: str,
    *,
    generators: list[torch.Generator],
    scheduler: Any,
    steps: int,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """The generic inpainting sampler over :class:`InpaintModel`'s methods (any backbone, latent or pixel):
    :meth:`InpaintModel.generate`'s default.

    ``image``: ``[1, 3, H, W]`` in ``[-1, 1]``; ``mask``: ``[1, 1, H, W]`` 0/1 (1 = fill). Returns
    ``[N, 3, H, W]`` in ``[0, 1]`` for ``N = len(generators)``, the known region not yet pasted back."""
    device, dtype = model.device, model.dtype
    n = len(generators)
    image = image.to(device, dtype)
    mask = mask.to(device, dtype)
    latent_mask = model.latent_mask(mask)
    cond = model.encode_prompts([prompt] * n)
    use_cfg = guidance_scale > 1.0
    if use_cfg:
        cond = cat_conditioning([model.encode_prompts([""] * n), cond])
    scheduler.set_timesteps(steps, device=device)
    # the stock pipelines' order of draws: each sample's initial noise, then its masked-image encoding
    masked_image = image * (mask < 0.5)
    shape = (1, model.latent_channels, *latent_mask.shape[-2:])
    noise = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in generators]
    latents = torch.cat(noise).to(device, dtype) * scheduler.init_noise_sigma
    masked_latents = torch.cat([model.encode_images(masked_image, generator=g) for g in generators])
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    rep = 2 if use_cfg else 1
    masks = latent_mask.expand(n * rep, -1, -1, -1)
    masked = torch.cat([masked_latents] * rep)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * rep), t)
        timesteps = t.reshape(1).expand(n * rep).to(device)
        prediction = model.denoise(model_input, timesteps, masks, masked, cond)
        if use_cfg:
            uncond, text = prediction.chunk(2)
            prediction = uncond + guidance_scale * (text - uncond)
        latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
    return ((model.decode_latents(latents).float() + 1) / 2).clamp(0, 1)
