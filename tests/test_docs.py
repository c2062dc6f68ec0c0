"""The documentation stays true: docs/plugin_hooks.md is what its generator makes from the hook specs and the
role table (one source), every hook has a test (datasette's habit), the README is a short guide whose links
resolve, and no absolute path of a machine is in the code, the docs or the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from realfill.components import BUILTIN_ROLES
from realfill.hookdoc import COMMAND, hook_names, markdown, render, signature

ROOT = Path(__file__).resolve().parents[1]


def test_plugin_hooks_md_is_generated_from_the_hook_specs():
    committed = (ROOT / "docs" / "plugin_hooks.md").read_text()
    assert committed == render(), f"docs/plugin_hooks.md is out of date: regenerate it with `{COMMAND}`"


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_on_the_generated_page_with_its_signature_and_docstring(hook):
    page = render()
    section = page.split(f"### `{signature(hook)}`\n", 1)
    assert len(section) == 2, f"{hook} has no section"
    body = section[1].split("\n### ", 1)[0]
    import realfill.hookspecs as hookspecs

    first_line = getattr(hookspecs, hook).__doc__.strip().splitlines()[0]
    assert markdown(first_line) in body
    assert "```python\n@hookimpl\n" in body  # the sample implementation, as a code block


def test_the_role_table_and_each_roles_contract_are_on_the_page():
    page = render()
    table = page.split("### The role table\n\n", 1)[1].split("\n\n", 1)[0]
    for role in BUILTIN_ROLES:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{role.name}` |"))
        assert f"`{role.base.__name__}`" in row and f"`{role.hook}`" in row
        assert all(f"`{flag}`" in row for flag in role.cli_flags)
        assert f"#### `{role.base.__module__}.{role.base.__qualname__}`" in page
    # a member of a contract comes with its #: comment or docstring
    assert "- `native_resolution: int = 512`: the side (pixels) the weights were trained at" in page
    assert "- `prepare(references: list, mask) -> None`: Extract the references' features" in page


def test_markdown_renders_params_literal_blocks_and_roles():
    text = markdown("""Do it with :class:`realfill.scene.Scene` and ``x``.

    :param run_dir: the run folder,
        written whole.

    Sample implementation::

        @hookimpl
        def f():
            pass
    """)
    assert text == ("Do it with `realfill.scene.Scene` and `x`.\n\n- `run_dir`: the run folder, written whole.\n\n"
                    "Sample implementation:\n\n```python\n@hookimpl\ndef f():\n    pass\n```")


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_have_tests(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"^def test_hook_{hook}\b", tests, re.MULTILINE), f"no test_hook_{hook}"


# -- the README: a short guide -------------------------------------------------------------------------

README = (ROOT / "README.md").read_text()


def test_readme_is_a_short_guide():
    assert len(README.splitlines()) <= 150
    for command in ("bash scripts/fill-example.sh", "bash scripts/test.sh", "bash scripts/test.sh --fast",
                    "realfill fill", "realfill ablate", "realfill plugins"):
        assert command in README, command


def test_the_readmes_commands_are_the_scripts_it_names():
    for script in re.findall(r"bash (scripts/[\w-]+\.sh)", README):
        assert (ROOT / script).is_file(), script
    assert "--fast" in (ROOT / "scripts" / "test.sh").read_text()


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))])
def test_relative_links_resolve(page):
    """Every relative markdown link of the README and docs/ names a file or folder that exists."""
    path = ROOT / page
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page}: {broken}"


# -- no absolute path of a machine ---------------------------------------------------------------------

#: a path from a machine's root into a home or work folder (``~/.cache`` and URLs do not match)
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:work|root|home|tmp|Users|mnt|var/folders)/")
SCANNED = ["realfill", "plugins", "benchmarks", "docs", "examples", "README.md", "registry.toml", "pyproject.toml"]
TEXT = {".py", ".md", ".toml", ".txt", ".json", ".sh", ".cfg", ".yaml", ".yml", ".svg", ".dot", ".csv", ".html"}


def test_no_absolute_path_of_a_machine_in_code_docs_or_readme():
    found = []
    for name in SCANNED:
        path = ROOT / name
        files = [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if p.suffix in TEXT and p.is_file()]
        for file in files:
            for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
                if MACHINE_PATH.search(line):
                    found.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "use relative paths and public names:\n" + "\n".join(found)


def test_the_machine_path_pattern_finds_what_it_should():
    assert MACHINE_PATH.search('"scene": "/work/main/examples/motorcycle"')
    assert MACHINE_PATH.search("quoted from /work/shared/DESIGN.md")
    assert MACHINE_PATH.search("(looked in: /root/.cache/torch/hub)")
    assert not MACHINE_PATH.search("~/.cache/huggingface/hub and https://example.org/home/x")
    assert not MACHINE_PATH.search("runs/motorcycle-cpu/baselines/telea")


# -- docs/architecture.md: the role table names every role and every built-in ---------------------------


def test_the_architecture_role_table_lists_every_role_and_builtin():
    from realfill.inventory import read

    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## The role table", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines() if line.startswith("| ")}
    for role in BUILTIN_ROLES:
        assert role.name in rows, f"docs/architecture.md: no row for the role {role.name}"
        assert f"`{role.base.__name__}`" in rows[role.name]
    for entry in read(ROOT / "registry.toml"):
        assert f"`{entry['name']}`" in rows[entry["role"]], f"docs/architecture.md: {entry['role']} {entry['name']}"
    assert (ROOT / "docs" / "images" / "stage_graph.svg").is_file() and "images/stage_graph.svg" in text


def test_the_readmes_plugin_example_registers_and_validates(plugins):
    """The README's plugin, run as written: it registers under its name and its config rejects a typo."""
    from pydantic import ValidationError

    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102 - the README's own example
    registry = plugins.registry("masking")
    namespace["realfill_register_masking"](registry)
    component = registry.get("border-bands")
    assert component is namespace["BorderBands"] and component.Config().name == "border-bands"
    with pytest.raises(ValidationError):
        component.Config(name="border-bands", max_fracton=0.3)
