"""The plugin manager: built-in plugins, then the ``realfill`` entry-point group, then validation.

Built-in components live in ``realfill_plugins`` (the repository's ``plugins/`` folder) and register
through exactly the same hooks as third-party packages (pytest and datasette do the same). The core
talks to plugins only through the typed methods of :class:`RealfillPlugins`, never ``pm.hook.*``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy

from realfill import __version__, hookspecs
from realfill.components import BUILTIN_ROLES, Component, Role
from realfill.errors import DuplicateComponentError, UserError
from realfill.registry import ComponentRegistry

ENTRY_POINT_GROUP = "realfill"
DISABLE_AUTOLOAD_ENV = "REALFILL_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "REALFILL_NO_PLUGINS"
BUILTIN_PREFIX = "realfill_plugins."



def _walk_builtins() -> tuple[str, ...]:
    """Every module of the ``realfill_plugins`` package, depth first in name order (pkgutil sorts). Found,
    not imported by name: the core never imports its plugins (tests/test_import_graph.py)."""
    spec = importlib.util.find_spec(BUILTIN_PREFIX.rstrip("."))
    if spec is None or not spec.submodule_search_locations:
        return ()
    return tuple(
        info.name
        for info in pkgutil.walk_packages(spec.submodule_search_locations, BUILTIN_PREFIX)
        if not info.ispkg
    )


#: The built-in plugin modules, registered in this order before any entry point: every module under
#: ``realfill_plugins`` (the repository's ``plugins/``) that implements a hook. Nobody keeps a list.
BUILTIN_PLUGINS: tuple[str, ...] = _walk_builtins()


def _implements_a_hook(module: Any) -> bool:
    return any(name.startswith("realfill_") and inspect.isroutine(obj) for name, obj in vars(module).items())


#: what a plugin's import, registration or notification may raise and be reported and skipped for:
#: everything but KeyboardInterrupt (a plugin's SystemExit must not end the command silently)
PLUGIN_FAILURES = (Exception, SystemExit, GeneratorExit, BaseExceptionGroup)


class RealfillPluginWarning(UserWarning):
    """A plugin failed to load or to register, and was skipped."""


@dataclass
class PluginInfo:
    name: str
    version: str
    builtin: bool
    distribution: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)


class _Manager(pluggy.PluginManager):
    """Accepts unmarked ``realfill_*`` functions as hook implementations, like pytest, so that a
    plugin with a misspelled hook name fails ``check_pending`` instead of silently doing nothing."""

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("realfill_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts


def _blocked_from_env() -> set[str]:
    raw = os.environ.get(BLOCK_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


class RealfillPlugins:
    """Typed access to the plugins: registries per role and the run lifecycle notifications."""

    def __init__(self, *, autoload: bool | None = None, blocked: Iterable[str] = (), builtins: Iterable[str] | None = None):
        self.pm = _Manager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.problems: list[str] = []
        self._versions: dict[str, tuple[str, str | None]] = {}
        self._builtin_names: set[str] = set()
        self._registries: dict[str, ComponentRegistry] | None = None
        self.blocked = set(blocked) | _blocked_from_env()
        #: the role table: the built-in roles, then those plugins add (``realfill_add_roles``)
        self.roles: tuple[Role, ...] = BUILTIN_ROLES
        self._considered: set[str] = set()
        if autoload is None:
            autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        for module_name in BUILTIN_PLUGINS if builtins is None else builtins:
            self._register_builtin(module_name)
        if autoload:
            self._load_entry_points()
        self._add_plugin_roles()
        self._check_pending()
        for name in sorted(self.blocked - self._considered):  # a typo must not pass for a blocked plugin
            self._warn(f"--no-plugin {name} (or {BLOCK_ENV}): no plugin of that name was found, so nothing "
                       "was blocked; `realfill plugins` lists their names")

    @property
    def config_roles(self) -> tuple[Role, ...]:
        """The roles that enter the run config (a ``field``), in table order."""
        return tuple(role for role in self.roles if role.field is not None)

    # -- loading ------------------------------------------------------------------------------

    def _is_blocked(self, name: str) -> bool:
        short = name.removeprefix(BUILTIN_PREFIX)
        self._considered.update((name, short))  # for the warning about blocked names no plugin has
        return name in self.blocked or short in self.blocked

    def _warn(self, message: str) -> None:
        self.problems.append(message)
        warnings.warn(message, RealfillPluginWarning, stacklevel=3)

    def _register_builtin(self, module_name: str) -> None:
        if self._is_blocked(module_name):
            return
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written (yet): nothing to register
                return
            self._warn(f"built-in plugin '{module_name}' failed to import ({exc}); skipped")
            return
        except PLUGIN_FAILURES as exc:  # noqa: BLE001 - report any import failure by name
            self._warn(f"built-in plugin '{module_name}' failed to import ({type(exc).__name__}: {exc}); skipped")
            return
        if not _implements_a_hook(module):  # a helper module of a plugin folder
            return
        self.register(module, name=module_name, version=__version__, distribution="realfill")
        self._builtin_names.add(module_name)

    def _load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self._is_blocked(ep.name) or self.pm.get_plugin(ep.name) is not None:
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else "unknown"
            try:
                plugin = ep.load()
            except PLUGIN_FAILURES as exc:  # noqa: BLE001 - a broken plugin must not take the platform down
                self._warn(
                    f"plugin '{ep.name}' ({dist_name or 'unknown distribution'}) failed to import "
                    f"({type(exc).__name__}: {exc}); skipped"
                )
                continue
            try:
                self.register(plugin, name=ep.name, version=version, distribution=dist_name)
            except PLUGIN_FAILURES as exc:  # noqa: BLE001
                self._warn(f"plugin '{ep.name}' could not be registered ({exc}); skipped")

    def register(self, plugin: Any, name: str, version: str = "unknown", distribution: str | None = None) -> None:
        """Register a plugin object (module or instance). Tests and embedding code may call this directly."""
        self.pm.register(plugin, name=name)
        self._versions[name] = (version, distribution)
        self._registries = None

    def _add_plugin_roles(self) -> None:
        """Add the roles plugins declare: each gets its register hook's spec, so ``check_pending`` accepts
        the plugins that implement it."""
        for impl in self.pm.hook.realfill_add_roles.get_hookimpls():
            try:
                declared = list(impl.function() or ())
                for role in declared:
                    self._check_role(role)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the platform down
                self._warn(f"plugin '{impl.plugin_name}' declared a bad role ({type(exc).__name__}: {exc}); "
                           "its roles are skipped")
                continue
            for role in declared:
                self.pm.add_hookspecs(SimpleNamespace(**{role.hook: hookspecs.register_hookspec(role)}))
                self.roles += (role,)

    def _check_role(self, role: Any) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"{role!r} is not a realfill.components.Role")
        if any(role.name == r.name or role.hook == r.hook for r in self.roles):
            raise ValueError(f"role '{role.name}' or its hook '{role.hook}' is already declared")
        if role.field is not None and any(role.field == r.field for r in self.roles):
            raise ValueError(f"run-config field '{role.field}' is already a role's")
        if not role.hook.startswith("realfill_register_"):
            raise ValueError(f"role '{role.name}': its hook must be named realfill_register_<something>")
        if not (isinstance(role.base, type) and issubclass(role.base, Component) and role.base.role == role.name):
            raise TypeError(f"role '{role.name}': base must be a Component subclass with role = '{role.name}'")

    def _check_pending(self) -> None:
        """Unregister (with a warning) every plugin that implements a hook no spec defines."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
                self.pm.unregister(exc.plugin)
                self._versions.pop(name, None)
                self._warn(f"plugin '{name}' implements an unknown hook ({exc}); skipped")

    # -- registries ---------------------------------------------------------------------------

    @property
    def registries(self) -> dict[str, ComponentRegistry]:
        if self._registries is None:
            self._registries = {role.name: self._build_registry(role) for role in self.roles}
        return self._registries

    def _build_registry(self, table_role: Role) -> ComponentRegistry:
        role = table_role.name
        registry = ComponentRegistry(role, table_role.plural_name)
        hook = getattr(self.pm.hook, table_role.hook)
        # call plugin by plugin (registration order) so that a failure is attributed and contained
        for impl in hook.get_hookimpls():
            before = set(registry.names())
            try:
                with registry.adding_for(impl.plugin_name):
                    impl.function(*[registry for _ in impl.argnames])
            except DuplicateComponentError as exc:
                raise UserError(str(exc)) from None
            except PLUGIN_FAILURES as exc:  # noqa: BLE001
                for added in set(registry.names()) - before:
                    registry._components.pop(added)
                    registry._plugin_of.pop(added)
                self._warn(
                    f"plugin '{impl.plugin_name}' raised while registering {table_role.plural_name} "
                    f"({type(exc).__name__}: {exc}); its {table_role.plural_name} are skipped"
                )
        return registry

    def registry(self, role: str) -> ComponentRegistry:
        """The registry of ``role`` (``registry("ranker")``): the one accessor, for a built-in role and for a
        plugin's alike."""
        if role not in self.registries:
            raise UserError(f"unknown role '{role}'; roles: {', '.join(r.name for r in self.roles)}")
        return self.registries[role]


    # -- listing ------------------------------------------------------------------------------

    def plugin_infos(self) -> list[PluginInfo]:
        infos = {}
        for name, _plugin in self.pm.list_name_plugin():
            version, dist = self._versions.get(name, ("unknown", None))
            infos[name] = PluginInfo(name=name, version=version, builtin=name in self._builtin_names, distribution=dist)
        for role, registry in self.registries.items():
            for component_name in registry.names():
                owner = registry.plugin_of(component_name)
                if owner in infos:
                    infos[owner].components.setdefault(role, []).append(component_name)
        return list(infos.values())

    # -- run lifecycle ------------------------------------------------------------------------

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except PLUGIN_FAILURES as exc:  # noqa: BLE001 - an observer must not break the run
                self._warn(f"plugin '{impl.plugin_name}' raised in {hook_name} ({type(exc).__name__}: {exc})")

    def run_start(self, *, run_dir: Path, config: Any, scene: Any) -> None:
        self._notify("realfill_run_start", run_dir=run_dir, config=config, scene=scene)

    def train_step_end(self, *, step: int, loss: float, learning_rates: dict[str, float], seconds: float) -> None:
        self._notify("realfill_train_step_end", step=step, loss=loss, learning_rates=learning_rates, seconds=seconds)

    def validation_done(self, *, run_dir: Path, step: int, path: Path, images: list[Any]) -> None:
        self._notify("realfill_validation_done", run_dir=run_dir, step=step, path=path, images=images)

    def sampling_done(self, *, run_dir: Path, sample_paths: list[Path]) -> None:
        self._notify("realfill_sampling_done", run_dir=run_dir, sample_paths=sample_paths)

    def ranking_done(self, *, run_dir: Path, ranking: list[dict]) -> None:
        self._notify("realfill_ranking_done", run_dir=run_dir, ranking=ranking)

    def run_end(self, *, run_dir: Path, result_path: Path | None, error: str | None) -> None:
        self._notify("realfill_run_end", run_dir=run_dir, result_path=result_path, error=error)


_default: RealfillPlugins | None = None


def get_plugins() -> RealfillPlugins:
    """The process-wide plugin manager with default settings (autoload per the environment)."""
    global _default
    if _default is None:
        _default = RealfillPlugins()
    return _default


def set_plugins(plugins: RealfillPlugins | None) -> None:
    """Replace the process-wide plugin manager (the CLI does this for ``--no-plugin``)."""
    global _default
    _default = plugins
