from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.receiver_process import ReceiverProcess


@pytest.fixture
def receiver_process(tmp_path: Path) -> Iterator[ReceiverProcess]:
    """A real receiver subprocess with the default settings, files under tmp_path/logs."""
    proc = ReceiverProcess(tmp_path).start()
    try:
        yield proc
    finally:
        proc.kill()
