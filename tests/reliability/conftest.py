"""Fixtures of the reliability tests: a receiver subprocess started and always killed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.receiver_process import ReceiverProcess


@pytest.fixture
def start_receiver(tmp_path: Path) -> Iterator[Any]:
    """`start_receiver(settings, extra_args=..., workdir=...)` → a started ReceiverProcess."""
    started: list[ReceiverProcess] = []

    def start(settings: dict[str, Any] | None = None, *, extra_args: list[str] | None = None,
              workdir: Path | None = None) -> ReceiverProcess:
        proc = ReceiverProcess(workdir or tmp_path, settings, extra_args=extra_args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
