"""Put this directory first on PYTHONPATH to start sluice before the app's own code runs.

`sluice run -- python app.py` does exactly that. An existing sitecustomize further down the path is
still honoured: it is looked up and executed after sluice has started.

This file runs inside whatever interpreter the command names, which may not have sluice installed
(`sluice run -- /usr/bin/python3 app.py` from a virtualenv's sluice) and may be older than sluice
supports, so it keeps to syntax every Python 3 accepts and imports what it uses itself. When sluice
cannot be imported it says so plainly — to `sluice run` over its private pipe when there is one
(which prints it once, on its own stderr), else on stderr — and the program runs uninstrumented;
its output is still captured by `sluice run` like any program's.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _chain_next_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _not_instrumented(exc: BaseException) -> None:
    reason = "{} (Python {}) cannot import sluice: {}".format(  # noqa: UP032 - any Python 3 runs this
        sys.executable, sys.version.split()[0], exc)
    raw = os.environ.pop("SLUICE_RUN_CHANNEL_FD", None)
    if raw is None:
        sys.stderr.write("sluice: not started: " + reason + "\n")
        return
    try:
        fd = int(raw)
        payload = reason.encode("utf-8", "replace")
        os.write(fd, b"N" + len(payload).to_bytes(4, "big") + payload)
        os.close(fd)
    except (ValueError, OSError):
        pass


try:
    try:
        from sluice._autoinit import autoinit
    except ImportError as exc:
        _not_instrumented(exc)
    else:
        autoinit()
finally:
    _chain_next_sitecustomize()
