"""Every backend sfops knows, in overview order (front door first, then what it depends on).

Adding a backend is its own package with a ``contract.py`` declaring ``BACKEND`` plus one line
here. Declarations are cheap to import (see :mod:`backends.contract`); a backend whose package
is not part of this build is skipped.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from backends.contract import Backend

# Backend packages, in overview order. Each has the same file roles: ``contract.py``
# (``BACKEND``), ``config.py`` (``parse_section`` for its ``[name]`` section), ``service.py``,
# ``model.py``, ``actions.py``.
PACKAGES = ("nginx", "postgres", "kafka", "kubernetes")
# Sections that configure no backend but how the backends relate (backends/<name>/config.py
# with ``parse_section``, parsed after every backend's section).
SECTIONS = ("topology",)
MODULES = tuple(f"backends.{name}.contract" for name in PACKAGES)

_extra: list[Backend] = []


def register(backend: Backend) -> None:
    """Add a backend at run time (plugins, tests); replaces one of the same name."""
    unregister(backend.name)
    _extra.append(backend)


def unregister(name: str) -> None:
    _extra[:] = [b for b in _extra if b.name != name]


def optional_module(module_name: str) -> ModuleType | None:
    """The module, or None when it is not part of this build. A module that exists but one of
    whose own imports is missing is a real bug: that error propagates."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None


def backends() -> list[Backend]:
    found: list[Backend] = []
    for module_name in MODULES:
        module = optional_module(module_name)
        if module is not None:
            found.append(module.BACKEND)
    names = {b.name for b in _extra}
    return [b for b in found if b.name not in names] + list(_extra)


def section_parsers() -> list[tuple[str, Any]]:
    """(section name, parser(root reader, executors) -> section or None) for every backend
    with a configuration section: each backend parses its own."""
    parsers: list[tuple[str, Any]] = []
    for name in (*PACKAGES, *SECTIONS):
        module = optional_module(f"backends.{name}.config")
        if module is not None:
            parsers.append((name, module.parse_section))
    parsers += [(b.name, b.parse_config) for b in _extra if b.parse_config is not None]
    return parsers


def section_names() -> set[str]:
    return {*PACKAGES, *SECTIONS, *(b.name for b in _extra)}


def backend(name: str) -> Backend | None:
    return next((b for b in backends() if b.name == name or b.command == name), None)
