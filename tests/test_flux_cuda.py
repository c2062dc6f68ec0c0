"""FLUX.1 Fill in the ``cuda`` matrix (``pytest -m cuda``; ``scripts/gpu-check.sh`` runs it on a GPU): each case
small enough for seconds there, so that a FLUX fault on a GPU shows in a test before the real-size model is
built. Without a GPU they are skipped with the reason; ``REALFILL_CUDA_TEST_DEVICE=cpu`` sends them to the
CPU (the tiny-flux cases take seconds there; the real-width one minutes: ``benchmarks/real_size.py``'s build
at FLUX.1 Fill's real width, paper-flux's shapes).

- ``tiny-flux`` LoRA training in bfloat16 with gradient checkpointing (paper-flux's settings, tiny): finite
  losses, every LoRA weight group changes; then sampling from it: finite, varied.
- The LoRA that training wrote, read by a stock ``FluxFillPipeline.load_lora_weights`` on the device: the
  same samples as ours.
- The real-width reduced FLUX (2 double-stream + 2 single-stream blocks, one T5 layer; real hidden sizes and
  head dims) at ``paper-flux``'s exact shapes: 512 px, batch 4, 512 T5 tokens, rank-64 LoRA (alpha 32),
  bfloat16, gradient checkpointing: one forward + backward + optimizer step, finite, the LoRA moved. The
  real-size ``paper-flux`` step died in ``loss.backward()`` on an H200 (issue 20); this is its smallest
  likeness.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from realfill.config import resolve_config
from realfill.scene import load_scene
from tests.material import test_devices
from realfill.training import Trainer, fine_tune
from realfill.device import model_compute

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: the GPU case only (the CPU twins of these already run in tests/test_flux.py)
CUDA = [p for p in test_devices() if p != "cpu"]


def _config(plugins, device, *overrides):
    return resolve_config(preset="paper-flux", components={"backbone": "tiny-flux"},
                          overrides=["train.resolution=32", "sample.resolution=32", "train.batch_size=4", "train.steps=3",
                                     "train.lr_denoiser=5e-3", "train.checkpoint_every=0", "backbone.dtype=bfloat16",
                                     "backbone.max_sequence_length=32", f"device={device}", *overrides],
                          plugins=plugins)


def _lora_state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in trainer.trainable_state().items()}


@pytest.mark.parametrize("device", CUDA)
def test_tiny_flux_lora_trains_in_bf16_with_checkpointing_and_samples(plugins, example_scene, device):
    config = _config(plugins, device)
    assert config.train.gradient_checkpointing and config.train.mixed_precision == "bf16"
    assert config.adapter.rank == 64 and not config.adapter.train_text_encoder
    model = plugins.registry("backbone").create(config.backbone).load(device=torch.device(device))
    assert model.dtype == torch.bfloat16
    trainer = Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
                      load_scene(example_scene), config.train, seed=0, compute=model_compute(model, config.train))
    assert model.denoiser.is_gradient_checkpointing
    before = _lora_state(trainer)
    losses = [trainer.train_step() for _ in range(3)]
    assert all(math.isfinite(x) for x in losses), losses
    after = _lora_state(trainer)
    assert before.keys() == after.keys() and before
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) == len(before), sorted(set(before) - set(moved))[:5]  # every LoRA tensor trained

    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32, device=device)
    mask[..., 16:] = 1
    with torch.no_grad():
        samples = model.generate(image, mask, "a photo of sks",
                                 generators=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)],
                                 scheduler=model.make_scheduler("auto"), steps=3, guidance_scale=30.0)
    assert samples.shape == (2, 3, 32, 32) and torch.isfinite(samples).all()
    assert samples.std() > 1e-3 and (samples[0] - samples[1]).abs().max() > 1e-4  # not flat, seeded apart


@pytest.mark.parametrize("device", CUDA)
def test_stock_flux_fill_pipeline_reads_our_lora_on_the_device(plugins, example_scene, tmp_path, device):
    from realfill_plugins.backbones.tiny_flux import build_tiny_flux

    # float32, as the SD twin in tests/test_lora_diffusers.py: equality to 1e-5 needs the same kernels in
    # the same precision on both sides
    config = _config(plugins, device, "backbone.dtype=float32", "train.mixed_precision=no",
                     "train.gradient_checkpointing=false")
    model = plugins.registry("backbone").create(config.backbone).load(device=torch.device(device))
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
              load_scene(example_scene), config, tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    stock = build_tiny_flux(0).to(device)  # the same base weights, untouched by us
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(str(tmp_path / "adapter"))
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.zeros(1, 1, 32, 32, device=device)
    mask[..., 16:] = 1
    kwargs = dict(prompt="a photo of sks", image=image, mask_image=mask, height=32, width=32, num_inference_steps=3,
                  output_type="pt", max_sequence_length=config.backbone.max_sequence_length)
    theirs = stock(generator=torch.Generator().manual_seed(1), **kwargs).images  # guidance: Fill's default, 30
    ours = model.generate(image * 2 - 1, mask, "a photo of sks", generators=[torch.Generator().manual_seed(1)],
                          scheduler=model.make_scheduler("auto"), steps=3, guidance_scale=30.0)
    base = build_tiny_flux(0).to(device)
    base.set_progress_bar_config(disable=True)
    untrained = base(generator=torch.Generator().manual_seed(1), **kwargs).images
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert (ours - untrained).abs().max() > 1e-3  # the LoRA does change the samples


@pytest.mark.parametrize("device", CUDA)
def test_real_width_reduced_flux_trains_one_step_at_paper_flux_shapes(plugins, example_scene, device):
    sys.path.insert(0, str(BENCHMARKS))
    from real_size import build_model

    config = resolve_config(preset="paper-flux", overrides=[f"device={device}", "train.checkpoint_every=0"],
                            plugins=plugins)
    train, adapter = config.train, config.adapter
    assert (train.resolution, train.batch_size, adapter.rank, adapter.alpha) == (512, 4, 64, 32)
    assert train.gradient_checkpointing and config.backbone.max_sequence_length == 512
    model = build_model("flux", torch.bfloat16, device=device,
                        layers={"double_layers": 2, "single_layers": 2, "t5_layers": 1})
    transformer = model.denoiser.config
    assert (transformer.num_attention_heads, transformer.attention_head_dim) == (24, 128)  # 3072 wide, FLUX's own
    assert model.t5.config.d_model == 4096 and model.max_sequence_length == 512
    trainer = Trainer(model, plugins.registry("adapter").create(adapter), plugins.registry("masking").create(config.masking),
                      load_scene(example_scene), train, seed=0, compute=model_compute(model, train))
    tokens = model.encode_prompts([train.prompt])["encoder_hidden_states"]
    assert tokens.shape == (1, 512, 4096)
    before = _lora_state(trainer)
    loss = trainer.train_step()  # one forward + backward (blocks recomputed) + AdamW step
    assert math.isfinite(loss), loss
    after = _lora_state(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
