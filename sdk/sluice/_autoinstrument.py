"""Discover and enable installed OpenTelemetry instrumentors, the way `opentelemetry-instrument` does.

Each `opentelemetry_instrumentor` entry point is enabled when its library is installed (checked
with the instrumentation package's own dependency rules), unless excluded by the allow list
(`instrument=[...]`) or the deny list (`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`). A failing
instrumentor is logged once and skipped: one broken integration must not stop the app or the others.

An instrumentor is loaded only for a library the app uses. Loading one imports its library
(fastapi, django and flask cost 3.4 s of a 3.8 s `init()` in an app that used none of them), so
an instrumentor whose library's top-level module is not imported yet is enabled right after the
app imports it (`_importhook`), before the app can read what it patches. Instrumentors that
declare no library (standard-library ones such as urllib) are enabled at once, as before.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points, packages_distributions
from types import ModuleType
from typing import Any

from sluice import _health, _importhook

__all__ = ["instrument_all"]

# Covered by sluice's runtime metrics, which choose a process-level subset of its instruments.
_HANDLED_ELSEWHERE = frozenset({"system_metrics"})


def _conflict(entry_point: EntryPoint) -> Any:
    try:
        from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts
    except ImportError:
        return None
    dist = getattr(entry_point, "dist", None)
    return get_dist_dependency_conflicts(dist) if dist is not None else None


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@functools.cache
def _modules_by_distribution() -> dict[str, tuple[str, ...]]:
    """Distribution name -> the top-level modules it installs (read once from the metadata)."""
    out: dict[str, list[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            out.setdefault(_canonical(dist), []).append(module)
    return {dist: tuple(sorted(modules)) for dist, modules in out.items()}


def _library_modules(entry_point: EntryPoint) -> tuple[str, ...]:
    """Top-level modules of the libraries an instrumentor is for (its dist's `instruments` and
    `instruments-any` extras); () when it declares none or they cannot be told: enable at once."""
    dist = getattr(entry_point, "dist", None)
    requires = getattr(dist, "requires", None) or []
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return ()
    names: list[str] = []
    for dep in requires:
        if "instruments" not in dep:
            continue
        req = Requirement(dep)
        if req.marker is not None and any(
                req.marker.evaluate({"extra": extra}) for extra in ("instruments", "instruments-any")):
            names.append(_canonical(req.name))
    by_dist = _modules_by_distribution()
    modules = [module for name in names for module in by_dist.get(name, ())]
    return tuple(sorted(set(modules)))


def _enable(entry_point: EntryPoint) -> None:
    instrumentor = entry_point.load()()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(skip_dep_check=True)


def _enable_on_import(entry_point: EntryPoint, modules: tuple[str, ...], outcome: dict[str, str]) -> None:
    """Enable the instrumentor when the first of `modules` is imported (once, from any thread)."""
    name = entry_point.name
    done = threading.Lock()

    def enable(_module: ModuleType) -> None:
        if not done.acquire(blocking=False):
            return
        try:
            _enable(entry_point)
            outcome[name] = "enabled"
        except Exception as exc:
            _health.report_once(f"instrument.{name}", f"instrumentor {name!r} failed; skipped", exc)
            outcome[name] = f"failed: {exc!r}"

    outcome[name] = f"deferred: until {' or '.join(modules)} is imported"
    for module in modules:
        _importhook.when_imported(module, enable)


def instrument_all(selection: bool | Iterable[str], disabled: Iterable[str] = ()) -> dict[str, str]:
    """Enable instrumentors; returns name -> outcome ("enabled", "skipped: ...", "failed: ...")."""
    allow = None if selection is True else set(selection or ())
    deny = set(disabled)
    outcome: dict[str, str] = {}
    if selection is False or "*" in deny:
        return outcome
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        name = entry_point.name
        if name in _HANDLED_ELSEWHERE and allow is None:
            continue
        if name in deny:
            outcome[name] = "skipped: disabled"
            continue
        if allow is not None and name not in allow:
            continue
        try:
            conflict = _conflict(entry_point)
            if conflict is not None:
                outcome[name] = f"skipped: {conflict}"
                continue
            modules = _library_modules(entry_point)
            if modules and not any(m in sys.modules for m in modules):
                _enable_on_import(entry_point, modules, outcome)
                continue
            _enable(entry_point)
            outcome[name] = "enabled"
        except ModuleNotFoundError as exc:
            outcome[name] = f"skipped: {exc}"
        except Exception as exc:
            _health.report_once(f"instrument.{name}", f"instrumentor {name!r} failed; skipped", exc)
            outcome[name] = f"failed: {exc!r}"
    if allow:
        for name in sorted(allow - set(outcome)):
            outcome[name] = "skipped: not installed"
    return outcome
