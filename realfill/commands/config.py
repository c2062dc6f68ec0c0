"""``realfill config``: print the resolved run config for the given flags (checks typos without running)."""

from __future__ import annotations

import argparse

from realfill.arguments import add_config_arguments, config_from_args
from realfill.config import dump_config, run_name
from realfill.config_files import preset_names

NAME = "config"
HELP = "print the resolved config (preset + flags + --set) as TOML, or list presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list-presets", action="store_true", help="list the named presets")
    add_config_arguments(parser, out=False)


def precision_line(config) -> str:
    """How the run stores and computes its weights, in words: the frozen weights' dtype (``backbone.dtype``,
    a quantized transformer), the trained parameters' (always float32) and the autocast."""
    import torch

    from realfill.device import HALF_PRECISION

    stored = getattr(config.backbone, "dtype", "float32")
    quantize = getattr(config.backbone, "quantize", "none")
    frozen = f"{stored} (backbone.dtype)"
    if quantize != "none":
        frozen += f", the transformer's linear weights {quantize} (backbone.quantize)"
    requested = config.train.mixed_precision
    weights = getattr(torch, stored)
    if requested is None or (requested == "auto" and weights in HALF_PRECISION):
        autocast = HALF_PRECISION.get(weights, "no")
    elif requested == "auto":
        autocast = "auto (bf16 where the device computes bf16 natively, else none)"
    else:
        autocast = requested
    return (f"weights: frozen {frozen}, trained float32; "
            f"autocast {'none' if autocast == 'no' else autocast} (train.mixed_precision)")


def run(args: argparse.Namespace, ctx) -> int:
    if args.list_presets:
        for name in preset_names():
            print(name)
        return 0
    config = config_from_args(args, ctx)
    print(f"# run name: {run_name(config)}")
    print(f"# {precision_line(config)}")
    print(dump_config(config), end="")
    return 0
