"""RealFill fine-tuning: the paper's loop on the references and the target (DESIGN.md).

Every step draws a real batch of ``train.batch_size`` items (images drawn uniformly, with replacement, from
the references and the target), each a random resized square crop at ``train.resolution``. The masking
strategy makes the training masks; with ``full_mask_prob`` the whole item is masked, with
``prompt_dropout`` the prompt is empty. The denoiser sees ``noisy latents (+) mask (+) masked-image
latents`` and the loss is the MSE of its prediction, weighted **zero** on every cell that touches the
target's unknown region. What the timesteps, the noising, the target and the weights are is the backbone
model's to say (:class:`~realfill.diffusion.InpaintModel`'s ``sample_training_timesteps``, ``add_noise``,
``training_target``, ``loss_weights``, ``timestep_loss_weighting``: DDPM noise, velocity or sample
prediction for the SD family, rectified flow for FLUX); the loop here has no branch on the family. The target's unknown
pixels are also blanked to gray before anything reads them, so they cannot reach the loss or its
gradients through the VAE either.

All randomness comes from one seeded ``torch.Generator`` (crops, masks, dropout decisions, noise,
timesteps, VAE posterior samples) plus the global torch RNG (LoRA dropout), and both are checkpointed:
``--resume`` continues a killed run exactly as if it had not stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from realfill.diffusion import DENOISER_GROUP, InpaintModel, loss_weights, select_conditioning  # noqa: F401
from realfill.errors import UserError

CHECKPOINT_DIR = "checkpoint"
TRAIN_LOG = "train_log.jsonl"
ADAPTER_DIR = "adapter"
TRAIN_STATE = "train_state.json"


def resolve_device(name: str, *, estimate: str | None = None) -> torch.device:
    """``device`` as a torch device (``auto``: the first CUDA GPU where torch sees one, else the CPU). A CUDA
    device torch cannot see is a :class:`UserError` saying what torch sees and, with ``estimate`` (the
    backbone's ``cpu_estimate``), how long the run would take on the CPU, before any weights load."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device: '{name}' is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: '{name}' asked for (a config meant for a GPU), but torch {torch.__version__} "
                        f"sees {cuda_seen()}; {estimate + '; ' if estimate else ''}"
                        f"--set device=cpu goes on on the CPU anyway")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device: '{name}' asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def cuda_seen() -> str:
    """What torch sees of CUDA, in words, for messages."""
    if torch.version.cuda is None:
        return "no CUDA GPU (this torch is a CPU-only build)"
    count = torch.cuda.device_count()
    if count == 0:
        return f"no CUDA GPU (built for CUDA {torch.version.cuda}, but no device or driver is visible)"
    return f"{count} CUDA GPU(s): {', '.join(torch.cuda.get_device_name(i) for i in range(count))}"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it without emulation (compute
    capability 8+; torch's ``is_bf16_supported()`` counts emulation by default, which a V100 or T4 has, and
    asks the current device, so this asks ``device`` itself), or a CPU with the AVX512-BF16 or AMX-BF16
    instructions (oneDNN's bf16 kernels; elsewhere bf16 is emulated, and slower than float32)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: the autocast each half-precision weight dtype trains under (diffusers pairs fp16 weights with fp16
#: autocast and a GradScaler, bf16 weights with bf16 autocast)
HALF_PRECISION = {torch.float16: "fp16", torch.bfloat16: "bf16"}
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def resolve_precision(requested: str | None, weight_dtype: torch.dtype, device: torch.device) -> str:
    """``train.mixed_precision`` as it will run (``no``, ``bf16`` or ``fp16``) for weights of
    ``weight_dtype`` on ``device``; a combination that cannot train correctly is a :class:`UserError` naming
    both keys (checked before any weights load: ``realfill.run.check_device``).

    float32 weights take any mode (``auto``: bf16 where ``device`` has it natively, else ``no``). float16 and
    bfloat16 weights train only under the autocast of their own dtype (``auto`` picks it): without autocast
    a full fine-tune's float32 denoiser meets half-precision inputs, float16 without a GradScaler underflows
    its gradients, and autocast to the other half type computes in a dtype the weights are not in. Unset
    (``None``): the weights' own, ``no`` for float32 and the matching autocast for half precision."""
    if requested is None:
        requested = HALF_PRECISION.get(weight_dtype, "no")
    if weight_dtype in HALF_PRECISION:
        wanted = HALF_PRECISION[weight_dtype]
        if requested in ("auto", wanted):
            return wanted
        name = DTYPE_NAMES[weight_dtype]
        why = ("trains without autocast or loss scaling" if requested == "no"
               else f"computes in {'bfloat16' if requested == 'bf16' else 'float16'} over {name} weights")
        raise UserError(f"train.mixed_precision='{requested}' with backbone.dtype='{name}' {why}; set "
                        f"train.mixed_precision={wanted} (or auto), or backbone.dtype=float32")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "no"
    return requested


def enable_tf32(device: torch.device, allow: bool = True) -> bool:
    """TF32 for CUDA matmuls and cuDNN convolutions (Ampere and newer use it; older GPUs ignore the flags),
    as the public RealFill recipe's ``--allow_tf32``. Returns whether it set them (never on a CPU)."""
    if device.type != "cuda" or not allow:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed CPU memory for reuse instead of returning it to the kernel (glibc malloc only).

    PyTorch's CPU allocator is plain ``malloc``. Every step allocates and frees the same activations,
    which are megabytes each; by default glibc serves such blocks with fresh ``mmap`` s (or trims the heap
    after them), so every step page-faults its activations in again, zero-filled by the kernel. With
    the mmap threshold at its maximum (32 MiB) and no trimming, the step reuses its own memory: eager
    training steps of ``tiny-sd2`` ran 1.17x faster here, the recipe's loop 1.14x (docs/benchmarks.md).
    Memory freed after the peak stays with the process. Process-wide, applied once; returns
    whether it applied (False off glibc)."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**30) == 1
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


# -- the training images ---------------------------------------------------------------------------


@dataclass
class TrainingImages:
    """The scene's images as ``[3, H, W]`` tensors in ``[-1, 1]`` (references first, the target last, its
    unknown pixels blanked to 0), with each one's unknown region ``[1, H, W]`` (zeros for references)."""

    images: list[torch.Tensor]
    unknown: list[torch.Tensor]
    is_target: list[bool]

    @classmethod
    def from_scene(cls, scene, resolution: int, crop_scale_min: float = 0.5) -> TrainingImages:
        # no crop needs more pixels than this: the smallest crop side is sqrt(crop_scale_min) x the short side
        limit = int(math.ceil(resolution / math.sqrt(crop_scale_min)))
        images, unknown, is_target = [], [], []
        for array, mask, target in [*[(r, None, False) for r in scene.references], (scene.target, scene.mask, True)]:
            image = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 127.5 - 1.0
            hole = torch.zeros(1, *image.shape[1:]) if mask is None else torch.from_numpy(mask).float()[None]
            if target:
                image = image * (1 - hole)  # the unknown pixels never reach the model (blanked before resizing)
            short = min(image.shape[1:])
            if short > limit:
                size = (round(image.shape[1] * limit / short), round(image.shape[2] * limit / short))
                image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
                hole = (F.interpolate(hole[None], size=size, mode="area")[0] > 0).float()
                if target:
                    image = image * (1 - hole)
            images.append(image)
            unknown.append(hole)
            is_target.append(target)
        return cls(images, unknown, is_target)

    def __len__(self) -> int:
        return len(self.images)


def random_resized_crops(
    data: TrainingImages, indices: list[int], resolution: int, scale_min: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square crops covering ``scale_min``-1 of each image's short side squared, resized to
    ``resolution``. Returns images ``[B,3,R,R]``, unknown ``[B,1,R,R]`` (1 where any unknown pixel fell)
    and is_target ``[B]``."""
    images, unknown = [], []
    for index in indices:
        image, hole = data.images[index], data.unknown[index]
        h, w = image.shape[1:]
        scale = scale_min + (1 - scale_min) * float(torch.rand((), generator=generator))
        side = max(1, int(round(math.sqrt(scale) * min(h, w))))
        top = int(torch.randint(0, h - side + 1, (), generator=generator))
        left = int(torch.randint(0, w - side + 1, (), generator=generator))
        crop = image[:, top : top + side, left : left + side][None]
        if side != resolution:
            crop = F.interpolate(crop, size=(resolution, resolution), mode="bilinear", antialias=side > resolution,
                                 align_corners=False)
        if not data.is_target[index]:  # a reference has no unknown pixels
            crop_hole = torch.zeros(1, 1, resolution, resolution)
        else:
            crop_hole = hole[:, top : top + side, left : left + side][None]
            if side != resolution:
                crop_hole = (F.interpolate(crop_hole, size=(resolution, resolution), mode="area") > 0).float()
        images.append(crop)
        unknown.append(crop_hole)
    is_target = torch.tensor([data.is_target[i] for i in indices])
    return torch.cat(images), torch.cat(unknown), is_target


@dataclass
class Batch:
    images: torch.Tensor
    unknown: torch.Tensor
    is_target: torch.Tensor
    masks: torch.Tensor
    drop_prompt: torch.Tensor


def compile_model(model: InpaintModel) -> list[nn.Module]:
    """``torch.compile`` the forward of the modules that run every step apart from the denoiser (which
    :class:`Trainer` compiles inside its loss, see ``Trainer._denoising_loss``), in place (names and state
    dicts unchanged, so adapters save as before): the text encoders that train (frozen ones run once, their
    embeddings cached) and, where there is one, the VAE's encoder, whose weights never change, so inductor
    may fold them in as constants (``freezing``). Random ops (LoRA dropout) keep eager PyTorch's draws
    (``fallback_random``), so a compiled run gives the same results as an eager one on the same seed.
    Shapes are static (``dynamic=False``): a run's shapes never change, and a second size in the same
    process must not turn its kernels into dynamic-shape ones (128 px after 64 px ran at 1.12x the
    reference loop's rate with them, 1.32x static; docs/benchmarks.md). On a CPU the encoder's vector width
    follows :func:`cpu_vector_bits`. Returns the compiled modules (:func:`uncompile` undoes it)."""
    modules = [e for e in model.text_encoders if any(p.requires_grad for p in e.parameters())]
    for module in modules:
        module.forward = torch.compile(module.forward, dynamic=False, options={"fallback_random": True})
    encoder = getattr(getattr(model, "vae", None), "encoder", None)
    if encoder is not None:
        options = {"fallback_random": True, "freezing": True}
        if model.device.type == "cpu" and (bits := cpu_vector_bits(encoder)) is not None:
            options["cpp.simdlen"] = bits
        encoder.forward = torch.compile(encoder.forward, dynamic=False, options=options)
        modules.append(encoder)
    return modules


def cpu_vector_bits(module: nn.Module) -> int | None:
    """The SIMD width (bits) for inductor's CPU kernels of ``module``, or None for inductor's default
    (the widest the CPU has, or ``torch._inductor.config.cpp.simdlen`` where the user set it).

    inductor vectorizes a channels-last activation along its channels. An activation with fewer channels
    than a vector has float lanes fills part of each vector: on an AVX512 CPU (16 lanes), the 8-channel
    GroupNorm and SiLU kernels of ``tiny-sd2``'s VAE encoder ran at about half speed, and the encoder took
    53-55 ms per 32 images at 128 px against 43-46 ms with 256-bit vectors (docs/benchmarks.md). So: the
    widest vector the CPU has with no more lanes than the narrowest GroupNorm has channels (the real SD
    VAEs, 128 channels and up, keep the default)."""
    from torch._inductor import config, cpu_vec_isa

    norms = [m.num_channels for m in module.modules() if isinstance(m, nn.GroupNorm)]
    if config.cpp.simdlen is not None or not norms:
        return None
    narrowest = min(norms)
    default = cpu_vec_isa.pick_vec_isa()  # probes the compiler on its first call: only when it can matter
    if not default or default.bit_width() // 32 <= narrowest:
        return None
    return max((isa.bit_width() for isa in cpu_vec_isa.valid_vec_isa_list() if isa.bit_width() // 32 <= narrowest),
               default=None)


def uncompile(modules: list[nn.Module]) -> None:
    """Back to eager forwards (sampling calls the model at other shapes, which would recompile)."""
    for module in modules:
        module.__dict__.pop("forward", None)


# -- the trainer -----------------------------------------------------------------------------------


class Trainer:
    """One fine-tuning run's state: the model with its adapter applied, optimizer, schedule, RNGs."""

    def __init__(self, model: InpaintModel, adapter, masking, scene, train, *, seed: int = 0):
        self.model, self.adapter, self.masking, self.train = model, adapter, masking, train
        self.device = model.device
        if train.tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()
        model.freeze()
        torch.manual_seed(seed)  # adapter initialisation (LoRA's A matrices) and, later, LoRA dropout
        groups = adapter.apply(model)
        rates = {DENOISER_GROUP: train.lr_unet}
        for group in groups:
            group.setdefault("lr", rates.get(group["name"], train.lr_text_encoder))
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise UserError(f"adapter '{adapter.name}': nothing to train on backbone '{type(model).__name__}'")
        self.group_names = [g["name"] for g in groups]
        self.params = [p for g in groups for p in g["params"]]
        # trainable parameters train in float32 whatever the model's dtype; :meth:`restore_dtypes` puts them
        # back (a full fine-tune's half-precision denoiser) once the adapter is saved, for sampling
        self._param_dtypes = [p.dtype for p in self.params]
        for p in self.params:
            p.data = p.data.float()
        # one fused kernel for every parameter (CPU and CUDA) instead of a Python loop over them
        fused = all(p.device.type in ("cpu", "cuda") for p in self.params) or None
        self.optimizer = torch.optim.AdamW(
            groups, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon, weight_decay=train.weight_decay,
            fused=fused,
        )
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(train.lr_schedule, self.optimizer, num_warmup_steps=train.warmup_steps,
                                          num_training_steps=max(train.steps, 1))
        self.data = TrainingImages.from_scene(scene, train.resolution, train.crop_scale_min)
        self.generator = torch.Generator("cpu").manual_seed(seed)
        self.step = 0
        self.text_trains = any(p.requires_grad for e in model.text_encoders for p in e.parameters())
        precision = resolve_precision(train.mixed_precision, model.dtype, self.device)
        self.mixed_precision = precision
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        # fp16 autocast always with loss scaling (CUDA, and CPUs: torch 2.13 has fp16 kernels and a CPU scaler)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        enable_tf32(self.device, train.allow_tf32)
        if train.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        attention = train.attention
        if attention == "auto":
            attention = "small-math" if train.compile and self.device.type == "cpu" else "sdpa"
        model.set_attention(attention)
        self._compiled = compile_model(model) if train.compile else []
        if train.compile:
            self._denoising_loss = torch.compile(self._denoising_loss, dynamic=False,  # static, as compile_model's
                                                 options={"fallback_random": True})
        self._cond_cache = None
        self._modes = None
        if not self.text_trains:  # the text encoders are frozen: encode the two prompts once
            with torch.no_grad():
                self._cond_cache = model.encode_prompts([train.prompt, ""])

    # -- one step ------------------------------------------------------------------------------------

    def draw_batch(self) -> Batch:
        g, t = self.generator, self.train
        indices = torch.randint(0, len(self.data), (t.batch_size,), generator=g).tolist()
        images, unknown, is_target = random_resized_crops(self.data, indices, t.resolution, t.crop_scale_min, g)
        masks = self.masking.make_masks(t.batch_size, t.resolution, t.resolution, is_target=is_target,
                                        target_masks=unknown, generator=g).float()
        full = torch.rand(t.batch_size, generator=g) < t.full_mask_prob
        masks[full] = 1.0
        masks = torch.maximum(masks, unknown)  # the target's unknown region is never shown as known
        drop_prompt = torch.rand(t.batch_size, generator=g) < t.prompt_dropout
        return Batch(images, unknown, is_target, masks, drop_prompt)

    def conditioning(self, drop_prompt: torch.Tensor):
        table = self._cond_cache if self._cond_cache is not None else self.model.encode_prompts([self.train.prompt, ""])
        return select_conditioning(table, drop_prompt.long().to(self.device))

    def loss(self, batch: Batch) -> torch.Tensor:
        """The weighted MSE of ``batch`` (draws VAE samples, noise and timesteps, in that order)."""
        model, g, device = self.model, self.generator, self.device
        images = batch.images.to(device, model.dtype)
        masks = batch.masks.to(device, model.dtype)
        with torch.no_grad():
            latents, masked_latents = model.encode_image_pair(images, images * (masks < 0.5), generator=g)
        noise = torch.randn(latents.shape, generator=g, dtype=torch.float32).to(device, latents.dtype)
        timesteps = model.sample_training_timesteps(latents.shape[0], g).to(device)
        with self._autocast():
            cond = self.conditioning(batch.drop_prompt)
        return self._denoising_loss(latents, masked_latents, masks, batch.unknown.to(device), noise, timesteps, cond)

    def _denoising_loss(self, latents, masked_latents, masks, unknown, noise, timesteps, cond) -> torch.Tensor:
        """The step's work after its random draws: noise the latents, predict, weigh the error. No random
        draws but LoRA dropout's, so ``train.compile`` compiles it as one region (the denoiser inlined)."""
        model = self.model  # the objective is the model's to say (InpaintModel's training methods)
        latent_masks = model.latent_mask(masks)
        weights = model.loss_weights(unknown)
        noisy = model.add_noise(latents, noise, timesteps)
        target = model.training_target(latents, noise, timesteps)
        with self._autocast():
            prediction = model.denoise(noisy, timesteps, latent_masks, masked_latents, cond)
        error = (prediction.float() - target.float()) ** 2 * weights
        if (factor := model.timestep_loss_weighting(timesteps)) is not None:
            error = error * factor
        return error.sum() / (weights.sum() * error.shape[1]).clamp(min=1.0)

    def _autocast(self):
        """Mixed precision as ``train.mixed_precision`` resolved (a no-op in float32)."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def train_step(self) -> float:
        self._set_train_mode(True)
        batch = self.draw_batch()
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
            self.optimizer.step()
        self.lr_scheduler.step()
        self.step += 1
        return float(loss.detach())

    def _set_train_mode(self, on: bool) -> None:
        """Modules with trained parameters in train mode (LoRA dropout on), the rest in eval mode. Called
        every step, so it looks at each top-level module's flag and recurses only where that is wrong
        (recursing through every module every step cost about 2 ms of a 70 ms step)."""
        first = self._modes is None
        if first:  # what trains is fixed once the adapter is applied
            self._modes = [(m, any(p.requires_grad for p in m.parameters()))
                           for m in self.model.trainable_modules().values()]
            self._modes += [(m, False) for m in self.model.frozen_modules()]
        for module, trains in self._modes:
            if first or module.training != (on and trains):
                module.train(on and trains)

    def finish(self) -> None:
        """Training is over: eval mode, eager forwards, and the last step's gradients freed (a full SD2
        fine-tune's are about 3.5 GB; sampling needs none of them)."""
        self._set_train_mode(False)
        uncompile(self._compiled)
        self.__dict__.pop("_denoising_loss", None)  # the compiled loss region, if train.compile
        self.optimizer.zero_grad(set_to_none=True)

    def restore_dtypes(self) -> None:
        """The trained parameters back in the dtype the model had them in (float16 / bfloat16 for a full
        fine-tune of a half-precision backbone, so that sampling, which has no autocast, sees one dtype;
        LoRA's parameters are float32 from the start and stay so). Call after the adapter is saved."""
        with torch.no_grad():
            for p, dtype in zip(self.params, self._param_dtypes):
                if p.dtype != dtype:
                    p.data = p.data.to(dtype)

    def learning_rates(self) -> dict[str, float]:
        return {name: group["lr"] for name, group in zip(self.group_names, self.optimizer.param_groups)}

    # -- checkpoints ---------------------------------------------------------------------------------

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {}
        for key, module in self.model.trainable_modules().items():
            for name, p in module.named_parameters():
                if p.requires_grad:
                    state[f"{key}.{name}"] = p.detach().cpu().clone()
        return state

    def state_dict(self) -> dict:
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
        }

    def load_state_dict(self, state: dict) -> None:
        params = {}
        for key, module in self.model.trainable_modules().items():
            for name, p in module.named_parameters():
                if p.requires_grad:
                    params[f"{key}.{name}"] = p
        if set(params) != set(state["trainable"]):
            raise UserError("checkpoint: its trained parameters do not match this run's backbone and adapter; "
                            "resume with the same config (RUN/config.toml)")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])


def save_checkpoint(trainer: Trainer, run_dir: Path) -> Path:
    """``run_dir/checkpoint/``: ``state.pt`` (trained parameters, optimizer, schedule, step, RNG states) and
    ``adapter/`` (the adapter's own format), replaced atomically so a kill never leaves half a checkpoint.
    A failed write (a full disk: :class:`realfill.runfolder.OutOfSpace`) removes the half-built one and
    leaves the previous checkpoint as it was."""
    from realfill.runfolder import OutOfSpace, free_bytes, space_failure, sync_tree, torch_save

    final = run_dir / CHECKPOINT_DIR
    tmp = run_dir / f"{CHECKPOINT_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        torch_save(trainer.state_dict(), tmp / "state.pt")
        trainer.adapter.save(trainer.model, tmp / ADAPTER_DIR)
        sync_tree(tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OutOfSpace) or space_failure(exc):
            raise OutOfSpace(final, free_bytes(run_dir)) from None
        raise
    old = run_dir / f"{CHECKPOINT_DIR}.old"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def load_checkpoint(run_dir: Path) -> dict | None:
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):  # .old: killed between the two renames
        path = run_dir / name / "state.pt"
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=False)
    return None


def _truncate_log(path: Path, step: int) -> None:
    from realfill.runfolder import atomic_write_text

    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def training_finished(run_dir: Path) -> bool:
    path = Path(run_dir) / TRAIN_STATE
    return path.is_file() and json.loads(path.read_text()).get("finished", False)


def fine_tune(
    model: InpaintModel,
    adapter,
    masking,
    scene,
    config,
    run_dir: Path,
    *,
    plugins=None,
    resume: bool = False,
    console=None,
    on_step: Callable[[int, float], None] | None = None,
) -> Trainer:
    """Fine-tune ``model`` on ``scene`` per ``config.train``; writes ``run_dir/train_log.jsonl``,
    ``run_dir/checkpoint/`` every ``checkpoint_every`` steps and ``run_dir/adapter/`` at the end.
    With ``resume``, continues from ``run_dir/checkpoint/`` (the log is cut back to it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from realfill.runfolder import AtomicLog, atomic_dir, atomic_write_text

    train = config.train
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if train.threads:
        torch.set_num_threads(train.threads)
    trainer = Trainer(model, adapter, masking, scene, train, seed=config.seed)
    log_path = run_dir / TRAIN_LOG
    if resume and (state := load_checkpoint(run_dir)) is not None:
        trainer.load_state_dict(state)
        _truncate_log(log_path, trainer.step)
        if console is not None:
            console.print(f"resuming from step {trainer.step} ({run_dir / CHECKPOINT_DIR})")
    else:
        atomic_write_text(log_path, "")
    record = {"steps": train.steps, "mixed_precision": trainer.mixed_precision}  # what "auto" resolved to
    atomic_write_text(run_dir / TRAIN_STATE, json.dumps({"finished": False, **record}) + "\n")
    start = time.perf_counter()
    progress = Progress(
        TextColumn("fine-tune"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(), console=console, disable=console is None, transient=True,
    )
    with progress, AtomicLog(log_path) as log:  # every line lands whole: the log is replaced, not appended
        task = progress.add_task("train", total=train.steps, completed=trainer.step, loss="-")
        while trainer.step < train.steps:
            loss = trainer.train_step()
            step = trainer.step
            if not math.isfinite(loss):  # settings the user can change: one line, not a traceback
                raise UserError(f"training diverged at step {step} (loss {loss}, weights "
                                   f"{DTYPE_NAMES.get(model.dtype, model.dtype)}, mixed precision "
                                   f"{trainer.mixed_precision}); lower train.lr_unet, or train in float32")
            progress.update(task, completed=step, loss=f"{loss:.4f}")
            if step % train.log_every == 0 or step == train.steps:
                rates = trainer.learning_rates()
                seconds = time.perf_counter() - start
                log.write(json.dumps({"step": step, "loss": loss, "lr": rates, "seconds": round(seconds, 3)}) + "\n")
                log.flush()
                if plugins is not None:
                    plugins.train_step_end(step=step, loss=loss, learning_rates=rates, seconds=seconds)
            if on_step is not None:
                on_step(step, loss)
            if train.checkpoint_every and step % train.checkpoint_every == 0 and step < train.steps:
                save_checkpoint(trainer, run_dir)
    trainer.finish()
    with atomic_dir(run_dir / ADAPTER_DIR) as building:
        adapter.save(model, building)
    trainer.restore_dtypes()
    atomic_write_text(run_dir / TRAIN_STATE, json.dumps({"finished": True, **record}) + "\n")
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # the adapter is the result now
    return trainer
