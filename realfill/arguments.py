"""The run-config arguments the subcommands share (``--preset``, ``--config``, a flag per role, ``--set``)
and the context a command runs in. Below both :mod:`realfill.cli` and :mod:`realfill.commands`, so the
command line imports its commands and the commands import nothing of the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from realfill.components import BUILTIN_ROLES, Role
from realfill.config import resolve_config
from realfill.errors import UserError


@dataclass
class Context:
    plugins: object  # realfill.plugins.RealfillPlugins
    console: Console  # stderr: progress, warnings, tables a person reads
    out: Console  # stdout: results, --json


def add_config_arguments(parser: argparse.ArgumentParser, *, out: bool = True) -> None:
    """The run-config flags shared by fill, train, sample and ablate."""
    group = parser.add_argument_group("run config")
    group.add_argument("--preset", help="a named preset: paper (default), smoke, cpu, ...")
    group.add_argument("--config", type=Path, help="a config.toml to repeat, or a run folder (its config.toml)")
    for role in config_roles(parser):
        group.add_argument(*role.cli_flags, dest=role.field, help=role.help or f"{role.name} component name")
    group.add_argument("--steps", type=int, help="training steps (train.steps)")
    group.add_argument("--samples", type=int, help="number of samples (sample.num_samples)")
    group.add_argument("--keep", type=int, help="keep the K best-ranked samples (select.keep)")
    group.add_argument("--seed", type=int, help="random seed")
    group.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.steps=10 --set ranker.ratio=0.8",
    )
    if out:
        group.add_argument("--out", type=Path, help="the run folder (default: runs/SCENE-RUNNAME)")


def config_roles(parser: argparse.ArgumentParser) -> tuple[Role, ...]:
    """The roles whose component a run config names, as ``build_parser`` gave them to this parser."""
    return tuple(role for role in getattr(parser, "roles", BUILTIN_ROLES) if role.field is not None)


def config_from_args(args: argparse.Namespace, ctx: Context):
    """The validated RunConfig these flags describe."""
    if args.config is not None and args.preset is not None:
        raise UserError("--config and --preset exclude each other: a saved config already holds its preset")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.insert(0, f"seed={args.seed}")
    return resolve_config(
        preset=args.preset,
        config_file=args.config,
        components={role.field: getattr(args, role.field, None) for role in ctx.plugins.config_roles},
        sections={
            "train": {"steps": args.steps},
            "sample": {"num_samples": args.samples},
            "select": {"keep": args.keep},
        },
        overrides=overrides,
        plugins=ctx.plugins,
    )


def add_tracker_argument(parser: argparse.ArgumentParser) -> None:
    """``--tracker NAME`` (repeatable) on fill, train and ablate: where the run is also logged (TensorBoard,
    MLflow, a plugin's; docs/tracking.md). Report only, so not part of the run config."""
    parser.add_argument("--tracker", dest="trackers", action="append", default=[], metavar="NAME",
                        help="also log the run to this tracker (repeatable): tensorboard, mlflow, or one a plugin "
                        "registers (realfill plugins); needs the extra: pip install 'realfill[tracking]'")
