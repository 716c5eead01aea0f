"""Syslog sink (placeholder until the syslog issue lands)."""

from __future__ import annotations

from dataclasses import dataclass

from sluice_collector.configreader import Section


@dataclass(frozen=True, slots=True)
class SyslogConfig:
    enabled: bool = False

    @classmethod
    def from_section(cls, section: Section) -> SyslogConfig:
        return cls(enabled=section.get_bool("enabled", False))
