"""The public surface is deliberate: this pins it, so any change shows up in review."""

from __future__ import annotations

import pathlib

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


def test_init_has_an_explicit_typed_signature_with_every_option() -> None:
    """IDEs and type checkers see every option: two positional-or-keyword, the rest keyword-only."""
    import inspect
    import typing

    from sluice._config import OPTIONS

    signature = inspect.signature(sluice.init)
    params = list(signature.parameters.values())
    assert [p.name for p in params] == list(OPTIONS)
    assert [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD] == ["service_name", "endpoint"]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:])
    assert all(p.default is None for p in params)
    hints = typing.get_type_hints(sluice.init)
    assert all(hints[p.name] is not typing.Any and type(None) in typing.get_args(hints[p.name]) for p in params)
    assert hints["return"] is sluice.Sluice
    doc = sluice.init.__doc__ or ""
    assert [name for name in OPTIONS if f"    {name}: " not in doc] == []


def test_every_init_option_is_documented_in_docs_sdk_md() -> None:
    import pathlib

    from sluice._config import OPTIONS

    docs = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    assert [name for name in OPTIONS if f"| `{name}` |" not in docs] == []


def test_type_checkers_reject_a_misspelt_option_and_a_wrongly_typed_value(tmp_path: pathlib.Path) -> None:
    """mypy (strict) on user code: the signature is real to a type checker, not `**options: Any`."""
    import os
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[2]
    user_code = tmp_path / "app.py"
    user_code.write_text('import sluice\n\nsluice.init("billing", sample_rate=0.5)\nsluice.init(max_queue_size="8")\n'
                         'sluice.init("billing", "http://receiver:4317", sample_ratio=0.5, headers={"a": "b"})\n')
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--no-incremental", "--follow-imports=silent",
         str(user_code)],
        cwd=repo, env={**os.environ, "MYPYPATH": str(repo / "sdk")}, capture_output=True, text=True, check=False)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, result.stdout + result.stderr
    assert 'app.py:3: error: Unexpected keyword argument "sample_rate" for "init"; did you mean "sample_ratio"?' in errors[0]
    assert 'app.py:4: error: Argument "max_queue_size" to "init" has incompatible type "str"' in errors[1]
