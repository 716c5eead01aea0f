"""Forward sink (placeholder until the forwarding issue lands): masked OTLP on to other backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sluice_collector.configreader import Section


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    targets: tuple[Any, ...] = ()

    @classmethod
    def from_section(cls, section: Section) -> ForwardConfig:
        targets = section.raw("targets") or []
        if targets:
            section.error("targets", "forwarding is not available in this version of sluice yet")
        return cls()
