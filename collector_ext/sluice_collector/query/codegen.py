"""Regenerates `_proto/` from `proto/sluice/v1/query.proto` (`make proto`; needs grpcio-tools).

protoc names imports after the proto path (`from sluice.v1 import query_pb2`), which would
resolve to the SDK package `sluice`; the one import is rewritten to a relative one so the
generated modules live inside `sluice_collector` unchanged otherwise. The staleness test runs
`generate` into a temporary directory and compares, so this is the only recipe.

    python -m sluice_collector.query.codegen [OUT_DIR]
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto"
PROTO_FILE = "sluice/v1/query.proto"
OUT_DIR = Path(__file__).resolve().parent / "_proto"
GENERATED = ("query_pb2.py", "query_pb2.pyi", "query_pb2_grpc.py")


def generate(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Write the generated modules into `out_dir`; returns their paths."""
    protoc = importlib.import_module("grpc_tools.protoc")
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main([
            "grpc_tools.protoc", f"-I{proto_root}", f"--python_out={tmp}", f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}", str(proto_root / PROTO_FILE),
        ])
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            text = (Path(tmp) / "sluice" / "v1" / name).read_text(encoding="utf-8")
            text = text.replace("from sluice.v1 import query_pb2", "from . import query_pb2")
            target = out_dir / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR):
        print(path)
