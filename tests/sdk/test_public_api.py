"""The public surface is deliberate: this pins it, so any change shows up in review."""

from __future__ import annotations

import sluice
import sluice.testing

EXPECTED = [
    "Category",
    "CategoryLogger",
    "ConfigError",
    "EventType",
    "Sluice",
    "SluiceError",
    "__version__",
    "audit",
    "context",
    "event",
    "get_logger",
    "init",
    "job",
    "shutdown",
]


def test_all_lists_exactly_the_public_names_sorted() -> None:
    assert sluice.__all__ == EXPECTED
    assert sorted(sluice.__all__) == sluice.__all__


def test_every_exported_name_exists() -> None:
    for name in sluice.__all__:
        assert hasattr(sluice, name), name


def test_testing_module_exports_capture() -> None:
    assert sluice.testing.__all__ == ["Captured", "capture"]


def test_sdk_never_imports_the_collector() -> None:
    """Imports go one way: sluice_collector may import sluice, never the reverse."""
    import pathlib

    root = pathlib.Path(sluice.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if "sluice_collector" in p.read_text()]
    assert offenders == []
