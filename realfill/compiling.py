"""``torch.compile`` for training: which modules, with which inductor options (docs/benchmarks.md)."""

from __future__ import annotations

import torch
from torch import nn
from torch._inductor import config, cpu_vec_isa

from realfill.diffusion import InpaintModel

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
