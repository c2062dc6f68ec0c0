"""Attention processors every diffusers-based backbone family shares (``InpaintModel.set_attention``).

``train.attention``'s kinds: ``sdpa`` (PyTorch's scaled_dot_product_attention, diffusers'
``AttnProcessor2_0``), ``default`` (diffusers' plain ``AttnProcessor``: batched matmuls and a softmax) and
``small-math`` (:class:`SmallMathAttnProcessor`, the choice ``auto`` makes for a compiled CPU run).
"""

from __future__ import annotations

import math

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
