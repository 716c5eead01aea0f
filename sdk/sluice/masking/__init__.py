"""Masking of secrets and personal data in telemetry strings (pure: no I/O, no protobuf).

The receiver's masking stage and the SDK's optional client-side scrub both use this engine::

    masker = Masker(MaskerConfig())
    masker.mask("login password=hunter2")            # 'login password=[REDACTED:kv_secret]'
    batch = masker.mask_many(strings, keys)           # one pre-scan over the whole batch
"""

from sluice.masking.config import (
    ACTIONS,
    DEFAULT_REPLACEMENT,
    CustomDetector,
    DetectorSetting,
    MaskerConfig,
    MaskingConfigError,
    Problem,
    check_custom_pattern,
)
from sluice.masking.detectors import BUILTIN_DETECTORS, DEFAULT_OFF, Detector
from sluice.masking.engine import MaskedBatch, Masker
from sluice.masking.keys import DEFAULT_ALLOW_KEYS, DEFAULT_SENSITIVE_KEYS, KeyRule, normalize_key

__all__ = [
    "ACTIONS",
    "BUILTIN_DETECTORS",
    "DEFAULT_ALLOW_KEYS",
    "DEFAULT_OFF",
    "DEFAULT_REPLACEMENT",
    "DEFAULT_SENSITIVE_KEYS",
    "CustomDetector",
    "Detector",
    "DetectorSetting",
    "KeyRule",
    "MaskedBatch",
    "Masker",
    "MaskerConfig",
    "MaskingConfigError",
    "Problem",
    "check_custom_pattern",
    "normalize_key",
]
