"""What a receiver stored, for comparing two receivers' files line by line."""

from __future__ import annotations

import json
from pathlib import Path


def stored_files(logs: Path) -> dict[str, str]:
    """Every file under `logs` (hidden ones aside) by relative path, with the one field the
    receiver stamps from its own clock blanked: the `observed_timestamp` of an access record it
    derived from an HTTP server span (`sluice.derived_from: span`), which is when it arrived."""
    files = {}
    for path in sorted(logs.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        lines = []
        for line in path.read_text().splitlines(keepends=True):
            record = json.loads(line)
            if record.get("attributes", {}).get("sluice.derived_from") == "span":
                record["observed_timestamp"] = "(arrival)"
                line = json.dumps(record, separators=(",", ":")) + "\n"
            lines.append(line)
        files[str(path.relative_to(logs))] = "".join(lines)
    return files
