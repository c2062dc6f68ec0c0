"""Every hook has a test and appears in docs/plugin_hooks.md with its exact signature (datasette's habit)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from realfill.hookdoc import hook_names, signature

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_are_documented(hook):
    docs = (ROOT / "docs" / "plugin_hooks.md").read_text()
    assert f"### `{signature(hook)}`" in docs


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_have_tests(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"^def test_hook_{hook}\b", tests, re.MULTILINE), f"no test_hook_{hook}"


def test_docs_document_no_hook_that_does_not_exist():
    docs = (ROOT / "docs" / "plugin_hooks.md").read_text()
    documented = set(re.findall(r"^### `(realfill_\w+)\(", docs, re.MULTILINE))
    assert documented == set(hook_names())
