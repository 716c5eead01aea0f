"""Zero-code start-up for `sluice run -- python app.py`: call `autoinit()` from a sitecustomize.

Configuration comes only from `SLUICE_*`/`OTEL_*` variables. Auto-instrumentation is on unless
`SLUICE_INSTRUMENT` says otherwise. It never raises: a bad variable is printed to stderr (naming
the variable) and the app runs uninstrumented rather than not at all. Under `sluice run`'s output
capture, a started SDK announces its console log lines on the run's private pipe so they are
shipped once, by the bridge (see `sluice._capture.channel`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from sluice import _runtime
from sluice.errors import ConfigError

__all__ = ["autoinit"]


def autoinit() -> _runtime.Sluice | None:
    """Initialise sluice from the environment; None (and a message on stderr) when it cannot."""
    if os.environ.get("SLUICE_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        _release_channel()
        return None
    options: dict[str, Any] = {} if "SLUICE_INSTRUMENT" in os.environ else {"instrument": True}
    try:
        handle = _runtime.init(**options)
    except ConfigError as exc:
        print(f"sluice: not started: {exc}", file=sys.stderr)
    except Exception as exc:
        print(f"sluice: not started: {exc!r}", file=sys.stderr)
    else:
        try:
            from sluice._capture import channel

            channel.install()
        except Exception:
            _release_channel()
        return handle
    _release_channel()
    return None


def _release_channel() -> None:
    """No SDK here: nothing to announce, and grandchildren must not inherit the run's pipe."""
    from sluice._capture.channel import ENV_FD

    raw = os.environ.pop(ENV_FD, None)
    if raw is not None:
        with contextlib.suppress(ValueError, OSError):
            os.close(int(raw))
