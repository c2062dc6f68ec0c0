"""A test plugin file: an image baseline, ``exits``, whose ``complete`` calls ``sys.exit(0)`` (it must not
end the run, silently or otherwise)."""

import sys
from typing import Literal

from realfill import hookimpl
from realfill.components import Baseline, ComponentConfig


class ExitingBaseline(Baseline):
    name = "exits"
    summary = "a baseline that calls sys.exit(0) in complete()"

    class Config(ComponentConfig):
        name: Literal["exits"] = "exits"

    def complete(self, scene, context=None):
        sys.exit(0)


@hookimpl
def realfill_register_baselines(registry):
    registry.add(ExitingBaseline)
