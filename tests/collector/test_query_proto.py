"""The committed generated LogQuery modules match proto/sluice/v1/query.proto."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_generated_proto_modules_are_up_to_date(tmp_path: Path) -> None:
    """`make proto` output is committed; regenerating it must change nothing."""
    pytest.importorskip("grpc_tools")
    from sluice_collector.query import codegen

    for fresh in codegen.generate(tmp_path):
        committed = codegen.OUT_DIR / fresh.name
        assert committed.read_text() == fresh.read_text(), f"{committed} is stale: run `make proto`"
