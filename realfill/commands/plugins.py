"""``realfill plugins``: what is installed, by plugin, with the components each adds."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from realfill.inventory import render

NAME = "plugins"
HELP = "list the loaded plugins, their versions and the components they add"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument(
        "--inventory", action="store_true", help="print the built-in components as registry.toml (the checked-in inventory)"
    )


def plugins_as_dict(plugins) -> dict:
    registries = plugins.registries
    return {
        "plugins": [
            {
                "name": info.name,
                "version": info.version,
                "builtin": info.builtin,
                "distribution": info.distribution,
                "components": info.components,
            }
            for info in plugins.plugin_infos()
        ],
        "components": {
            role: [
                {
                    "name": cls.name,
                    "plugin": registry.plugin_of(cls.name),
                    "summary": cls.summary,
                    "needs": list(cls.needs),
                }
                for cls in registry
            ]
            for role, registry in registries.items()
        },
        "problems": list(plugins.problems),
    }


def run(args: argparse.Namespace, ctx) -> int:
    if args.inventory:
        print(render(ctx.plugins), end="")
        return 0
    data = plugins_as_dict(ctx.plugins)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    table = Table(title="realfill plugins", show_lines=False)
    table.add_column("plugin", no_wrap=True)
    table.add_column("version")
    table.add_column("components")
    for plugin in data["plugins"]:
        adds = "; ".join(f"{role}: {', '.join(names)}" for role, names in plugin["components"].items())
        if plugin["builtin"]:
            name = plugin["name"].removeprefix("realfill_plugins.") + " [dim](built-in)[/]"
        else:
            name = f"{plugin['name']} [dim]({plugin['distribution']})[/]"
        table.add_row(name, plugin["version"], adds or "[dim]observer[/]")
    ctx.out.print(table)
    plurals = {role.name: role.plural_name for role in ctx.plugins.roles}
    for role, components in data["components"].items():
        components_table = Table(title=plurals.get(role, role), title_justify="left", show_header=True)
        components_table.add_column("name")
        components_table.add_column("summary")
        components_table.add_column("needs")
        for component in components:
            components_table.add_row(component["name"], component["summary"], ", ".join(component["needs"]))
        ctx.out.print(components_table)
    return 0
