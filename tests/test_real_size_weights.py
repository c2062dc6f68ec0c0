"""``benchmarks/real_size.py`` draws random weights where they live, one generator per tensor seeded from its
name: the values depend on the name and the seed only (not on the order tensors are filled in, not on which
other blocks exist), they come out in the asked dtype at ``N(0, 1/fan_in)``, and the meta device (counted
memory) allocates nothing. On a GPU the same code draws on the GPU; here, on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from real_size import materialize, tensor_seed  # noqa: E402


def _blocks(names: list[str], width: int = 64) -> nn.Module:
    with torch.device("meta"):
        module = nn.ModuleDict({name: nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width)) for name in names})
    return module


def test_each_tensor_depends_on_its_name_and_the_seed_only():
    forward, backward, fewer = _blocks(["a", "b", "c"]), _blocks(["c", "b", "a"]), _blocks(["b"])
    for module in (forward, backward, fewer):
        materialize(module, torch.float32, seed=7, prefix="denoiser.")
    for name in ("a", "b", "c"):
        assert torch.equal(forward[name][0].weight, backward[name][0].weight)  # the order does not matter
    assert torch.equal(forward["b"][0].weight, fewer["b"][0].weight)  # nor the other blocks
    assert not torch.equal(forward["a"][0].weight, forward["b"][0].weight)  # each tensor its own draw
    other = _blocks(["a"])
    materialize(other, torch.float32, seed=8, prefix="denoiser.")
    assert not torch.equal(other["a"][0].weight, forward["a"][0].weight)  # the seed does matter
    assert tensor_seed("x", 0) != tensor_seed("x", 1) and tensor_seed("x", 0) == tensor_seed("x", 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weights_are_drawn_in_the_asked_dtype_at_the_fan_in_scale_norms_one_biases_zero(dtype):
    module = _blocks(["a"], width=512)
    materialize(module, dtype, seed=0)
    linear, norm = module["a"]
    assert linear.weight.dtype == dtype and linear.weight.device.type == "cpu"
    assert linear.weight.float().std().item() == pytest.approx(1 / 512**0.5, rel=0.05)
    assert linear.weight.float().mean().abs().item() < 0.01
    assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_the_meta_device_allocates_nothing():
    module = _blocks(["a"])
    materialize(module, torch.bfloat16, device="meta")
    assert module["a"][0].weight.is_meta and module["a"][0].weight.dtype == torch.bfloat16

