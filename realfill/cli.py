"""The ``realfill`` command line. Subcommands live one per module in :mod:`realfill.commands`.

Bad input (unknown names, config typos, broken files, an unwritable or busy ``--out``) prints one line and
exits with code 2; a full disk prints one line and exits with code 3 (:data:`realfill.atomic.EXIT_OUT_OF_SPACE`);
an interrupt exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from realfill import __version__, commands
from realfill.arguments import Context
from realfill.atomic import EXIT_OUT_OF_SPACE, OutOfSpace, is_out_of_space
from realfill.components import BUILTIN_ROLES, Role
from realfill.console import console, stdout
from realfill.errors import UserError
from realfill.plugins import RealfillPlugins, set_plugins
from realfill.runfolder import check_writable

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as a UserError (one line, exit 2) instead of usage text."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def _command_modules():
    package = commands
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module


class _Version(argparse.Action):
    """``--version``: one line with what an issue report needs, read from the installed packages' metadata
    (nothing imported, so it answers in a fraction of a second)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "not installed"

        libraries = ", ".join(f"{name} {installed(name)}" for name in ("torch", "diffusers", "peft"))
        print(f"realfill {__version__} ({libraries})")
        parser.exit()


def build_parser(roles: tuple[Role, ...] = BUILTIN_ROLES) -> argparse.ArgumentParser:
    """The whole command line; ``roles`` (the role table, plugins' roles included) gives the component flags."""
    parser = _Parser(prog="realfill", description="Reference-driven authentic image completion (RealFill).")
    parser.add_argument("--version", action=_Version, help="print the versions of realfill, torch, diffusers and peft")
    parser.add_argument(
        "--no-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load this plugin (entry-point name or built-in module); repeatable. "
        "Also: REALFILL_NO_PLUGINS=a,b; REALFILL_DISABLE_PLUGIN_AUTOLOAD=1 skips every third-party plugin",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        command.roles = roles  # read by add_config_arguments and ablate's axes
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


class _TorchvisionNotice:
    """Drops transformers' notice that an image processor falls back to its PIL twin: realfill runs
    without torchvision on purpose (it does not import beside the CPU torch), so it is noise here."""

    @staticmethod
    def filter(record) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def _quiet_library_noise() -> None:
    try:
        from transformers.utils import logging as transformers_logging  # start-up time (seconds)
    except ImportError:
        return
    for handler in transformers_logging._get_library_root_logger().handlers:
        handler.addFilter(_TorchvisionNotice)


def print_error(exc: BaseException) -> None:
    """One line on stderr, never wrapped: what was wrong and where."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)


def _load_plugins(blocked: list[str]) -> RealfillPlugins:
    """Load the plugins (seconds: they import torch), so only once --version, usage errors and an unwritable
    --out have had their say."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # main prints the problems, one line each
        return RealfillPlugins(blocked=blocked)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, object | None]:
    """Parse with the built-in roles' flags; only a flag none of them has (or a command's --help) loads the
    plugins first, for the flags of the roles they add. Returns the plugins when it loaded them."""
    command_help = any(arg in ("-h", "--help") for arg in argv[1:])
    if not command_help:
        args, unknown = build_parser().parse_known_args(argv)
        if not unknown:
            return args, None
    pre = _Parser(prog="realfill", add_help=False, allow_abbrev=False)
    pre.add_argument("--no-plugin", action="append", default=[])
    plugins = _load_plugins(pre.parse_known_args(argv)[0].no_plugin)
    return build_parser(plugins.roles).parse_args(argv), plugins


#: loggers that speak when the optional torchao (the `quant` extra) is installed: transformers imports it at
#: every model load, and it logs that its CUDA-only kernels are missing from a CPU build, torch that it
#: registers enums, diffusers that torchao's newer tensor classes are not the ones it lists. None of it is
#: the user's to act on; errors still print.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        args, plugins = _parse(argv)
    except UserError as exc:
        print_error(exc)
        return EXIT_BAD_INPUT
    if getattr(args, "_module", None) is None:
        build_parser().print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:  # where the command will write, checked before plugins and weights load (seconds)
        out = args._module.out_path(args) if hasattr(args._module, "out_path") else None
        if out is not None:
            check_writable(out)
    except UserError as exc:
        print_error(exc)
        return EXIT_BAD_INPUT
    _quiet_library_noise()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # printed below, one line each
            plugins = plugins or _load_plugins(args.no_plugin)
            plugins.registries  # noqa: B018 - build now, so registration problems show up front
        for problem in plugins.problems:
            console.print(f"[yellow]warning:[/] {escape(problem)}", soft_wrap=True)
        set_plugins(plugins)
        ctx = Context(plugins=plugins, console=console, out=stdout)
        return int(args._module.run(args, ctx) or 0)
    except UserError as exc:
        print_error(exc)
        return EXIT_BAD_INPUT
    except OutOfSpace as exc:
        print_error(exc)
        return EXIT_OUT_OF_SPACE
    except OSError as exc:
        if not is_out_of_space(exc):
            raise
        print_error(OutOfSpace(Path(exc.filename or "."), None))
        return EXIT_OUT_OF_SPACE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]", markup=True)
        return 130
    finally:
        set_plugins(None)


if __name__ == "__main__":
    sys.exit(main())
