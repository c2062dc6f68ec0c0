"""FLUX.1 Fill through the shared contracts, on ``tiny-flux`` (the real architecture, tiny, random weights):
the stock pipeline's prompt encoding and mask conditioning; the rectified-flow objective of diffusers' FLUX
scripts; the paper's checks (loss falls on a fixed batch; tests/test_training.py runs the kill/resume and
unknown-pixel gradient tests on tiny-flux too); LoRA that a
stock ``FluxFillPipeline`` reads and samples exactly as we do; the ``full`` adapter; and ``flux-fill``
loading a local folder or a single transformer file, with one-line errors naming every place looked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from realfill.config import resolve_config
from realfill.errors import MissingWeightsError, UserError
from realfill.scene import load_scene
from realfill.training import Trainer, fine_tune
from realfill.device import model_compute

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def scene(example_scene):
    return load_scene(example_scene)


def _config(plugins, *overrides, adapter="lora"):
    return resolve_config(preset="smoke", components={"backbone": "tiny-flux", "adapter": adapter},
                          overrides=["train.resolution=32", "train.batch_size=4", *overrides], plugins=plugins)


def _model(plugins, **settings):
    return plugins.registry("backbone").create(plugins.registry("backbone").get("tiny-flux").Config(**settings)).load()


def _trainer(plugins, config, scene):
    model = plugins.registry("backbone").create(config.backbone).load()
    return Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene,
                   config.train, seed=config.seed, compute=model_compute(model, config.train))


def _image_and_mask(side=32):
    image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))  # [0, 1]
    mask = torch.zeros(1, 1, side, side)
    mask[..., side // 2 - 3:] = 1
    return image, mask


def test_tiny_flux_has_the_flux_fill_architecture(plugins):
    from realfill.diffusion import InpaintModel

    model = _model(plugins)
    transformer, vae = model.denoiser, model.vae
    # 2x2 tokens of 16 noisy + 16 masked-image latent channels and the 8x8 pixel mask: 4 * (16 + 16 + 64) in
    assert transformer.config.in_channels == 384 and transformer.config.out_channels == 64
    assert transformer.config.guidance_embeds
    assert vae.config.latent_channels == 16 and vae.config.shift_factor == 0.1159
    assert (model.latent_factor, model.latent_channels, model.size_multiple) == (8, 16, 16)
    assert model.text_encoders == [model.pipeline.text_encoder]  # CLIP may train; T5 is frozen
    assert model.t5 in model.frozen_modules()
    assert type(model).add_noise is not InpaintModel.add_noise  # flow matching, not the DDPM default
    image = torch.rand(2, 3, 64, 32) * 2 - 1
    with torch.no_grad():
        latents = model.encode_images(image)
        assert latents.shape == (2, 16, 8, 4)
        # the shift factor is applied on the way in and undone on the way out
        raw = vae.encode(image).latent_dist.mode()
        torch.testing.assert_close(latents, (raw - 0.1159) * 0.3611)
        assert model.decode_latents(latents).shape == (2, 3, 64, 32)


def test_prompts_and_mask_conditioning_are_the_pipelines(plugins):
    """encode_prompts gives the pipeline's encode_prompt bit for bit; the packed mask and masked-image
    latents that denoise builds are prepare_mask_latents's (same generator, same draws)."""
    model = _model(plugins)
    pipe = model.pipeline
    prompts = ["a photo of sks", ""]
    with torch.no_grad():
        ours = [model.encode_prompts(prompts) for _ in range(2)]  # the second from the caches
        embeds, pooled, text_ids = pipe.encode_prompt(prompts, device=model.device, max_sequence_length=32)
        for cond in ours:
            assert torch.equal(cond["encoder_hidden_states"], embeds)
            assert torch.equal(cond["pooled_projections"], pooled)
        assert not torch.equal(pooled[0], pooled[1]) and not torch.equal(embeds[0], embeds[1])

        image, mask = _image_and_mask(48)
        masked = (image * 2 - 1) * (1 - mask)
        theirs_mask, theirs_latents = pipe.prepare_mask_latents(
            mask.expand(2, -1, -1, -1), masked.expand(2, -1, -1, -1), 2, 16, 1, 48, 48, torch.float32, model.device,
            [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)])
        latents = torch.cat([model.encode_images(masked, generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
        torch.testing.assert_close(model.pack(latents), theirs_latents, rtol=0, atol=1e-5)  # batch-of-2 VAE pass
        assert torch.equal(model.pack(model.latent_mask(mask.expand(2, -1, -1, -1))), theirs_mask)
        assert theirs_mask.shape == (2, 9, 256)


def test_denoise_is_the_transformer_call_the_pipeline_makes(plugins):
    """One sampling step of the stock pipeline, watched with a forward hook on its transformer: our
    denoise, given the same (unpacked) latents, timestep and masks, builds the same hidden states and
    returns the same prediction, unpacked."""
    model = _model(plugins, guidance=30.0)  # the pipeline's default embedded guidance, for this comparison
    seen = {}

    def hook(module, args, kwargs, output):
        seen.update({k: kwargs[k] for k in ("hidden_states", "timestep", "guidance")}, out=output[0])

    handle = model.denoiser.register_forward_hook(hook, with_kwargs=True)
    image, mask = _image_and_mask()
    with torch.no_grad():
        model.pipeline(prompt="a photo of sks", image=image, mask_image=mask, height=32, width=32,
                       num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="pt",
                       max_sequence_length=32)
    handle.remove()
    assert torch.equal(seen["guidance"], torch.full([1], 30.0))
    with torch.no_grad():
        hidden = seen["hidden_states"]
        noisy = model.unpack(hidden[..., :64], 4, 4)
        masked_image = (image * 2 - 1) * (1 - mask)
        masked_latents = model.unpack(hidden[..., 64:128], 4, 4)  # what the pipeline encoded
        cond = model.encode_prompts(["a photo of sks"])
        ours = model.denoise(noisy, seen["timestep"] * 1000, model.latent_mask(mask), masked_latents, cond)
        assert torch.equal(model.pack(model.latent_mask(mask)), hidden[..., 128:])
        torch.testing.assert_close(ours, model.unpack(seen["out"], 4, 4), rtol=0, atol=1e-6)
        # the pipeline's draws, replayed: the image's posterior, the initial noise, the masked image's posterior
        g = torch.Generator().manual_seed(0)
        model.encode_images(image * 2 - 1, generator=g)
        noise = torch.randn(1, 16, 4, 4, generator=g)
        torch.testing.assert_close(noisy, noise, rtol=0, atol=1e-6)  # strength 1: pure noise (sigma 1)
        torch.testing.assert_close(masked_latents, model.encode_images(masked_image, generator=g), rtol=0, atol=1e-6)


def test_training_is_the_rectified_flow_recipe(plugins):
    """Timesteps from the logit-normal density (diffusers' compute_density_for_timestep_sampling, on the
    trainer's generator), x_t = (1 - sigma) x0 + sigma noise, target noise - x0, and per-token loss weights."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    model = _model(plugins)
    g = torch.Generator().manual_seed(0)
    timesteps = model.sample_training_timesteps(4096, g)
    u = compute_density_for_timestep_sampling("logit_normal", 4096, 0.0, 1.0,
                                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(timesteps, model.noise_scheduler.timesteps[(u * 1000).long()])
    sigmas = model.sigmas(timesteps).flatten()
    torch.testing.assert_close(sigmas, timesteps / 1000, rtol=0, atol=1e-6)
    logit = torch.logit(sigmas.double())
    assert abs(logit.mean()) < 0.05 and abs(logit.std() - 1) < 0.05  # logit-normal(0, 1)
    uniform = _model(plugins, weighting_scheme="none").sample_training_timesteps(4096, torch.Generator().manual_seed(0))
    assert abs(uniform.float().mean() / 1000 - 0.5) < 0.02 and uniform.float().std() > 250

    x0, noise = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    t = model.noise_scheduler.timesteps[torch.tensor([100, 900])]
    sigma = (t / 1000).reshape(2, 1, 1, 1)
    torch.testing.assert_close(model.add_noise(x0, noise, t), (1 - sigma) * x0 + sigma * noise)
    assert torch.equal(model.training_target(x0, noise, t), noise - x0)
    assert model.timestep_loss_weighting(t) is None  # logit-normal: the scripts' weighting is ones
    torch.testing.assert_close(_model(plugins, weighting_scheme="sigma_sqrt").timestep_loss_weighting(t), sigma ** -2)

    unknown = torch.zeros(1, 1, 64, 64)
    unknown[..., 17, 40] = 1  # one pixel: latent cell (2, 5), packed token (1, 2)
    weights = model.loss_weights(unknown)
    assert weights.shape == (1, 1, 8, 8)
    tokens = model.pack(weights.expand(-1, 16, -1, -1))  # [1, 16 tokens, 64 values]
    assert torch.equal(tokens.amin(-1), tokens.amax(-1))  # each token is in or out as a whole
    assert tokens[0, 1 * 4 + 2].sum() == 0 and tokens.sum() == 15 * 64


@pytest.mark.slow
def test_loss_falls_when_overfitting_a_fixed_batch(plugins, scene):
    config = _config(plugins, "train.lr_denoiser=1e-2", "train.lr_text_encoder=1e-2", "adapter.dropout=0.0",
                     "train.prompt_dropout=0.0")
    trainer = _trainer(plugins, config, scene)
    trainer._set_train_mode(True)
    batch = trainer.draw_batch()
    state = trainer.generator.get_state()
    losses = []
    for _ in range(30):
        trainer.generator.set_state(state)  # the same noise, timesteps and VAE samples every step
        loss = trainer.loss(batch)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["lora", "dora"])
def test_stock_flux_fill_pipeline_with_our_lora_gives_our_samples(plugins, scene, tmp_path, adapter):
    from realfill_plugins.backbones.tiny_flux import build_tiny_flux

    config = _config(plugins, "train.steps=4", "train.lr_denoiser=5e-3", "train.lr_text_encoder=5e-3", adapter=adapter)
    model = plugins.registry("backbone").create(config.backbone).load()
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    keys = list(load_file(tmp_path / "adapter" / "pytorch_lora_weights.safetensors"))
    assert any(k.startswith("transformer.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    for stream in ("attn.to_q", "attn.add_q_proj", "attn.to_add_out", "single_transformer_blocks.0.attn.to_k"):
        assert any(stream in k for k in keys), stream  # image and text streams, double and single blocks
    assert not any("text_encoder_2" in k for k in keys)  # T5 stays frozen

    stock = build_tiny_flux(0)  # the same base weights, untouched by us
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(str(tmp_path / "adapter"))
    image, mask = _image_and_mask()
    kwargs = dict(prompt=["a photo of sks"] * 2, image=image.expand(2, -1, -1, -1),
                  mask_image=mask.expand(2, -1, -1, -1), height=32, width=32, num_inference_steps=3, output_type="pt", max_sequence_length=32)
    gens = lambda: [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]  # noqa: E731
    theirs = stock(generator=gens(), **kwargs).images  # guidance_scale: the pipeline's default, 30
    ours = model.generate(image * 2 - 1, mask, "a photo of sks", generators=gens(),
                          scheduler=model.make_scheduler("auto"), steps=3, guidance_scale=30.0)
    base = build_tiny_flux(0)
    base.set_progress_bar_config(disable=True)
    untrained = base(generator=gens(), **kwargs).images
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert (ours - untrained).abs().max() > 1e-3  # the LoRA does change the samples
    # seeded per sample: sample 1 alone is sample 1 of the batch
    alone = model.generate(image * 2 - 1, mask, "a photo of sks", generators=gens()[1:],
                           scheduler=model.make_scheduler("euler"), steps=3, guidance_scale=30.0)
    torch.testing.assert_close(alone[0], ours[1], rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_adapters_train_save_and_reload_to_the_same_samples(plugins, scene, tmp_path, adapter):
    from realfill.run import check_device, load_trained
    from realfill.sampling import sample_completions

    config = _config(plugins, "train.steps=2", adapter=adapter)
    model = plugins.registry("backbone").create(config.backbone).load()
    before = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    state = model.denoiser.state_dict()
    if adapter == "full":
        assert any(not torch.equal(v, before[k]) for k, v in state.items())
    else:  # LoRA's B matrices start at zero: training moved them
        assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)
    trained = load_trained(config, tmp_path, plugins=plugins, compute=check_device(config, plugins))  # a fresh model with the saved adapter
    kwargs = dict(prompt="a photo of sks", resolution=32, scheduler="auto", steps=2, num_samples=1, seed=0,
                  guidance_scale=30.0)
    ours = sample_completions(model, scene.target, scene.mask, **kwargs)[0]
    reloaded = sample_completions(trained, scene.target, scene.mask, **kwargs)[0]
    assert ours.shape == scene.target.shape
    np.testing.assert_allclose(ours.astype(int), reloaded.astype(int), atol=1)
    with pytest.raises(UserError, match="sample.scheduler: 'ddpm'.*flow-matching"):
        model.make_scheduler("ddpm")


# -- flux-fill: real weights, offline ------------------------------------------------------------------


def _flux_fill(plugins, **settings):
    return plugins.registry("backbone").create(plugins.registry("backbone").get("flux-fill").Config(max_sequence_length=32, **settings))


def _same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _sample(model):
    image, mask = _image_and_mask()
    return model.generate(image * 2 - 1, mask, "a photo of sks", generators=[torch.Generator().manual_seed(0)],
                          scheduler=model.make_scheduler("auto"), steps=2)


def test_flux_fill_loads_a_local_folder_and_a_single_transformer_file(plugins, tmp_path, empty_hub_cache):
    from realfill_plugins.backbones.tiny_flux import build_tiny_flux

    tiny = build_tiny_flux(0)
    tiny.save_pretrained(tmp_path / "model")
    reference = _model(plugins)
    folder = _flux_fill(plugins, model=str(tmp_path / "model"), dtype="float32").load()
    assert folder.dtype == torch.float32
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert _same_weights(getattr(folder.pipeline, name), getattr(reference.pipeline, name)), name
    torch.testing.assert_close(_sample(folder), _sample(reference), rtol=0, atol=1e-5)

    # the transformer as one file (another seed's), the rest from the folder
    other = build_tiny_flux(1).transformer
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "transformer.safetensors"))
    single = _flux_fill(plugins, model=str(tmp_path / "transformer.safetensors"), config=str(tmp_path / "model"),
                        dtype="float32").load()
    assert _same_weights(single.denoiser, other) and _same_weights(single.vae, reference.vae)
    bf16 = _flux_fill(plugins, model=str(tmp_path / "model")).load()  # the default dtype
    assert bf16.dtype == torch.bfloat16 and next(bf16.t5.parameters()).dtype == torch.bfloat16

    partial = dict(list(other.state_dict().items())[:-3])  # a file that lacks some weights is refused
    save_file({k: v.contiguous() for k, v in partial.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UserError) as info:
        _flux_fill(plugins, model=str(tmp_path / "partial.safetensors"), config=str(tmp_path / "model")).load()
    assert "\n" not in str(info.value) and "partial.safetensors" in str(info.value)


def test_missing_flux_weights_name_every_place_and_the_gate(plugins, tmp_path, empty_hub_cache):
    with pytest.raises(MissingWeightsError) as info:
        _flux_fill(plugins).load()
    message = str(info.value)
    assert "\n" not in message
    for fragment in (f"the local model cache {empty_hub_cache} for 'black-forest-labs/FLUX.1-Fill-dev'", "gated",
                     "accept its licence at https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev",
                     "hf download black-forest-labs/FLUX.1-Fill-dev", "backbone.model=PATH", "backbone.config=FOLDER"):
        assert fragment in message, message
    path = tmp_path / "flux1-fill-dev.safetensors"
    with pytest.raises(MissingWeightsError, match=f"{path} \\(no such file or folder\\)"):
        _flux_fill(plugins, model=str(path)).load()
    path.write_bytes(b"not read: the VAE and text encoders are looked for first")
    with pytest.raises(MissingWeightsError) as info:
        _flux_fill(plugins, model=str(path)).load()
    assert f"for the transformer file {path}" in str(info.value) and str(empty_hub_cache) in str(info.value)


@pytest.mark.slow
def test_cli_flux_checkpoint_in_the_wrong_place_is_one_line_exit_2(example_scene, tmp_path):
    from tests.test_cli import assert_one_line_error, realfill

    path = tmp_path / "models" / "flux1-fill-dev.safetensors"
    proc = realfill("fill", str(example_scene), "--preset", "smoke", "--backbone", "flux-fill",
                    "--set", f"backbone.model={path}", "--out", str(tmp_path / "run"),
                    env={"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"})
    assert_one_line_error(proc, "backbone flux-fill", f"{path} (no such file or folder)", "gated")
    proc = realfill("fill", str(example_scene), "--preset", "smoke", "--backbone", "flux-fill", "--out",
                    str(tmp_path / "run"), env={"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"})
    cache = tmp_path / "empty-cache"
    assert_one_line_error(proc, f"the local model cache {cache} for 'black-forest-labs/FLUX.1-Fill-dev'",
                          "hf download black-forest-labs/FLUX.1-Fill-dev")
    assert not (tmp_path / "run").exists()


# -- the command line -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_fill_with_tiny_flux_writes_the_whole_run_folder_in_minutes(example_scene, tmp_path):
    """``realfill fill SCENE --preset smoke --backbone tiny-flux``: the whole run folder, the known pixels
    kept outside the feathered band; 11 s here (the issue allows 3 minutes on a CPU)."""
    import time
    import tomllib

    from realfill.cli import main
    from tests.material import known_pixels_kept
    from realfill.scene import read_rgb

    run_dir = tmp_path / "run"
    start = time.perf_counter()
    args = ["fill", str(example_scene), "--preset", "smoke", "--backbone", "tiny-flux", "--out", str(run_dir)]
    assert main(args) == 0
    assert time.perf_counter() - start < 180
    for name in ("config.toml", "adapter/pytorch_lora_weights.safetensors", "train_log.jsonl", "ranking.json",
                 "result.png", "contact_sheet.png", "run.json", "train_state.json"):
        assert (run_dir / name).is_file(), name
    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert config["backbone"]["name"] == "tiny-flux" and config["sample"]["scheduler"] == "auto"
    samples = sorted((run_dir / "samples").glob("*.png"))
    assert len(samples) == config["sample"]["num_samples"]
    ranking = json.loads((run_dir / "ranking.json").read_text())
    assert sorted(r["file"] for r in ranking) == [p.name for p in samples]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == config["train"]["steps"] and all(np.isfinite(e["loss"]) for e in log)
    scene = load_scene(example_scene)
    for path in [run_dir / "result.png", *samples]:
        image = read_rgb(path)
        assert image.shape == scene.target.shape
        assert known_pixels_kept(image, scene.target, scene.mask, config["sample"]["mask_dilate"],
                                 config["sample"]["feather"]), path
        assert not np.array_equal(image[scene.mask], scene.target[scene.mask])


@pytest.mark.slow
def test_ablate_compares_tiny_sd2_and_tiny_flux(example_scene, tmp_path):
    import csv

    from realfill.cli import main

    out = tmp_path / "abl"
    assert main(["ablate", str(example_scene), "--preset", "smoke", "--backbone", "tiny-sd2", "--backbone",
                 "tiny-flux", "--set", "train.steps=2", "--samples", "2", "--out", str(out), "--no-tui"]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["backbone"], r["status"]) for r in rows] == [("tiny-sd2", "ok"), ("tiny-flux", "ok")]
    assert all(float(r["psnr_masked"]) > 0 for r in rows)


@pytest.mark.slow
def test_real_size_flux_parameter_counts_match_the_docs():
    """docs/memory.md's FLUX.1 Fill figures, recomputed on the meta device (no weights): the LoRA of
    the paper-flux preset (rank 64 on both streams' attention projections; 8 projections of 3072 x 3072 in
    each of 19 double-stream blocks, 3 in each of 38 single-stream blocks)."""
    from benchmarks.architecture import lora_parameter_counts
    from realfill.config_files import load_preset

    adapter = {k: v for k, v in load_preset("paper-flux")["adapter"].items() if k != "name"}
    counts = lora_parameter_counts("flux", **adapter)
    assert counts["denoiser_params"] == 11_902_391_360 and counts["t5_params"] == 4_762_310_656
    assert counts["text_encoder_params"] == 123_060_480 and counts["vae_params"] == 83_819_683
    assert counts["denoiser_lora"] == (19 * 8 + 38 * 3) * 64 * (3072 + 3072) == 104_595_456
    assert counts["text_encoder_lora"] == 0 and counts["lora_total"] == 104_595_456  # CLIP not trained
    assert counts["base_total"] == 16_871_582_179


def test_paper_flux_preset_holds_the_recipe(plugins):
    """The paper's method with the public FLUX Fill LoRA settings, bf16 and gradient checkpointing, and FLUX
    Fill's sampling defaults (flow-matching Euler, 50 steps, guidance 30)."""
    config = resolve_config(preset="paper-flux", plugins=plugins)
    b, a, t, s = config.backbone, config.adapter, config.train, config.sample
    assert (b.name, b.dtype, b.weighting_scheme, b.guidance) == ("flux-fill", "bfloat16", "logit_normal", 1.0)
    assert (a.name, a.rank, a.alpha, a.unet_targets, a.train_text_encoder) == ("lora", 64, 32, None, False)
    assert (t.steps, t.batch_size, t.resolution, t.lr_denoiser, t.lr_schedule) == (500, 4, 512, 1e-4, "constant")
    assert (t.mixed_precision, t.gradient_checkpointing) == ("bf16", True)
    assert (t.prompt, t.prompt_dropout, t.full_mask_prob, config.masking.name) == ("a photo of sks", 0.1, 0.1,
                                                                                   "lama-boxes")
    assert (s.scheduler, s.steps, s.guidance_scale, s.num_samples) == ("auto", 50, 30.0, 64)


@pytest.mark.slow
def test_a_ddpm_sampler_on_flux_is_refused_before_anything_is_written(example_scene, tmp_path):
    from tests.test_cli import assert_one_line_error, realfill

    proc = realfill("fill", str(example_scene), "--preset", "smoke", "--backbone", "tiny-flux", "--set",
                    "sample.scheduler=ddpm", "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "sample.scheduler: 'ddpm'", "flow-matching", "'auto' or 'euler'")
    assert not (tmp_path / "run").exists()


# -- backbone.quantize: the frozen transformer in int8 (torchao), LoRA beside it -----------------------


@pytest.mark.slow
def test_int8_weight_only_transformer_trains_saves_reloads_and_samples(plugins, scene, tmp_path):
    """``backbone.quantize = "int8-weight-only"`` (the paper-flux-24gb preset): every linear weight of the
    transformer is int8 (torchao), the LoRA beside it float32 (peft's TorchaoLoraLinear) and it trains (finite
    loss, LoRA weights move, the int8 base does not); the adapter saves, loads onto a fresh quantized model
    and samples the same; the int8 model's loss is the float32 model's to int8's precision."""
    pytest.importorskip("torchao", reason="the `quant` extra (torchao) is not installed")
    from realfill.run import check_device, load_trained
    from realfill.sampling import sample_completions

    config = _config(plugins, "train.steps=3", "train.lr_denoiser=5e-3", "backbone.quantize=int8-weight-only",
                     "adapter.train_text_encoder=false")
    model = plugins.registry("backbone").create(config.backbone).load()
    linears = [m for m in model.denoiser.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.qdata.dtype == torch.int8 for m in linears)
    assert model.dtype == torch.float32  # the weights compute in the dtype they had

    # the same batch, the same draws: the int8 transformer's loss is the float32 one's to int8's precision
    plain = _trainer(plugins, _config(plugins, "adapter.train_text_encoder=false"), scene)
    quant = _trainer(plugins, config, scene)
    batch = plain.draw_batch()
    quant.draw_batch()
    torch.testing.assert_close(quant.loss(batch), plain.loss(batch), rtol=0.05, atol=0)

    base = {name: m.weight.qdata.clone() for name, m in model.denoiser.named_modules() if isinstance(m, torch.nn.Linear)}
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert losses and all(np.isfinite(losses))
    lora = [m for m in model.denoiser.modules() if type(m).__name__ == "TorchaoLoraLinear"]
    assert lora and all(m.lora_B["default"].weight.dtype == torch.float32 for m in lora)
    assert any(m.lora_B["default"].weight.abs().sum() > 0 for m in lora)  # B starts at zero: training moved it
    for name, m in model.denoiser.named_modules():
        if name.endswith("base_layer") and isinstance(m, torch.nn.Linear):
            assert torch.equal(m.weight.qdata, base[name.removesuffix(".base_layer")])  # frozen
    keys = list(load_file(tmp_path / "adapter" / "pytorch_lora_weights.safetensors"))
    assert keys and all(k.startswith("transformer.") for k in keys)

    trained = load_trained(config, tmp_path, plugins=plugins, compute=check_device(config, plugins))  # a fresh quantized model with the saved adapter
    assert all(m.base_layer.weight.qdata.dtype == torch.int8 for m in trained.denoiser.modules()
               if type(m).__name__ == "TorchaoLoraLinear")
    kwargs = dict(prompt="a photo of sks", resolution=32, scheduler="auto", steps=2, num_samples=1, seed=0,
                  guidance_scale=30.0)
    ours = sample_completions(model, scene.target, scene.mask, **kwargs)[0]
    reloaded = sample_completions(trained, scene.target, scene.mask, **kwargs)[0]
    np.testing.assert_allclose(ours.astype(int), reloaded.astype(int), atol=1)


def test_an_unknown_quantization_is_one_line(plugins):
    with pytest.raises(UserError, match="backbone.quantize"):
        _config(plugins, "backbone.quantize=nf4")


def test_paper_flux_24gb_preset_is_paper_flux_with_an_int8_transformer(plugins):
    """The 24 GB preset is paper-flux's recipe with the transformer in int8, and docs/memory.md's count
    of its int8 bytes holds for the real architecture (its linear layers on the meta device)."""
    from benchmarks.architecture import build_meta_flux
    from realfill.config import dump_config

    lean, full = (resolve_config(preset=p, plugins=plugins) for p in ("paper-flux-24gb", "paper-flux"))
    assert lean.backbone.quantize == "int8-weight-only" and full.backbone.quantize == "none"
    assert (lean.train.mixed_precision, lean.train.gradient_checkpointing) == ("bf16", True)
    assert lean.adapter == full.adapter and lean.train == full.train and lean.masking == full.masking
    assert 'quantize = "int8-weight-only"' in dump_config(lean)
    linears = [m for m in build_meta_flux().denoiser.modules() if isinstance(m, torch.nn.Linear)]
    weights, rows = sum(m.weight.numel() for m in linears), sum(m.weight.shape[0] for m in linears)
    assert (weights, rows) == (11_899_305_984, 3_065_920)
    # int8 weights, a float32 scale and a bf16 bias per row, the 19,456 other parameters in bf16
    assert round((weights + rows * (4 + 2) + 19_456 * 2) / 2**30, 2) == 11.10
