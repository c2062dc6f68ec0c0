"""A test plugin file that adds a role: ``note``, a component that writes a note into the run folder when
a run starts. The role enters the run config (field ``note``, default ``none``), so ``--note NAME`` and
``--set note.text=...`` work on fill and config. Nothing outside this file knows about it."""

from pathlib import Path
from typing import ClassVar, Literal

from realfill import hookimpl
from realfill.components import Component, ComponentConfig, Role
from realfill.plugins import get_plugins


class Note(Component):
    """The role's base class: ``write(run_dir)`` when a run starts."""

    role: ClassVar[str] = "note"

    def write(self, run_dir: Path) -> None:
        raise NotImplementedError


class NoNote(Note):
    name = "none"
    summary = "writes nothing"

    class Config(ComponentConfig):
        name: Literal["none"] = "none"

    def write(self, run_dir: Path) -> None:
        pass


class TextNote(Note):
    name = "text-note"
    summary = "writes NOTE.txt with a fixed text into the run folder"

    class Config(ComponentConfig):
        name: Literal["text-note"] = "text-note"
        text: str = "hello"

    def write(self, run_dir: Path) -> None:
        (Path(run_dir) / "NOTE.txt").write_text(self.config.text)


@hookimpl
def realfill_add_roles():
    return [Role("note", Note, "realfill_register_notes", "notes (text written into the run folder)",
                 field="note", help="note component name", default="none")]


@hookimpl
def realfill_register_notes(registry):
    registry.add(NoNote)
    registry.add(TextNote)


@hookimpl
def realfill_run_start(run_dir, config):
    get_plugins().registry("note").create(config.note).write(run_dir)
