"""A test plugin file that adds a role the way a third-party package would: ``postprocess``, with two
components (``identity``, ``flip``) and NO declared stage or plural. The platform must take the undeclared
stage as training (never merged in an ablation) and spell the plural ``postprocesses``. Nothing outside this
file knows about it; the components are not called by the pipeline (the role exists to be swept)."""

from typing import ClassVar, Literal

import numpy as np

from realfill import hookimpl
from realfill.components import Component, ComponentConfig, Role


class Postprocess(Component):
    """The role's base class: ``apply(image)`` on an HxWx3 uint8 result."""

    role: ClassVar[str] = "postprocess"

    def apply(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Identity(Postprocess):
    name = "identity"
    summary = "returns the image as it is"

    class Config(ComponentConfig):
        name: Literal["identity"] = "identity"

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image


class Flip(Postprocess):
    name = "flip"
    summary = "mirrors the image left to right"

    class Config(ComponentConfig):
        name: Literal["flip"] = "flip"

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image[:, ::-1]


@hookimpl
def realfill_add_roles():
    # positional and keyword arguments as plugins wrote them before roles had a stage and a plural
    return [Role("postprocess", Postprocess, "realfill_register_postprocesses",
                 "postprocessing steps (applied to a result)", field="postprocess", default="identity")]


@hookimpl
def realfill_register_postprocesses(registry):
    registry.add(Identity)
    registry.add(Flip)
