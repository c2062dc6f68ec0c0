"""One registry per role, keyed by the name users type.

Plugins fill them from their ``realfill_register_<role>`` hooks with ``registry.add(ComponentClass)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager

from realfill.components import Component
from realfill.errors import DuplicateComponentError, UnknownComponentError


class ComponentRegistry:
    """Components of one role. ``add`` records which plugin added each, for errors and listings."""

    def __init__(self, role: str, plural: str | None = None):
        self.role = role
        #: what messages call several (the role table's plural: ``masking strategies``)
        self.plural = plural or f"{role}s"
        self._components: dict[str, type[Component]] = {}
        self._plugin_of: dict[str, str] = {}
        self._current_plugin: str | None = None

    @contextmanager
    def adding_for(self, plugin_name: str) -> Iterator[None]:
        """Attribute every ``add`` inside the block to ``plugin_name`` (the plugin manager does this)."""
        previous, self._current_plugin = self._current_plugin, plugin_name
        try:
            yield
        finally:
            self._current_plugin = previous

    def add(self, component: type[Component]) -> type[Component]:
        """Register a component class under its ``name``. Usable as a class decorator."""
        if not (isinstance(component, type) and issubclass(component, Component)):
            raise TypeError(f"{self.role} registry: {component!r} is not a Component subclass")
        if component.role != self.role:
            raise TypeError(
                f"{self.role} registry: {component.__name__} is a {component.role or 'role-less'} component"
            )
        name = component.name
        if not name:
            raise TypeError(f"{self.role} registry: {component.__name__} has no name")
        config_name = component.Config.model_fields.get("name")
        if config_name is None or config_name.default != name:
            raise TypeError(
                f"{self.role} '{name}': its Config must declare name: Literal['{name}'] = '{name}'"
            )
        plugin = self._current_plugin or component.__module__
        if name in self._components and self._components[name] is not component:
            raise DuplicateComponentError(
                f"{self.role} '{name}' is registered twice: by plugin '{self._plugin_of[name]}' "
                f"and by plugin '{plugin}'; block one with --no-plugin NAME"
            )
        self._components[name] = component
        self._plugin_of[name] = plugin
        return component

    def get(self, name: str) -> type[Component]:
        try:
            return self._components[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = ", ".join(sorted(self._components)) or "none registered"
        by_case = [known for known in self._components if known.lower() == name.lower()]  # SIFT -> sift
        close = by_case or difflib.get_close_matches(name.lower(), list(self._components), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.role} '{name}'{hint}; known {self.plural}: {known}"

    def create(self, config) -> Component:
        """Instantiate the component a validated config names."""
        return self.get(config.name)(config)

    def plugin_of(self, name: str) -> str:
        return self._plugin_of[name]

    def names(self) -> list[str]:
        return sorted(self._components)

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __iter__(self) -> Iterator[type[Component]]:
        return iter(self._components[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._components)
