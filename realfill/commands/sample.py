"""``realfill sample SCENE --run DIR [--step N]``: the sampling stage alone, from a trained run's ``adapter/``
(or, with ``--step``, the adapter it kept at step N: ``train.keep_adapters``).

The config is ``DIR/config.toml`` unless ``--config``/``--preset`` say otherwise; ``--samples``,
``--seed`` and ``--set sample.*`` change it. Samples go to ``--out`` (default: DIR) as ``samples/NNN.png``;
an existing ``samples/`` folder there is refused rather than overwritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from realfill.arguments import add_config_arguments, config_from_args
from realfill.errors import UserError
from realfill.fingerprint import check_same_scene
from realfill.runfolder import RunLock
from realfill.scene import load_scene

NAME = "sample"
HELP = "sample completions from a trained run (DIR/adapter) into DIR/samples or --out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, metavar="SCENE", help="the scene folder (ref/, target/)")
    parser.add_argument("--run", type=Path, required=True, metavar="DIR", help="a trained run (config.toml, adapter/)")
    parser.add_argument("--step", type=int, metavar="N", default=None,
                        help="sample from the adapter kept at step N (train.keep_adapters: adapter/step-NNNNN/)")
    add_config_arguments(parser)


def out_path(args: argparse.Namespace) -> Path | None:
    return args.out if args.out is not None else args.run


def run(args: argparse.Namespace, ctx) -> int:
    # start-up time: the parser imports every command module; these import torch
    from realfill.run import CONFIG_FILE, SAMPLES_DIR, check_device, load_trained, sample_stage
    if args.config is None and args.preset is None:
        args.config = args.run / CONFIG_FILE
    config = config_from_args(args, ctx)
    check_trained_with(args.run / CONFIG_FILE, config, args)
    scene = load_scene(args.scene, max_references=config.max_references)
    out = args.out if args.out is not None else args.run
    compute = check_device(config, ctx.plugins)  # a GPU config on a machine without one stops here
    # the trained folder, and a folder written into that records a scene, must be this scene's (one line,
    # before the lock: nothing is touched)
    check_same_scene(args.run, scene, hint="train one on this scene first (realfill train SCENE --out DIR)")
    if out != args.run and (out / "run.json").is_file():
        check_same_scene(out, scene, hint="choose another --out")
    with RunLock(out, "sample", console=ctx.console, resume_hint="free space, then run the same command again"):
        if (out / SAMPLES_DIR).is_dir() and any((out / SAMPLES_DIR).iterdir()):
            raise UserError(f"{out / SAMPLES_DIR}: already holds samples; choose another --out")
        compute.apply()
        model = load_trained(config, args.run, plugins=ctx.plugins, compute=compute,
                             step=args.step)
        paths = sample_stage(scene, config, args.run, out, plugins=ctx.plugins, compute=compute, console=ctx.console,
                             model=model)
    ctx.console.print(f"[green]{len(paths)} samples:[/] {out / SAMPLES_DIR}", soft_wrap=True)
    ctx.out.print(str(out / SAMPLES_DIR))
    return 0


def check_trained_with(saved: Path, config, args: argparse.Namespace) -> None:
    """The adapter in ``--run`` was trained on the backbone and adapter of its own config.toml: another
    ``--preset`` or ``--config`` that changes them is one line naming the mismatch (not "train first")."""
    from realfill.config import dump_config
    from realfill.fingerprint import config_difference

    if not saved.is_file():
        return
    then = saved.read_text()
    differs = [d for d in config_difference(then, dump_config(config, like=then))
               if d.startswith(("backbone.", "adapter."))]
    differs.sort(key=lambda d: not d.split(":")[0].endswith(".name"))  # a component's name first
    if differs:
        given = f"--preset {args.preset}" if args.preset is not None else f"--config {args.config}"
        raise UserError(f"{saved}: the run was trained with other settings than {given} gives "
                        f"({'; '.join(differs[:3])}); sample it with its own config (no --preset/--config), "
                        "or train with these settings first")
