"""Attention processors every diffusers-based backbone family shares (``InpaintModel.set_attention``).

``train.attention``'s kinds: ``sdpa`` (PyTorch's scaled_dot_product_attention, diffusers'
``AttnProcessor2_0``), ``default`` (diffusers' plain ``AttnProcessor``: batched matmuls and a softmax) and
``small-math`` (:class:`SmallMathAttnProcessor`, the choice ``auto`` makes for a compiled CPU run); and
``flash``, ``efficient``, ``cudnn``, ``math``: SDPA pinned to that one backend (``torch.nn.attention.sdpa_kernel``)
for every attention call of every model, the FLUX transformer's and the text encoders' included.

:func:`choose_attention` turns the setting into an :class:`Attention` (the processor and the SDPA backends
allowed) as a pure function of the device, its CUDA capability, the torch version and the compute dtype,
so that what ``auto`` picks is testable on a CPU; ``realfill.device.Compute`` resolves it once per command and
the trainer's step and the sampling loop enter :meth:`Attention.pinned`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

#: SDPA's backends by their ``train.attention`` names (torch.nn.attention.SDPBackend's members)
SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
#: every value ``train.attention`` takes
ATTENTION_SETTINGS = ("auto", "sdpa", "default", *SDPA_BACKENDS)
#: the backends torch has a CPU kernel for (efficient and cuDNN attention are CUDA-only)
CPU_SDPA_BACKENDS = ("flash", "math")

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
        # diffusers on use: `realfill plugins` and `realfill config` import this module and start without it
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
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0  # on use, as above

    return {"sdpa": AttnProcessor2_0, "default": AttnProcessor, "small-math": SmallMathAttnProcessor}[kind]()


@dataclass(frozen=True)
class Attention:
    """``train.attention`` as it runs: the diffusers processor ``set_attention`` installs (``sdpa``,
    ``default`` or ``small-math``) and the SDPA backends every ``scaled_dot_product_attention`` call may use,
    in torch's order of preference (None: SDPA's own choice, nothing pinned)."""

    processor: str = "sdpa"
    backends: tuple[str, ...] | None = None

    def pinned(self):
        """A context in which SDPA uses only :attr:`backends` (a no-op when None). ``sdpa_kernel`` sets
        process-wide flags, so a backward run inside the context (and gradient checkpointing's recompute in
        it) obeys them too: the trainer's step enters it around forward and backward."""
        if self.backends is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        members = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
        return sdpa_kernel([members[name] for name in self.backends])

    def describe(self) -> str:
        backends = "SDPA's own choice" if self.backends is None else "SDPA " + "/".join(self.backends)
        return f"attention {self.processor} ({backends})"


def _version(text: str) -> tuple[int, int]:
    """``2.11.0+cu130`` -> ``(2, 11)``."""
    major, minor = (text.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def choose_attention(setting: str, device_type: str, capability: tuple[int, int] | None, torch_version: str,
                     dtype: str, compile: bool = False) -> Attention:
    """What ``train.attention = setting`` runs on a ``device_type`` device (``capability``: its CUDA compute
    capability, None off CUDA) under ``torch_version``, computing in ``dtype`` (``float32``, ``float16`` or
    ``bfloat16``: the autocast dtype where there is one), with or without ``train.compile``.

    ``sdpa`` and ``default`` are SDPA's own choice of backend (``default``'s plain processor where diffusers
    has one); a backend's name pins every SDPA call to it. ``auto``:

    - on a CUDA GPU of capability 9.x (H100, H200) under torch 2.11 or newer, every backend but cuDNN:
      flash first where the dtype allows it (float16 / bfloat16), then memory-efficient, then math. A
      defence: cuDNN attention, SDPA's default on Hopper since torch 2.11, has NaN-gradient reports there
      (pytorch/pytorch#196678 with an explicit mask at lengths 64 mod 128; NVIDIA/cudnn-frontend#1072 on
      an H200 without a mask). The real-size FLUX.1 Fill step's "illegal memory access" in backward on an
      H200 under torch 2.11 (issue 20) has an unknown cause (FLUX passes no mask, at 1,536 tokens: not
      #196678); ``benchmarks/gpu_check.py``'s bisect is the way to find it;
    - on a CPU with ``train.compile``, the small-math processor (:class:`SmallMathAttnProcessor`);
    - elsewhere, SDPA's own choice."""
    if setting in SDPA_BACKENDS:
        return Attention("sdpa", (setting,))
    if setting in ("sdpa", "default"):
        return Attention(setting)
    if setting != "auto":
        raise ValueError(f"train.attention: '{setting}'; one of {', '.join(ATTENTION_SETTINGS)}")
    if device_type == "cpu" and compile:
        return Attention("small-math")
    if device_type == "cuda" and capability is not None and capability[0] == 9 and _version(torch_version) >= (2, 11):
        # a defence: cuDNN SDPA backward has NaN-gradient reports on H100/H200 from torch 2.11 on
        # (pytorch/pytorch#196678, NVIDIA/cudnn-frontend#1072)
        half = dtype in ("float16", "bfloat16")
        return Attention("sdpa", ("flash", "efficient", "math") if half else ("efficient", "math"))
    return Attention("sdpa")
