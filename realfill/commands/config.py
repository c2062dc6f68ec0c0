"""``realfill config``: print the resolved run config for the given flags (checks typos without running)."""

from __future__ import annotations

import argparse

from realfill.cli import add_config_arguments, config_from_args
from realfill.config import dump_config, preset_names, run_name

NAME = "config"
HELP = "print the resolved config (preset + flags + --set) as TOML, or list presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list-presets", action="store_true", help="list the named presets")
    add_config_arguments(parser, out=False)


def run(args: argparse.Namespace, ctx) -> int:
    if args.list_presets:
        for name in preset_names():
            print(name)
        return 0
    config = config_from_args(args, ctx)
    print(f"# run name: {run_name(config)}")
    print(dump_config(config), end="")
    return 0
