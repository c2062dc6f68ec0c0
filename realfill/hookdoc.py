"""docs/plugin_hooks.md, generated from its one source: the hook specifications (``realfill/hookspecs.py``:
signatures, docstrings, the banner comment of each group) and the role table
(``realfill.components.BUILTIN_ROLES``, with each role's base class as the contract its components
implement), the way ``registry.toml`` is generated from the registries.

Regenerate with ``python -m realfill.hookdoc > docs/plugin_hooks.md``; tests/test_docs.py fails when the
committed file differs.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap

from realfill import hookspecs
from realfill.components import BUILTIN_ROLES, Component, Role

COMMAND = "python -m realfill.hookdoc > docs/plugin_hooks.md"


def hook_names() -> list[str]:
    """Every hook specification, in the order hookspecs.py defines them."""
    return [name for name, obj in vars(hookspecs).items() if name.startswith("realfill_") and inspect.isfunction(obj)]


def signature(name: str) -> str:
    """``realfill_x(a: T, b: U) -> None``, annotations as written in hookspecs.py."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


# -- reST docstrings as markdown -----------------------------------------------------------------------

_ROLE_REF = re.compile(r":(?:class|meth|func|attr|mod|data|obj):`~?([^`]+)`")


def _inline(text: str) -> str:
    """``code`` and :class:`x` as markdown code spans."""
    return _ROLE_REF.sub(r"`\1`", text.replace("``", "`"))


def markdown(docstring: str | None) -> str:
    """A docstring (``:param:`` lines, ``::`` literal blocks, ````code````) as markdown."""
    lines = inspect.cleandoc(docstring or "").splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        param = re.match(r":param (\w+):\s*(.*)", line)
        if param:  # a parameter, its indented continuation lines joined to it
            text = [param.group(2)]
            i += 1
            while i < len(lines) and lines[i].startswith(" ") and lines[i].strip():
                text.append(lines[i].strip())
                i += 1
            out.append(f"- `{param.group(1)}`: {_inline(' '.join(text))}")
            continue
        if line.rstrip().endswith("::"):  # a literal block: the indented lines after it, as Python
            out.append(_inline(line.rstrip()[:-1]))
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            out += ["", "```python", *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), "```", ""]
            continue
        out.append(_inline(line))
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# -- a class's contract, from its source -------------------------------------------------------------


@dataclasses.dataclass
class Member:
    name: str
    #: ``name: type = default`` for an attribute, ``name(params) -> type`` for a method
    heading: str
    doc: str


def _annotation(node: ast.expr) -> str:
    text = ast.unparse(node)
    return text[len("ClassVar["):-1] if text.startswith("ClassVar[") else text


def members(cls: type) -> list[Member]:
    """The public attributes (with their ``#:`` comments) and methods (with their docstrings) that ``cls``
    itself defines, in source order."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    (classdef,) = ast.parse(source).body
    found = []
    for node in classdef.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            args = node.args
            args.args = [a for a in args.args if a.arg not in ("self", "cls")]
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            doc = inspect.getdoc(vars(cls)[node.name]) or ""
            decorators = {ast.unparse(d) for d in node.decorator_list}
            heading = node.name if "property" in decorators else f"{node.name}({ast.unparse(args)}){returns}"
            found.append(Member(node.name, heading, doc))
            continue
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, annotation, value = node.target.id, _annotation(node.annotation), node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation, value = node.targets[0].id, None, node.value
        else:
            continue
        if name.startswith("_"):
            continue
        comment = []
        row = node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        heading = name + (f": {annotation}" if annotation else "") + (f" = {ast.unparse(value)}" if value else "")
        found.append(Member(name, heading, " ".join(comment)))
    return found


def contract(cls: type, level: str = "####") -> str:
    """A base class as a section: its docstring, then each member it defines."""
    parts = [f"{level} `{cls.__module__}.{cls.__qualname__}`", "", markdown(cls.__doc__)]
    items = [f"- `{m.heading}`" + (f": {markdown(m.doc)}" if m.doc else "") for m in members(cls)]
    if items:
        parts += ["", *("\n  ".join(item.splitlines()) for item in items)]
    return "\n".join(parts)


# -- the page ------------------------------------------------------------------------------------------


def _cell(role: Role, field: str) -> str:
    value = role.cli_flags if field == "flags" else getattr(role, field)
    if value is None or value == ():
        return "-"
    if isinstance(value, type):
        return f"`{value.__name__}`"
    if isinstance(value, tuple):
        return ", ".join(f"`{v}`" for v in value)
    return _inline(str(value)) if field == "adds" else f"`{value}`"


def role_table() -> str:
    """BUILTIN_ROLES as a markdown table, one column per field of ``Role`` (the flag's help text left out),
    and what each column means, from the ``#:`` comments of ``Role``."""
    fields = [f.name for f in dataclasses.fields(Role) if f.name != "help"]
    rows = ["| " + " | ".join(fields) + " |", "| " + " | ".join("---" for _ in fields) + " |"]
    rows += ["| " + " | ".join(_cell(role, f).replace("|", "\\|") for f in fields) + " |" for role in BUILTIN_ROLES]
    legend = {m.name: m.doc for m in members(Role)}
    rows += ["", *(f"- `{f}`: {_inline(legend[f])}" for f in fields if legend.get(f))]
    return "\n".join(rows)


def _groups() -> list[tuple[str, str, int]]:
    """The banner comments of hookspecs.py: (title, prose, first line), in order. A banner is a block of
    ``#`` lines between two ``# ----`` rules; its title is its first line up to the colon."""
    lines = inspect.getsource(hookspecs).splitlines()
    groups = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("# ---"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("# ---"):
                j += 1
            text = " ".join(line.removeprefix("#").strip() for line in lines[i + 1 : j])
            title, _, prose = text.partition(": ")
            groups.append((title, _inline(prose[:1].upper() + prose[1:]), i + 1))
            i = j + 1
            continue
        i += 1
    return groups


def _first_line(hook: str) -> int:
    return getattr(hookspecs, hook).__code__.co_firstlineno


def render() -> str:
    """The whole of docs/plugin_hooks.md."""
    roles = {role.hook: role for role in BUILTIN_ROLES}
    out = [
        "# Plugin hooks",
        "",
        f"<!-- Generated from realfill/hookspecs.py and the role table by `{COMMAND}`: edit those, not this"
        " file (tests/test_docs.py checks that it is up to date). -->",
        "",
        markdown(hookspecs.__doc__),
        "",
        "A guide from zero to a published component, with whole examples (a backbone family, a baseline, a"
        " new role) and the backbone contract (`InpaintModel`), is [writing_a_plugin.md](writing_a_plugin.md).",
    ]
    groups = _groups()
    hooks = hook_names()
    for index, (title, prose, line) in enumerate(groups):
        end = groups[index + 1][2] if index + 1 < len(groups) else float("inf")
        mine = [h for h in hooks if line <= _first_line(h) < end]
        if not mine:
            continue
        out += ["", f"## {title}", "", prose]
        if any(h in roles for h in mine):
            out += ["", "### The role table", "", role_table(), "", contract(Component, "####")]
        for hook in mine:
            out += ["", f"### `{signature(hook)}`", "", markdown(getattr(hookspecs, hook).__doc__)]
            if hook in roles:
                out += ["", contract(roles[hook].base)]
    return "\n".join(line.rstrip() for line in "\n".join(out).splitlines()).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
