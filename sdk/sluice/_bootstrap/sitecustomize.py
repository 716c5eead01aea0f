"""Put this directory first on PYTHONPATH to start sluice before the app's own code runs.

`sluice run -- python app.py` does exactly that. An existing sitecustomize further down the path is
still honoured: it is looked up and executed after sluice has started.
"""

from __future__ import annotations

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


try:
    from sluice._autoinit import autoinit

    autoinit()
finally:
    _chain_next_sitecustomize()
