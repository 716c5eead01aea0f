"""Discover and enable installed OpenTelemetry instrumentors, the way `opentelemetry-instrument` does.

Each `opentelemetry_instrumentor` entry point is enabled when its library is installed (checked
with the instrumentation package's own dependency rules), unless excluded by the allow list
(`instrument=[...]`) or the deny list (`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`). A failing
instrumentor is logged once and skipped: one broken integration must not stop the app or the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sluice import _health

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
            instrumentor = entry_point.load()()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(skip_dep_check=True)
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
