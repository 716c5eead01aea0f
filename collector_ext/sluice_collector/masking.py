"""The masking stage (placeholder until the masking issue lands): rewrites secrets in place."""

from __future__ import annotations

from dataclasses import dataclass

from sluice_collector.batch import Batch
from sluice_collector.configreader import Section
from sluice_collector.telemetry import ReceiverTelemetry


@dataclass(frozen=True, slots=True)
class MaskingConfig:
    enabled: bool = True

    @classmethod
    def from_section(cls, section: Section) -> MaskingConfig:
        return cls(enabled=section.get_bool("enabled", True))


class SecretMasker:
    """Stage: masks every string of a batch in place and returns the batch."""

    def __init__(self, config: MaskingConfig, telemetry: ReceiverTelemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry

    def __call__(self, batch: Batch) -> Batch:
        return batch
