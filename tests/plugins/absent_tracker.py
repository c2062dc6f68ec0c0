"""A test plugin file: a tracker whose library is not installed (``--tracker absent`` must say so in one line)."""

from typing import Literal

from realfill import hookimpl
from realfill.components import ComponentConfig, Tracker


class AbsentTracker(Tracker):
    name = "absent"
    summary = "a tracker whose client library is missing"
    requires = ("realfill_no_such_package",)

    class Config(ComponentConfig):
        name: Literal["absent"] = "absent"


@hookimpl
def realfill_register_trackers(registry):
    registry.add(AbsentTracker)
