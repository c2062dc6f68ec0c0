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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from diffusers.optimization import get_scheduler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from realfill.atomic import AtomicLog, atomic_dir, atomic_write_text
from realfill.checkpoints import load_checkpoint, save_checkpoint, truncate_log
from realfill.compiling import compile_model, uncompile
from realfill.device import DTYPE_NAMES, Compute, to_device, tune_cpu_allocator
from realfill.diffusion import DENOISER_GROUP, InpaintModel, loss_weights, select_conditioning  # noqa: F401
from realfill.errors import UserError
from realfill.layout import ADAPTER_DIR, CHECKPOINT_DIR, TRAIN_LOG, TRAIN_STATE, adapter_snapshot, adapter_snapshots
from realfill.optimizers import make_optimizer
from realfill.training_data import Batch, TrainingImages, random_resized_crops
from realfill.validation import is_validation_step, sample_validation, strip_path, write_strip



# -- the trainer -----------------------------------------------------------------------------------


class Trainer:
    """One fine-tuning run's state: the model with its adapter applied, optimizer, schedule, RNGs."""

    def __init__(self, model: InpaintModel, adapter, masking, scene, train, *, seed: int = 0,
                 compute: Compute, text_encoder_home: str | torch.device = "cpu"):
        self.model, self.adapter, self.masking, self.train = model, adapter, masking, train
        self.device = model.device
        if train.tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()
        model.freeze()
        torch.manual_seed(seed)  # adapter initialisation (LoRA's A matrices) and, later, LoRA dropout
        groups = adapter.apply(model)
        rates = {DENOISER_GROUP: train.lr_denoiser}
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
        self.optimizer = make_optimizer(groups, train)  # train.optimizer (realfill.optimizers)
        self.lr_scheduler = get_scheduler(train.lr_schedule, self.optimizer, num_warmup_steps=train.warmup_steps,
                                          num_training_steps=max(train.steps, 1))
        self.data = TrainingImages.from_scene(scene, train.resolution, train.crop_scale_min)
        self.generator = torch.Generator("cpu").manual_seed(seed)
        self.step = 0
        self.text_trains = any(p.requires_grad for e in model.text_encoders for p in e.parameters())
        # what the command resolved (realfill.device.Compute, applied there: threads, TF32)
        precision = compute.precision
        self.mixed_precision = precision
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        # fp16 autocast always with loss scaling (CUDA, and CPUs: torch 2.13 has fp16 kernels and a CPU scaler)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        if train.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        self.channels_last = self.device.type == "cuda" if train.channels_last == "auto" else train.channels_last
        if self.channels_last:
            model.to_channels_last()
        # train.attention as the command resolved it (realfill.device.Compute); the step runs inside its SDPA
        # pin (forward, backward and checkpointing's recompute)
        self.attention = compute.attention
        model.set_attention(self.attention.processor)
        self._compiled = compile_model(model) if train.compile else []
        if train.compile:
            self._denoising_loss = torch.compile(self._denoising_loss, dynamic=False,  # static, as compile_model's
                                                 options={"fallback_random": True})
        self._cond_cache = None
        self._modes = None
        if not self.text_trains:  # the text encoders are frozen: encode the two prompts once
            with torch.no_grad():
                self._cond_cache = model.encode_prompts([train.prompt, ""])
        # ... and then they leave the device for ``text_encoder_home`` until :meth:`finish`
        offload = train.offload_text_encoders
        if offload is None:
            offload = self.device.type == "cuda"
        self._offloaded = model.text_encoders_to(text_encoder_home) if offload and not self.text_trains else []
        self._text_encoder_home = text_encoder_home

    # -- one step ------------------------------------------------------------------------------------

    def draw_batch(self, size: int | None = None) -> Batch:
        """The step's batch: ``size`` items (default: the step's ``batch_size x gradient_accumulation_steps``),
        every draw made for all of them at once, so the micro-batches of a step are slices of one batch."""
        g, t = self.generator, self.train
        size = size or t.batch_size * t.gradient_accumulation_steps
        indices = torch.randint(0, len(self.data), (size,), generator=g).tolist()
        images, unknown, is_target = random_resized_crops(self.data, indices, t.resolution, t.crop_scale_min, g)
        masks = self.masking.make_masks(size, t.resolution, t.resolution, is_target=is_target,
                                        target_masks=unknown, generator=g).float()
        full = torch.rand(size, generator=g) < t.full_mask_prob
        masks[full] = 1.0
        masks = torch.maximum(masks, unknown)  # the target's unknown region is never shown as known
        drop_prompt = torch.rand(size, generator=g) < t.prompt_dropout
        return Batch(images, unknown, is_target, masks, drop_prompt)

    def conditioning(self, drop_prompt: torch.Tensor):
        table = self._cond_cache if self._cond_cache is not None else self.model.encode_prompts([self.train.prompt, ""])
        return select_conditioning(table, to_device(drop_prompt.long(), self.device))

    def prepare(self, batch: Batch) -> dict:
        """Every random draw of ``batch``'s loss, made for the whole batch whatever its micro-batches: a
        generator per item for the VAE posteriors (seeded from the run's generator, so a micro-batch's
        encode draws what the whole batch's would), then the noise and the timesteps. The VAE encodes one
        micro-batch (``train.batch_size`` items) at a time, without gradients."""
        model, g, device = self.model, self.generator, self.device
        seeds = torch.randint(0, 2**62, (len(batch.images),), generator=g).tolist()
        posteriors = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        # every host-to-GPU copy queued without waiting (realfill.device.to_device)
        images = to_device(batch.images, device, model.dtype)
        masks = to_device(batch.masks, device, model.dtype)
        encoded = []
        for part in self._micro_batches(len(batch.images)):
            with torch.no_grad(), self._autocast(encode=True):
                encoded.append(model.encode_image_pair(images[part], images[part] * (masks[part] < 0.5),
                                                       generator=posteriors[part]))
        latents = torch.cat([e[0] for e in encoded])
        masked_latents = torch.cat([e[1] for e in encoded])
        noise = to_device(torch.randn(latents.shape, generator=g, dtype=torch.float32), device, latents.dtype)
        timesteps = to_device(model.sample_training_timesteps(latents.shape[0], g), device)
        unknown = to_device(batch.unknown, device)
        # the mean over the whole batch's weighted cells: each micro-batch's error sum is divided by it, so
        # the micro-batches' losses (and gradients) add up to the whole batch's
        denominator = (model.loss_weights(unknown).sum() * latents.shape[1]).clamp(min=1.0)
        return {"latents": latents, "masked_latents": masked_latents, "masks": masks, "unknown": unknown,
                "noise": noise, "timesteps": timesteps, "denominator": denominator}

    def _micro_batches(self, size: int) -> list[slice]:
        step = self.train.batch_size
        return [slice(i, min(i + step, size)) for i in range(0, size, step)]

    def micro_loss(self, batch: Batch, prepared: dict, part: slice) -> torch.Tensor:
        """The share of ``part`` (a micro-batch) in the whole batch's weighted MSE."""
        with self._autocast():
            cond = self.conditioning(batch.drop_prompt[part])
        p = prepared
        whole = part == slice(0, len(p["latents"]))  # one micro-batch: the loss's own mean, as before accumulation
        return self._denoising_loss(p["latents"][part], p["masked_latents"][part], p["masks"][part],
                                    p["unknown"][part], p["noise"][part], p["timesteps"][part], cond,
                                    None if whole else p["denominator"])

    def micro_losses(self, batch: Batch) -> Iterator[torch.Tensor]:
        """Each micro-batch's share of ``batch``'s loss, in turn (after :meth:`prepare` drew for all of them);
        a generator, so the step runs each share's backward before the next forward."""
        prepared = self.prepare(batch)
        for part in self._micro_batches(len(batch.images)):
            yield self.micro_loss(batch, prepared, part)

    def loss(self, batch: Batch) -> torch.Tensor:
        """The weighted MSE of ``batch`` (draws VAE samples, noise and timesteps, in that order), summed over
        its micro-batches without a backward between them."""
        return sum(self.micro_losses(batch))

    def _denoising_loss(self, latents, masked_latents, masks, unknown, noise, timesteps, cond,
                        denominator=None) -> torch.Tensor:
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
        if denominator is None:  # the batch is the whole step's
            denominator = (weights.sum() * error.shape[1]).clamp(min=1.0)
        return error.sum() / denominator

    def _autocast(self, encode: bool = False):
        """Mixed precision as ``train.mixed_precision`` resolved (a no-op in float32). The VAE's encode
        (``encode``) runs under bf16 autocast only: bf16 keeps float32's range, while a VAE kept in float32
        beside float16 weights (SDXL's) is kept so because it overflows in float16."""
        enabled = self.autocast_dtype is not None and (not encode or self.autocast_dtype == torch.bfloat16)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled)

    def train_step(self) -> float:
        """One step; its loss as a Python float (which waits for the device: :meth:`step_once` does not)."""
        return float(self.step_once())

    def step_once(self) -> torch.Tensor:
        """One step, inside the SDPA pin of ``train.attention`` (forward, backward and checkpointing's
        recompute); its loss as a detached tensor on the device. Nothing in it waits for a GPU (no ``.item()``,
        the clipped gradients' norm not read; fp16's loss scaler is the exception, which must look for infs),
        so the host queues the next step's work while this one runs."""
        with self.attention.pinned():
            return self._step()

    def _step(self) -> torch.Tensor:
        """One optimizer step over ``train.gradient_accumulation_steps`` micro-batches of ``train.batch_size``:
        each micro-batch's forward and backward in turn (its activations freed before the next), the
        gradients summed, then clipped and applied once."""
        self._set_train_mode(True)
        batch = self.draw_batch()
        self.optimizer.zero_grad(set_to_none=True)
        loss = None
        for share in self.micro_losses(batch):
            (self.scaler.scale(share) if self.scaler is not None else share).backward()
            loss = share.detach() if loss is None else loss + share.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
            self.optimizer.step()
        self.lr_scheduler.step()
        self.step += 1
        return loss

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
        """Training is over: eval mode, eager forwards, the last step's gradients freed (a full SD2
        fine-tune's are about 3.5 GB; sampling needs none of them), and offloaded text encoders back on the
        device."""
        self._set_train_mode(False)
        uncompile(self._compiled)
        self.__dict__.pop("_denoising_loss", None)  # the compiled loss region, if train.compile
        self.optimizer.zero_grad(set_to_none=True)
        for encoder in self._offloaded:  # back for sampling: the stock pipelines encode their prompts
            encoder.to(self.device)
        self._offloaded = []

    def sample_validation(self, scene, config) -> list:
        """Validation completions with the adapter as trained so far (:mod:`realfill.validation`): eval mode
        (no LoRA dropout), offloaded text encoders back for the prompt, and every RNG training draws from left
        as it was, so a run trains the same with validation on or off. The next step goes back to train mode."""
        self._set_train_mode(False)
        for encoder in self._offloaded:
            encoder.to(self.device)
        state = self.generator.get_state()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self._autocast():
                return sample_validation(self.model, scene, config, attention=self.attention)
        finally:
            self.generator.set_state(state)
            for encoder in self._offloaded:
                encoder.to(self._text_encoder_home)

    def restore_dtypes(self) -> None:
        """The trained parameters back in the dtype the model had them in (float16 / bfloat16 for a full
        fine-tune of a half-precision backbone, so that sampling, which has no autocast, sees one dtype;
        LoRA's parameters are float32 from the start and stay so). Call after the adapter is saved."""
        with torch.no_grad():
            for p, dtype in zip(self.params, self._param_dtypes):
                if p.dtype != dtype:
                    p.data = p.data.to(dtype)

    def learning_rates(self) -> dict[str, float]:
        """Each group's learning rate as a float (torchao's 8-bit AdamW holds it as a tensor); for Prodigy the
        step size it uses, its estimate ``d`` times the rate."""
        return {name: float(group["lr"]) * float(group.get("d", 1.0))
                for name, group in zip(self.group_names, self.optimizer.param_groups)}

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


def fine_tune(
    model: InpaintModel,
    adapter,
    masking,
    scene,
    config,
    run_dir: Path,
    *,
    compute: Compute,
    plugins=None,
    resume: bool = False,
    console=None,
    on_step: Callable[[int, float], None] | None = None,
    snapshot_steps: Iterable[int] = (),
) -> Trainer:
    """Fine-tune ``model`` on ``scene`` per ``config.train``; writes ``run_dir/train_log.jsonl``,
    ``run_dir/checkpoint/`` every ``checkpoint_every`` steps and ``run_dir/adapter/`` at the end.
    With ``resume``, continues from ``run_dir/checkpoint/`` (the log is cut back to it). With
    ``train.keep_adapters``, the adapter of every checkpoint step and of each of ``snapshot_steps`` (what an
    ablation over steps samples; never pruned) is kept as ``adapter/step-NNNNN/``, at most
    ``train.checkpoints_total_limit`` of the checkpoint steps' (the oldest go first). ``compute``: the
    command's, resolved and applied (``realfill.run.check_device(config, plugins).apply()``); ``plugins``:
    whose ``realfill_train_step_end`` hear each logged step (None: nobody listens)."""
    train = config.train
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, adapter, masking, scene, train, seed=config.seed, compute=compute)
    log_path = run_dir / TRAIN_LOG
    if resume and (state := load_checkpoint(run_dir)) is not None:
        trainer.load_state_dict(state)
        truncate_log(log_path, trainer.step)
        if console is not None:
            console.print(f"resuming from step {trainer.step} ({run_dir / CHECKPOINT_DIR})")
    else:
        atomic_write_text(log_path, "")
    pinned = {int(n) for n in snapshot_steps}
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
            step_loss = trainer.step_once()
            step = trainer.step
            # a validation step is logged too: its strip has its loss beside it (train_log.jsonl, the trackers)
            logs = step % train.log_every == 0 or step == train.steps or is_validation_step(train, step)
            checkpoints = bool(train.checkpoint_every) and step % train.checkpoint_every == 0 and step < train.steps
            snapshot = train.keep_adapters and step < train.steps and (checkpoints or step in pinned)
            if not (logs or checkpoints or snapshot or on_step is not None):
                progress.update(task, completed=step)  # the loss is read (the host waits for it) when logged
                continue
            loss = float(step_loss)
            # a non-finite loss makes every later one so: found at the next read; settings the user can change:
            # one line, not a traceback
            if not math.isfinite(loss):
                raise UserError(f"training diverged by step {step} (loss {loss}, weights "
                                f"{DTYPE_NAMES.get(model.dtype, model.dtype)}, mixed precision "
                                f"{trainer.mixed_precision}); lower train.lr_denoiser, or train in float32")
            progress.update(task, completed=step, loss=f"{loss:.4f}")
            if is_validation_step(train, step) and not strip_path(run_dir, step).is_file():  # resumed: kept
                images = trainer.sample_validation(scene, config)
                path = write_strip(run_dir, step, images)
                if plugins is not None:
                    plugins.validation_done(run_dir=run_dir, step=step, path=path, images=images)
            if logs:
                rates = trainer.learning_rates()
                seconds = time.perf_counter() - start
                log.write(json.dumps({"step": step, "loss": loss, "lr": rates, "seconds": round(seconds, 3)}) + "\n")
                log.flush()
                if plugins is not None:
                    plugins.train_step_end(step=step, loss=loss, learning_rates=rates, seconds=seconds)
            if on_step is not None:
                on_step(step, loss)
            if snapshot:  # before the checkpoint: a resume from it never lacks its snapshot
                keep_adapter_snapshot(trainer, run_dir, step, pinned)
            if checkpoints:
                save_checkpoint(trainer, run_dir)
    trainer.finish()
    with atomic_dir(run_dir / ADAPTER_DIR) as building:
        adapter.save(model, building)
        for kept in adapter_snapshots(run_dir).values():  # the kept adapters move into the final folder
            kept.rename(building / kept.name)
    trainer.restore_dtypes()
    atomic_write_text(run_dir / TRAIN_STATE, json.dumps({"finished": True, **record}) + "\n")
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # the adapter is the result now
    return trainer


def keep_adapter_snapshot(trainer: Trainer, run_dir: Path, step: int, pinned: set[int] = frozenset()) -> Path:
    """``adapter/step-NNNNN/``: the adapter at ``step`` (``train.keep_adapters``), written whole; then the
    oldest unpinned snapshots beyond ``train.checkpoints_total_limit`` are removed."""
    path = adapter_snapshot(run_dir, step)
    with atomic_dir(path) as building:
        trainer.adapter.save(trainer.model, building)
    limit = trainer.train.checkpoints_total_limit
    if limit is not None:
        prunable = [p for s, p in adapter_snapshots(run_dir).items() if s not in pinned]
        for old in prunable[: max(0, len(prunable) - limit)]:
            shutil.rmtree(old, ignore_errors=True)
    return path
