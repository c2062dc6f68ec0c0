"""``realfill fill``: fine-tune, sample, rank, and write the run folder of DESIGN.md.

The stages are separately callable so that runs which differ only later share the earlier ones (the
ablation runner fine-tunes and samples once for several rankers):

- :func:`train_stage` (scene, config, dir) -> the fine-tuned model; writes ``adapter/``, ``train_log.jsonl``;
- :func:`sample_stage` (scene, config, train_dir, dir) -> ``samples/NNN.png`` paths;
- :func:`rank_stage` (scene, config, dir, sample paths) -> ``ranking.json``, ``result.png``,
  ``contact_sheet.png``.

:func:`fill` runs all three after validating everything it can (scene, config, run folder, weights) before
it writes a single file, so bad input never touches an existing run folder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from realfill import sampling  # the module, so that tests/faults can replace sample_completions
from realfill.atomic import atomic_dir, atomic_write_text, save_image
from realfill.config import dump_config, run_name, write_config
from realfill.contact_sheet import write_contact_sheets
from realfill.device import Compute, resolve_compute
from realfill.errors import UserError
from realfill.evaluation import RUN_RECORD
from realfill.fingerprint import FINGERPRINT_KEY, check_same_scene, config_difference, scene_fingerprint
from realfill.layout import ADAPTER_DIR, adapter_snapshots, trained_steps, training_finished
from realfill.runfolder import LOCK_FILE, RunLock
from realfill.scene import load_scene, read_rgb
from realfill.seed_selection import rank_candidates
from realfill.training import fine_tune

CONFIG_FILE = "config.toml"
SAMPLES_DIR = "samples"
RANKING_FILE = "ranking.json"
RESULT_FILE = "result.png"
CONTACT_SHEET = "contact_sheet.png"


def check_device(config, plugins) -> Compute:
    """The run's device, mixed precision and threads (:mod:`realfill.device`), checked before any weights
    load: a GPU config on a machine without one, and a precision the backbone's weight dtype cannot train
    under, are one-line errors. Resolved once per command (``.apply()`` sets threads and TF32), then passed
    down: every stage below takes the ``Compute`` and the plugins it is given, and resolves nothing again."""
    return resolve_compute(config, plugins.registry("backbone").get(config.backbone.name))


def load_backbone(config, plugins, compute: Compute):
    """The backbone's model on the run's device (missing weights raise before any file is written)."""
    return plugins.registry("backbone").create(config.backbone).load(device=compute.device)


def train_stage(scene, config, directory: Path, *, plugins, compute: Compute, resume: bool = False, console=None,
                model=None, snapshot_steps=()):
    """Fine-tune on ``scene``; writes ``directory/adapter/`` and ``directory/train_log.jsonl``. Returns the
    model with its adapter applied (in eval mode). A finished training in ``directory`` is reused when
    ``resume`` is set."""
    directory = Path(directory)
    model = model if model is not None else load_backbone(config, plugins, compute)
    adapter = plugins.registry("adapter").create(config.adapter)
    if resume and training_finished(directory):
        adapter.load(model, directory / ADAPTER_DIR)
        if console is not None:
            console.print(f"training already finished in {directory}; reusing {directory / ADAPTER_DIR}")
        return model
    masking = plugins.registry("masking").create(config.masking)
    fine_tune(model, adapter, masking, scene, config, directory, plugins=plugins, resume=resume, console=console,
              compute=compute, snapshot_steps=snapshot_steps)
    return model


def adapter_at_step(config, train_dir: Path, step: int | None) -> Path:
    """``train_dir/adapter/``, or with ``step`` the adapter kept at that step (``train.keep_adapters``): its
    ``adapter/step-NNNNN/``, or ``adapter/`` itself for the last step. One line listing the kept steps when
    there is none at ``step``."""
    adapter_dir = Path(train_dir) / ADAPTER_DIR
    final = trained_steps(train_dir)  # the training's own steps (an ablation's trains to its last step value)
    if step is None or step == final:
        return adapter_dir
    kept = adapter_snapshots(train_dir)
    if step not in kept:
        steps = ", ".join(str(s) for s in [*kept, *([final] if final is not None else [])])
        raise UserError(f"{adapter_dir}: no adapter kept at step {step} (kept: {steps or 'none'}); train with "
                        "--set train.keep_adapters=true, which keeps the adapter of every checkpoint step")
    return kept[step]


def load_trained(config, train_dir: Path, *, plugins, compute: Compute, step: int | None = None):
    """The backbone with the adapter weights of ``train_dir/adapter/`` (or of the snapshot kept at ``step``)
    loaded (a fresh process)."""
    adapter_dir = adapter_at_step(config, train_dir, step)
    if not adapter_dir.is_dir():
        raise UserError(f"{adapter_dir}: no trained adapter here; run `realfill train` (or fill) first")
    model = load_backbone(config, plugins, compute)
    plugins.registry("adapter").create(config.adapter).load(model, adapter_dir)
    for module in [*model.trainable_modules().values(), *model.frozen_modules()]:
        module.eval()
    return model


def sample_stage(scene, config, train_dir: Path | None, directory: Path, *, plugins, compute: Compute, console=None,
                 model=None, step: int | None = None) -> list[Path]:
    """``config.sample.num_samples`` completions, composited at the target's size, as
    ``directory/samples/NNN.png``; the model is ``model`` or the backbone with ``train_dir``'s adapter (the
    one kept at ``step``, if given)."""
    if model is None:
        model = load_trained(config, Path(train_dir), plugins=plugins, compute=compute, step=step)
    s = config.sample
    out = Path(directory) / SAMPLES_DIR
    progress = Progress(TextColumn("sample"), BarColumn(), MofNCompleteColumn(), console=console,
                        disable=console is None, transient=True)
    with progress:
        task = progress.add_task("sample", total=s.num_samples)
        images = sampling.sample_completions(
            model, scene.target, scene.mask, prompt=s.prompt if s.prompt is not None else config.train.prompt,
            resolution=s.resolution or sampling.training_scale_resolution(*scene.mask.shape, config.train.resolution),
            scheduler=s.scheduler, steps=s.steps,
            guidance_scale=s.guidance_scale, num_samples=s.num_samples, batch_size=s.batch_size,
            mask_dilate=s.mask_dilate, feather=s.feather, seed=config.seed,
            on_batch=lambda done, total: progress.update(task, completed=done), attention=compute.attention,
        )
    with atomic_dir(out) as building:  # samples/ is whole or absent (a killed run leaves no half set)
        for i, image in enumerate(images):
            Image.fromarray(image).save(building / f"{i:03d}.png")
    paths = [out / f"{i:03d}.png" for i in range(len(images))]
    plugins.sampling_done(run_dir=Path(directory), sample_paths=paths)
    return paths


def rank_stage(scene, config, directory: Path, sample_paths: list[Path], *, plugins, console=None) -> list[dict]:
    """Rank the samples with the configured ranker (``realfill.seed_selection``); write ``ranking.json``,
    ``result.png`` (the best) and ``contact_sheet.png``."""
    directory = Path(directory)
    candidates = [read_rgb(p) for p in sample_paths]
    names = [p.name for p in sample_paths]
    ranker = plugins.registry("ranker").create(config.ranker)
    ranking = rank_candidates(ranker, scene, candidates, names, run_dir=directory, keep=config.select.keep,
                              keep_fraction=config.select.keep_fraction)
    best = candidates[names.index(ranking[0]["file"])]
    save_image(directory / RESULT_FILE, best)
    ranked = [(f"#{r['rank']} {Path(r['file']).stem} score {r['score']:.4g}", candidates[names.index(r["file"])])
              for r in ranking]
    pictures = [(f"correspondences of #{r['rank']} {Path(r['file']).stem}", read_rgb(path))
                for r in ranking if (path := directory / "correspondences" / f"{r['rank']:03d}.png").is_file()]
    backbone = getattr(config, "backbone", None)  # `realfill rank` passes only the ranking settings
    notice = plugins.registry("backbone").get(backbone.name).disclaimer if backbone is not None else None
    write_contact_sheets(directory, scene.references, scene.masked_target(), ranked, scene.gt, correspondences=pictures,
                         notice=notice)
    plugins.ranking_done(run_dir=directory, ranking=ranking)
    return ranking


def default_run_dir(scene_path: Path, config) -> Path:
    return Path("runs") / f"{Path(scene_path).resolve().name}-{run_name(config)}"


def check_run_dir(run_dir: Path, config, resume: bool) -> None:
    """Refuse a folder that holds something this run could overwrite: a non-empty folder needs
    ``--resume``, and a resumed folder must hold this very config."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a folder; choose another --out")
    if not run_dir.is_dir() or not any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        return
    if not resume:
        raise UserError(f"{run_dir}: the run folder already holds files; continue it with --resume or "
                        "choose another --out")
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise UserError(f"{saved}: missing, so {run_dir} is not a run folder to resume; choose another --out")
    then = saved.read_text()
    now = dump_config(config, like=then)  # a role a plugin added since, left at its default, is not a difference
    if then != now:
        differs = config_difference(then, now)
        shown = "; ".join(differs[:3]) + (f"; and {len(differs) - 3} more" if len(differs) > 3 else "")
        raise UserError(f"{saved}: differs from this run's config ({shown}); resume with --config {saved} "
                        "(and no other settings)")


def fill(scene_path: Path, config, run_dir: Path | None = None, *, plugins, resume: bool = False,
         console=None, trackers=None) -> Path:
    """The whole method on one scene; returns the run folder. ``trackers``: a
    :class:`realfill.tracking.Trackers`, started here once the folder is locked and set up (the caller
    closes it)."""
    scene = load_scene(scene_path, max_references=config.max_references)  # bad scenes fail here
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(scene_path, config)
    compute = check_device(config, plugins)  # a GPU preset on a CPU machine stops here, before any weights load
    if resume:  # another scene's run folder is refused before its lock is even taken: nothing is touched
        check_same_scene(run_dir, scene)
    with RunLock(run_dir, "fill", console=console):  # one writer; an unwritable --out fails here
        check_run_dir(run_dir, config, resume)
        model = prepare_run(scene, scene_path, config, run_dir, plugins=plugins, console=console, compute=compute,
                            whole=True)
        if trackers is not None:
            trackers.start(run_dir, run_dir.name, config.model_dump(mode="json"))
        _fill_locked(scene, config, run_dir, plugins=plugins, resume=resume, console=console, compute=compute,
                     model=model)
    return run_dir


def keep_note(keep: int | None, samples: int) -> str | None:
    """The note for ``--keep K`` above the number of samples (all of them are kept)."""
    if keep is not None and keep > samples:
        return f"--keep {keep}: there are only {samples} samples; keeping all {samples}"
    return None


def prepare_run(scene, scene_path: Path, config, run_dir: Path, *, plugins, console, compute: Compute,
                whole: bool):
    """A run's set-up, once the run folder is locked: every component is made and every weight loaded before
    anything is written, then ``config.toml`` (and for the ``whole`` fill, with its ranker and sampler,
    ``run.json``; ``realfill train`` is training alone). Applies ``compute`` and prints it in the run's
    header. Returns the backbone's model."""
    if whole and console is not None and (note := keep_note(config.select.keep, config.sample.num_samples)):
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    if whole:
        made = plugins.registry("ranker").create(config.ranker)
        if hasattr(made, "load"):
            made.load()  # missing ranker weights fail now, not after an hour of training
    plugins.registry("adapter").create(config.adapter)
    plugins.registry("masking").create(config.masking)
    compute.apply()
    if console is not None:
        console.print(f"[dim]note: {compute.describe()}[/]", soft_wrap=True)  # "note:" lines are not errors
    model = load_backbone(config, plugins, compute)  # missing backbone weights fail before anything is written
    if whole:
        model.make_scheduler(config.sample.scheduler)  # so does a sampler the backbone has not (ddpm on FLUX)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(config, run_dir / CONFIG_FILE)
    write_run_record(run_dir, scene_path, config, plugins, scene)  # the scene --resume compares
    return model


def _fill_locked(scene, config, run_dir: Path, *, plugins, resume: bool, console, compute: Compute, model) -> None:
    for note in scene.notes:
        if console is not None:
            console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    plugins.run_start(run_dir=run_dir, config=config, scene=scene)
    error = None
    try:
        model = train_stage(scene, config, run_dir, plugins=plugins, resume=resume, console=console, model=model,
                            compute=compute)
        paths = sample_stage(scene, config, run_dir, run_dir, plugins=plugins, console=console, model=model,
                             compute=compute)
        rank_stage(scene, config, run_dir, paths, plugins=plugins, console=console)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise
    finally:
        with contextlib.suppress(Exception):
            plugins.run_end(run_dir=run_dir, result_path=run_dir / RESULT_FILE if error is None else None, error=error)


def write_run_record(run_dir: Path, scene_path: Path, config, plugins, scene=None) -> None:
    """``run.json``: the scene the run was made from (so ``realfill evaluate RUN`` finds its ground truth),
    the run's name and, for backbones that carry one, their disclaimer (e.g. scratch-pixel's)."""
    record = {"scene": str(Path(scene_path).resolve()), "run_name": run_name(config)}
    if scene is not None:  # what --resume compares (realfill.fingerprint)
        record[FINGERPRINT_KEY] = scene_fingerprint(scene)
    disclaimer = plugins.registry("backbone").get(config.backbone.name).disclaimer
    if disclaimer:
        record["disclaimer"] = disclaimer
    atomic_write_text(run_dir / RUN_RECORD, json.dumps(record, indent=2) + "\n")


__all__ = ["fill", "train_stage", "sample_stage", "rank_stage", "load_trained", "load_backbone", "check_device",
           "check_run_dir", "default_run_dir"]
