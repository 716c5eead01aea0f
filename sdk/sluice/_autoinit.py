"""Zero-code start-up for `sluice run -- python app.py`: call `autoinit()` from a sitecustomize.

Configuration comes only from `SLUICE_*`/`OTEL_*` variables. Auto-instrumentation is on unless
`SLUICE_INSTRUMENT` says otherwise. It never raises: a bad variable is printed to stderr (naming
the variable) and the app runs uninstrumented rather than not at all.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sluice import _runtime
from sluice.errors import ConfigError

__all__ = ["autoinit"]


def autoinit() -> _runtime.Sluice | None:
    """Initialise sluice from the environment; None (and a message on stderr) when it cannot."""
    if os.environ.get("SLUICE_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return None
    options: dict[str, Any] = {} if "SLUICE_INSTRUMENT" in os.environ else {"instrument": True}
    try:
        return _runtime.init(**options)
    except ConfigError as exc:
        print(f"sluice: not started: {exc}", file=sys.stderr)
    except Exception as exc:
        print(f"sluice: not started: {exc!r}", file=sys.stderr)
    return None
