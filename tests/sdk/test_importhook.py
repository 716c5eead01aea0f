"""Callbacks on a module's import: at once when imported already, else right after it executes."""

from __future__ import annotations

import importlib
import importlib.resources
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sluice import _health, _importhook


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real package on sys.path, never imported yet."""
    name = f"sluice_hook_probe_{tmp_path.name.replace('-', '_')}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("VALUE = 42\n")
    (root / "data.txt").write_text("resource")
    monkeypatch.syspath_prepend(str(tmp_path))
    _health.reset()
    yield name
    sys.modules.pop(name, None)


def test_the_callback_runs_after_the_module_has_executed_before_import_returns(package: str) -> None:
    seen: list[int] = []
    assert not _importhook.when_imported(package, lambda module: seen.append(module.VALUE))
    assert package in _importhook.pending()
    assert seen == []
    module = importlib.import_module(package)
    assert seen == [42]
    assert package not in _importhook.pending()
    # the module's own loader still answers: resources, source
    assert importlib.resources.files(module).joinpath("data.txt").read_text() == "resource"


def test_an_imported_module_gets_its_callback_at_once(package: str) -> None:
    importlib.import_module(package)
    seen: list[ModuleType] = []
    assert _importhook.when_imported(package, seen.append)
    assert seen == [sys.modules[package]]


def test_a_failing_callback_is_reported_and_the_import_goes_on(package: str) -> None:
    def explode(module: ModuleType) -> None:
        raise RuntimeError("hook exploded")

    _importhook.when_imported(package, explode)
    assert importlib.import_module(package).VALUE == 42
    assert _health.counters[f"errors.import_hook.{package}"] == 1
