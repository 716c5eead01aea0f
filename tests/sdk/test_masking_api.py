"""The public surface of `sluice.masking`: pinned names, and purity (no gRPC, protobuf or receiver
code), so the SDK can scrub client-side without pulling in the receiver's dependencies."""

from __future__ import annotations

import subprocess
import sys

import sluice.masking


def test_exported_names_are_pinned_so_api_changes_are_deliberate() -> None:
    assert sluice.masking.__all__ == [
        "ACTIONS", "BUILTIN_DETECTORS", "DEFAULT_ALLOW_KEYS", "DEFAULT_OFF", "DEFAULT_REPLACEMENT",
        "DEFAULT_SENSITIVE_KEYS", "CustomDetector", "Detector", "DetectorSetting", "KeyRule",
        "MaskedBatch", "Masker", "MaskerConfig", "MaskingConfigError", "Problem",
        "check_custom_pattern", "normalize_key",
    ]
    assert sluice.masking.__all__ == sorted(sluice.masking.__all__, key=lambda n: (not n.isupper(), n))


def test_engine_imports_no_grpc_protobuf_or_receiver_code() -> None:
    code = (
        "import sys, sluice.masking; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'sluice_collector') "
        "or m.startswith(('google.protobuf', 'opentelemetry.proto'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
