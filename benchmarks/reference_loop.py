"""The reference training loop: the public RealFill recipe's work, every step, with no shortcut.

What ``train_realfill.py`` (the public re-implementation the paper's recipe comes from) does per step, in
fp32: VAE-encode the images, then VAE-encode the masked images in a second pass; tokenize one prompt per
batch item (the empty prompt where it was dropped) and run the text encoder on all of them; run the UNet
(attention by SDPA, diffusers' default processor under torch 2, whatever ``train.attention`` says);
backward; clip; step a for-loop ``torch.optim.AdamW`` (PyTorch's default on a CPU). Nothing is cached
between steps.

It is :class:`realfill.training.Trainer` with only the per-step work replaced, so the batch (crops, masks,
dropout decisions), the random draws (VAE posterior samples, noise, timesteps, in the same order) and the
loss formula are the same: on the same seed both loops give the same loss to float tolerance
(``tests/test_reference_loop.py``), and the benchmark compares only how the work is done.

A backbone whose schedule is not DDPM's (FLUX.1 Fill's flow matching, which the SD recipe never trained)
keeps the recipe's per-step work (two VAE passes, the text encoders every step, eager, a for-loop AdamW) with
the model's own objective (``sample_training_timesteps``, ``add_noise``, ``training_target``, its loss
weights), drawn in the same order as ours.

The batch is drawn by the shared ``Trainer.draw_batch`` except for ``lama-boxes`` masks, which the recipe
makes per item in its dataset's ``__getitem__``, one box at a time: :func:`recipe_box_masks` does that, from
the same generator draws, so its masks equal the plugin's batched ones (``tests/test_reference_loop.py``).
"""

from __future__ import annotations

import torch

from realfill.compiling import uncompile
from realfill.diffusion import loss_weights
from realfill.training import Trainer
from realfill.training_data import Batch


def recipe_box_masks(config, batch_size: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``lama-boxes`` masks made item by item, each box set by a slice assignment, as the recipe's dataset
    does (it also draws each box's numbers one at a time with numpy; here each item's are computed
    together, which is cheaper). The plugin's draws and box geometry, so its masks equal the plugin's
    batched ``box_masks``."""
    from realfill_plugins.masking.lama_boxes import box_geometry, draw_boxes

    masks = torch.zeros(batch_size, 1, height, width)
    draws, invert = draw_boxes(config, batch_size, generator)
    for b, item_draws in enumerate(draws):
        hs, ws, tops, lefts = (t.int().tolist() for t in box_geometry(config, item_draws, height, width))
        for h, w, top, left in zip(hs, ws, tops, lefts):
            masks[b, 0, top:top + h, left:left + w] = 1.0
        if invert[b]:
            masks[b] = 1.0 - masks[b]
    return masks


class _RecipeBoxes:
    """A ``lama-boxes`` strategy whose masks are made by :func:`recipe_box_masks`."""

    def __init__(self, strategy):
        self.strategy = strategy

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        return recipe_box_masks(self.strategy.config, batch_size, height, width, generator)


class ReferenceTrainer(Trainer):
    """The public recipe's per-step work on our batch and RNG stream (see the module docstring)."""

    def __init__(self, model, adapter, masking, scene, train, *, compute, seed: int = 0):
        super().__init__(model, adapter, masking, scene, train, seed=seed, compute=compute)
        if getattr(masking, "name", None) == "lama-boxes":
            self.masking = _RecipeBoxes(masking)
        uncompile(self._compiled)  # eager, whatever train.compile says
        self._compiled = []
        model.set_attention("sdpa")  # diffusers' default processor under torch 2, as the recipe runs it
        self._cond_cache = None  # the recipe runs the text encoder every step, frozen or not
        for encoder in self._offloaded:  # ... so on the device (train.offload_text_encoders sent them off)
            encoder.to(self.device)
        self._offloaded = []
        groups = [{"params": g["params"], "lr": g["initial_lr"] if "initial_lr" in g else g["lr"]}
                  for g in self.optimizer.param_groups]
        self.optimizer = torch.optim.AdamW(  # the default on a CPU: neither fused nor foreach
            groups, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon,
            weight_decay=train.weight_decay, foreach=False, fused=False,
        )
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(train.lr_schedule, self.optimizer, num_warmup_steps=train.warmup_steps,
                                          num_training_steps=max(train.steps, 1))

    def micro_losses(self, batch: Batch):
        yield self.loss(batch)  # the recipe has no gradient accumulation: one loss a step

    def loss(self, batch: Batch) -> torch.Tensor:
        model, g, device, train = self.model, self.generator, self.device, self.train
        images = batch.images.to(device, torch.float32)
        masks = batch.masks.to(device, torch.float32)
        # the VAE posteriors drawn per item, as ours (Trainer.prepare): one generator each, seeded from the run's
        seeds = torch.randint(0, 2**62, (len(images),), generator=g).tolist()
        posteriors = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        with torch.no_grad():  # two VAE passes: the image, then the masked image
            latents = model.encode_images(images, generator=posteriors)
            masked_latents = model.encode_images(images * (masks < 0.5), generator=posteriors)
        latent_masks = model.latent_mask(masks)
        weights = loss_weights(batch.unknown, model.latent_factor).to(device)
        noise = torch.randn(latents.shape, generator=g, dtype=torch.float32).to(device)
        scheduler = model.noise_scheduler
        factor = None
        if hasattr(scheduler, "add_noise"):  # a DDPM-family schedule: the recipe's own calls
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      generator=g).to(device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            kind = scheduler.config.prediction_type
            target = {"epsilon": lambda: noise,
                      "v_prediction": lambda: scheduler.get_velocity(latents, noise, timesteps),
                      "sample": lambda: latents}[kind]()
        else:  # flow matching (FLUX), which the SD recipe never trained: the model's objective, same draws
            timesteps = model.sample_training_timesteps(latents.shape[0], g).to(device)
            noisy = model.add_noise(latents, noise, timesteps)
            target = model.training_target(latents, noise, timesteps)
            factor = model.timestep_loss_weighting(timesteps)
            weights = model.loss_weights(batch.unknown.to(device))
        # one prompt per item, tokenized and encoded every step (with gradients when the encoder trains)
        prompts = ["" if drop else train.prompt for drop in batch.drop_prompt.tolist()]
        grad = torch.enable_grad() if self.text_trains else torch.no_grad()
        # under the run's autocast, as the recipe's accelerate(mixed_precision=...) wraps its models' forwards
        # (a no-op in float32, the recipe's default)
        with grad, self._autocast():
            cond = model.encode_prompts(prompts)
        with self._autocast():
            prediction = model.denoise(noisy, timesteps, latent_masks, masked_latents, cond)
        error = (prediction.float() - target.float()) ** 2 * weights
        if factor is not None:
            error = error * factor
        return error.sum() / (weights.sum() * error.shape[1]).clamp(min=1.0)
