"""What a command computes on, decided once: the device, the mixed precision, the CPU threads and TF32.

:func:`resolve_compute` reads them from a run config (before any weights load, so a GPU config on a machine
without one, or a precision the weights cannot train under, is a one-line error); the command applies the
result once (:meth:`Compute.apply`), prints it once (:meth:`Compute.describe`) and passes it down to the
stages, the trainer and the backbone, which take what they are given. Rankers place their own networks
with :func:`torch_device` and :func:`torch_threads` from their config.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from realfill.attention import CPU_SDPA_BACKENDS, Attention, choose_attention
from realfill.errors import UserError


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


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor.to(device, dtype)`` without a host synchronisation: a copy from ordinary (pageable) host
    memory to a CUDA GPU waits for everything queued before it, so a training step's few small copies
    (noise, timesteps, masks) would stall the host once each; from pinned memory, ``non_blocking``, the
    copy is queued like a kernel. The dtype cast then runs on the GPU (the same values). Elsewhere: ``.to``."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device, dtype)
    tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor if dtype is None else tensor.to(dtype)


def enable_tf32(device: torch.device, allow: bool = True) -> bool:
    """TF32 for CUDA matmuls and cuDNN convolutions (Ampere and newer use it; older GPUs ignore the flags),
    as the public RealFill recipe's ``--allow_tf32``. Returns whether it set them (never on a CPU)."""
    if device.type != "cuda" or not allow:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


def resolve_attention(setting: str, device: torch.device, dtype: torch.dtype, compile: bool = False) -> Attention:
    """``train.attention`` on ``device`` computing in ``dtype`` (:func:`realfill.attention.choose_attention`
    with this device's CUDA capability and this torch's version). A backend with no kernel on ``device``
    (``efficient`` or ``cudnn`` on a CPU) is a :class:`UserError` naming the key."""
    if device.type == "cpu" and setting in ("efficient", "cudnn"):
        # "no available kernel", as torch words it: benchmarks/gpu_check.py's bisect reads it as unavailable
        raise UserError(f"train.attention='{setting}' has no available kernel on a CPU (torch's CPU SDPA has "
                        f"{' and '.join(CPU_SDPA_BACKENDS)}); use {', '.join(CPU_SDPA_BACKENDS)}, sdpa or auto")
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return choose_attention(setting, device.type, capability, torch.__version__, DTYPE_NAMES.get(dtype, "float32"),
                            compile)


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
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**30) == 1
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def torch_device(name: str) -> torch.device:
    """A ranker's ``device`` setting as a torch device (``auto``: the first CUDA GPU, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: leave torch's setting alone)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Compute:
    """A command's device, the mixed precision training runs under there, its CPU threads and TF32."""

    device: torch.device
    #: ``train.mixed_precision`` as it runs: ``no``, ``bf16`` or ``fp16``
    precision: str
    #: torch's intra-op threads (``train.threads``); None: torch's own choice
    threads: int | None = None
    #: TF32 matmuls and convolutions on a CUDA GPU (``train.allow_tf32``)
    tf32: bool = True
    #: ``train.attention`` as it runs (the processor, the SDPA backends pinned): the trainer's step and the
    #: sampling loop enter ``attention.pinned()``
    attention: Attention = Attention()

    def apply(self) -> Compute:
        """Set the process's threads and TF32 flags (once per command)."""
        if self.threads:
            torch.set_num_threads(self.threads)
        enable_tf32(self.device, self.tf32)
        return self

    def describe(self) -> str:
        """One line for the run's header."""
        return (f"device {self.device}, mixed precision {self.precision}, "
                f"{torch.get_num_threads()} CPU thread(s){', TF32' if self.tf32 and self.device.type == 'cuda' else ''}, "
                f"{self.attention.describe()}")


def resolve_compute(config: Any, backbone: Any = None) -> Compute:
    """The run config's ``device``, ``train.mixed_precision`` (for the weight dtype ``backbone.dtype``),
    ``train.threads``, ``train.allow_tf32`` and ``train.attention``; ``backbone`` (the Backbone class) gives the CPU estimate a
    GPU config's error quotes."""
    device = resolve_device(config.device, estimate=getattr(backbone, "cpu_estimate", None))
    weights = getattr(torch, getattr(config.backbone, "dtype", "float32"))
    precision = resolve_precision(config.train.mixed_precision, weights, device)
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, weights)
    attention = resolve_attention(config.train.attention, device, autocast, config.train.compile)
    return Compute(device, precision, config.train.threads, config.train.allow_tf32, attention)


def model_compute(model: Any, train: Any) -> Compute:
    """The Compute of a model loaded on its own, outside a command (tests, benchmarks): its device and weight
    dtype with ``train``'s precision, threads, TF32 and attention; applied. A command resolves its Compute from
    the run config once (``realfill.run.check_device``) and passes it down instead."""
    precision = resolve_precision(train.mixed_precision, model.dtype, model.device)
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, model.dtype)
    attention = resolve_attention(train.attention, model.device, autocast, train.compile)
    return Compute(model.device, precision, train.threads, train.allow_tf32, attention).apply()
