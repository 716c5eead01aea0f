"""Run a callback when a module has finished importing: now if it already has, else right after.

Auto-instrumentation used to import every framework an instrumentor exists for (fastapi, django,
flask: 3.4 s of a 3.8 s `init()`), whether the app used it or not. Patching a framework is only
needed once the app imports it, and must happen before the app reads the patched names: the
instant the framework's top-level module has executed is both. A finder first on `sys.meta_path`
(PEP 451, the way `wrapt`'s post-import hooks work) wraps the loader of a watched module so the
callbacks run right after its `exec_module`, before the `import` statement that asked for it
returns. A module already in `sys.modules` gets its callback at once; one whose import fails gets
it on the next successful import. Callbacks must not raise into the importing code: a failing
one is reported once and the import goes on.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from sluice import _health

__all__ = ["pending", "when_imported"]

_lock = threading.Lock()
_callbacks: dict[str, list[Callable[[ModuleType], None]]] = {}


def pending() -> set[str]:
    """Modules that callbacks still wait for."""
    with _lock:
        return set(_callbacks)


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> bool:
    """Call `callback(module)` once module `name` is imported; True if it ran now."""
    with _lock:
        module = sys.modules.get(name)
        if module is None:
            _callbacks.setdefault(name, []).append(callback)
            if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
                sys.meta_path.insert(0, _PostImportFinder())
            return False
    _run(name, [callback], module)
    return True


def _run(name: str, callbacks: Sequence[Callable[[ModuleType], None]], module: ModuleType) -> None:
    for callback in callbacks:
        try:
            callback(module)
        except Exception as exc:
            _health.report_once(f"import_hook.{name}", f"a hook on importing {name!r} failed", exc)


def _fire(name: str, module: ModuleType) -> None:
    with _lock:
        callbacks = _callbacks.pop(name, [])
    _run(name, callbacks, module)


class _HookedLoader(importlib.abc.Loader):
    """The module's own loader, with the callbacks run after it has executed the module."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _fire(self._name, sys.modules.get(self._name, module))

    def __getattr__(self, attribute: str) -> Any:
        # get_resource_reader, get_source, is_package, ... as the real loader has them
        return getattr(self._loader, attribute)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Asks the finders after it for a watched module's spec, and hooks that spec's loader."""

    def __init__(self) -> None:
        self._busy = threading.local()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _callbacks or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is None:
                    continue
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
            return None
        finally:
            self._busy.name = None
