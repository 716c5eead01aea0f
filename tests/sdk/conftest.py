from __future__ import annotations

from collections.abc import Iterator

import pytest

from sluice.testing import Captured, capture


@pytest.fixture
def tel() -> Iterator[Captured]:
    """In-process telemetry capture (sluice initialised once per test process with exporter="none")."""
    with capture() as captured:
        yield captured
