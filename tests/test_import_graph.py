"""The import graph of realfill and realfill_plugins (stdlib ``ast`` only): no cycle, and every import goes to
the same layer or a lower one, per the layer table that opens docs/architecture.md (read from there, so the
table stays true). Imports inside functions count; ``if TYPE_CHECKING:`` blocks do not (they never run)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"realfill": ROOT / "realfill", "realfill_plugins": ROOT / "plugins"}
ROW = re.compile(r"^\| (\d+) \| ((?:`[\w.*]+`(?:, )?)+) \| [^|]+ \|", re.MULTILINE)

def module_files() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            if all(part.isidentifier() for part in parts):  # plugins/example-plugin is a separate package
                modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def _known(name: str) -> str | None:
    """``name`` or the nearest enclosing module we have (``from realfill import hookimpl`` -> realfill)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path) -> dict[str, int]:
    """The project modules ``module`` imports, each with a line where it does."""
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_known(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            targets = [_known(f"{base}.{alias.name}") or _known(base) for alias in node.names]
        for target in targets:
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def layer_table() -> dict[str, int]:
    """pattern (``realfill.run``, ``realfill.ablation.*``) -> layer, from docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = {}
    for layer, cell in ROW.findall(text):
        for pattern in re.findall(r"`([\w.*]+)`", cell):
            table[pattern] = int(layer)
    return table


LAYERS = layer_table()


def layer_of(module: str) -> int | None:
    if module in LAYERS:
        return LAYERS[module]
    for pattern, layer in LAYERS.items():
        if pattern.endswith(".*") and (module == pattern[:-2] or module.startswith(pattern[:-1])):
            return layer
    return None


def test_the_graph_sees_the_project():
    assert {"realfill", "realfill.cli", "realfill.run", "realfill_plugins.rankers.sift"} <= set(MODULES)
    assert "realfill.config" in GRAPH["realfill.run"] and "realfill.training" in GRAPH["realfill.run"]
    assert len(LAYERS) > 20


def test_every_module_has_a_layer_in_docs_architecture():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"add them to the layer table of docs/architecture.md: {missing}"


def test_the_core_never_imports_the_plugins():
    wrong = [f"{m} -> {t} ({MODULES[m].relative_to(ROOT)}:{line})" for m, targets in GRAPH.items()
             if m.split(".")[0] == "realfill" for t, line in targets.items() if t.split(".")[0] == "realfill_plugins"]
    assert not wrong, wrong


def test_imports_go_down_the_layers():
    upward = [f"{MODULES[m].relative_to(ROOT)}:{line}: {m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t, line in targets.items()
              if None not in (layer_of(m), layer_of(t)) and layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def _cycles() -> list[list[str]]:
    """Every elementary cycle's first occurrence, by depth-first search (the graph is small)."""
    edges = {m: set(targets) for m, targets in GRAPH.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    return cycles


def test_no_import_cycle():
    cycles = _cycles()
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)
