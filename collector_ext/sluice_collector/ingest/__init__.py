"""The transport-neutral ingest core: auth, admission and decoding, shared by every front door.

`IngestCore.export` is the one call a front door makes per request (see `ingest.core`).
"""

from sluice_collector.ingest.core import Caller, ExportResult, IngestConfig, IngestCore
from sluice_collector.ingest.decode import Encoding

__all__ = ["Caller", "Encoding", "ExportResult", "IngestConfig", "IngestCore"]
