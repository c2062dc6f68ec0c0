"""The one thing pyproject.toml cannot say: the folder plugins/ installs as the package ``realfill_plugins``.

setuptools' ``[tool.setuptools.packages.find]`` names each package after its folder (``plugins.rankers``),
so the packages are found here with its ``find_packages`` and named under their installed name. A new
module, or a new folder with an ``__init__.py``, needs no line anywhere; plugins/example-plugin (a package
of its own, with no ``__init__.py`` above it) is not among them. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup


def packages_in(folder: str, name: str) -> list[str]:
    """``name`` (installed from ``folder``) and every package below it, named under ``name``."""
    return [name, *(f"{name}.{sub}" for sub in find_packages(folder))]


setup(packages=packages_in("realfill", "realfill") + packages_in("plugins", "realfill_plugins"))
