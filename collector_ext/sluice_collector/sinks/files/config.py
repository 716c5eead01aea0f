"""Config of the file sink: where files go, their format, rotation, retention and the disk guard.

Parsed from the `files` section and from each `categories.<name>` section's file keys (`path`,
`rotation`, `retention_days`): the file sink owns what a category means on disk, routing only
names categories (it reads `match` from the same sections). Every key is documented in
docs/files.md.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sluice_collector.configreader import Section
from sluice_collector.sinks.files.auditchain import ChainKeyError, load_key

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RotationConfig:
    max_bytes: int = 100 * MiB
    interval: Literal["none", "hourly", "daily"] = "daily"
    utc: bool = True
    max_backups: int = 0  # rotated files kept per file set; 0 = no limit (retention decides)
    compress: bool = True
    # Every byte written is compressed once, so this is a cost per record: on our JSON lines
    # (~584 bytes a PII record) level 6, gzip's own default, costs 6.0 ms of CPU per 1,000
    # records (as much as the rest of ingest with masking off) for a 10.8x ratio; level 3
    # costs 2.5 ms for 9.1x (levels 1-3 are zlib's fast path, and 3 compresses best of them;
    # `python bench/compression.py`). The gzip thread shares the machine with ingest.
    compress_level: int = 3


@dataclass(frozen=True, slots=True)
class DiskGuardConfig:
    max_used_percent: float = 85.0
    check_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class AuditChainConfig:
    """`files.audit_chain`: hash-chain the `audit` category's lines (see auditchain.py)."""

    enabled: bool = True
    key_env: str | None = None
    key_file: Path | None = None
    # How often the receiver (worker 0) verifies every audit set, incrementally; 0 = never.
    verify_interval_s: float = 3600.0
    # Resolved at load time so a missing key fails the start, not the first audit record.
    key: bytes | None = field(default=None, repr=False)


# Retention of the built-in categories; every other category keeps DEFAULT_RETENTION_DAYS.
BUILTIN_RETENTION_DAYS: dict[str, int | None] = {
    "access": 90, "error": 30, "security": 365, "audit": None, "system": 30, "app": 30,
    "alerts": 365, "traces": 30, "metrics": 30,
}
DEFAULT_RETENTION_DAYS = 30


@dataclass(frozen=True, slots=True)
class FilePolicy:
    """What one category means on disk: its path template, rotation and retention."""

    name: str
    path: str = "{category}.log"  # template, relative to files.directory
    rotation: RotationConfig = field(default_factory=RotationConfig)
    retention_days: int | None = DEFAULT_RETENTION_DAYS  # None = keep forever


@dataclass(frozen=True, slots=True)
class FilesConfig:
    enabled: bool = True
    directory: Path = Path("logs")
    format: Literal["json", "text"] = "json"
    fsync: bool = False
    fallback_path: str = "{category}.log"
    rotation: RotationConfig = field(default_factory=RotationConfig)
    retention_check_interval_s: float = 3600.0
    disk: DiskGuardConfig = field(default_factory=DiskGuardConfig)
    # Bound on open descriptors; templated paths (one file per user) would otherwise grow it
    # without limit. Idle files beyond it are closed least-recently-used first.
    max_open_files: int = 256
    # Bound on the distinct files (file sets) one category's templated path may name, per
    # tenant: 20,000 user ids must not become 20,000 files. Past it, records go to the
    # fallback path (counted). An inode exhaustion is a disk-full by other means.
    max_files_per_template: int = 1000
    audit_chain: AuditChainConfig = field(default_factory=AuditChainConfig)
    # e.g. "http://localhost:16686/trace/{trace_id}" (Jaeger) or a Grafana Explore URL: every
    # JSON line with a trace id then carries a clickable `trace_url`. "" = no such field.
    trace_url: str = ""
    # Per-category policy; a category not listed gets `default_policy(name)`.
    categories: dict[str, FilePolicy] = field(default_factory=dict)

    def default_policy(self, name: str) -> FilePolicy:
        return FilePolicy(name=name, rotation=self.rotation,
                          retention_days=BUILTIN_RETENTION_DAYS.get(name, DEFAULT_RETENTION_DAYS))

    @classmethod
    def from_root(cls, root: Section) -> FilesConfig:
        """`files`, plus the file keys of every `categories.<name>` and the built-in ones."""
        files = cls.from_section(root.section("files"))
        policies: dict[str, FilePolicy] = {}
        for name, section in root.sections("categories").items():
            default = files.default_policy(name)
            policies[name] = FilePolicy(
                name=name,
                path=parse_path_template(section, "path", default.path),
                rotation=parse_rotation(section.section("rotation"), files.rotation),
                retention_days=parse_retention(section, default.retention_days),
            )
        for name in BUILTIN_RETENTION_DAYS:
            policies.setdefault(name, files.default_policy(name))
        return dataclasses.replace(files, categories=policies)

    @classmethod
    def from_section(cls, s: Section) -> FilesConfig:
        directory = s.get_str("directory", "logs", allow_empty=False)
        fmt = s.get_str("format", "json", choices=("json", "text"))
        disk = s.section("disk")
        return cls(
            enabled=s.get_bool("enabled", True),
            directory=Path(directory),
            format=fmt,  # type: ignore[arg-type]
            fsync=s.get_bool("fsync", False),
            fallback_path=parse_path_template(s, "fallback_path", "{category}.log"),
            rotation=parse_rotation(s.section("rotation"), RotationConfig()),
            retention_check_interval_s=s.get_duration("retention_check_interval_s", 3600.0, minimum=1),
            disk=DiskGuardConfig(
                max_used_percent=disk.get_float("max_used_percent", 85.0, minimum=1, maximum=100),
                check_interval_s=disk.get_duration("check_interval_s", 30.0, minimum=0.1),
            ),
            max_open_files=s.get_int("max_open_files", 256, minimum=1, maximum=65536),
            max_files_per_template=s.get_int("max_files_per_template", 1000, minimum=1,
                                             maximum=10_000_000),
            audit_chain=parse_audit_chain(s.section("audit_chain"), fmt),
            trace_url=_parse_trace_url(s),
        )


def _parse_trace_url(s: Section) -> str:
    value = s.get_str("trace_url", "")
    if value and ("{trace_id}" not in value or not value.startswith(("http://", "https://"))):
        s.error("trace_url", f"got {value!r}; expected an http(s) URL containing {{trace_id}}, "
                "e.g. http://localhost:16686/trace/{trace_id}")
        return ""
    return value


def parse_audit_chain(s: Section, fmt: str) -> AuditChainConfig:
    enabled = s.get_bool("enabled", True)
    key_env = s.get_optional_str("key_env")
    verify_interval_s = s.get_duration("verify_interval_s", 3600.0, minimum=0)
    key_file = s.get_optional_str("key_file")
    if fmt == "text" and enabled and s.has("enabled"):
        s.error("enabled", "the audit chain needs files.format: json (text lines carry no "
                           "hashes); set files.format: json or audit_chain.enabled: false")
    key: bytes | None = None
    if key_env is not None and key_file is not None:
        s.error("key_file", "give key_env or key_file, not both")
    elif enabled:
        try:
            key = load_key(env=key_env, file=key_file)
        except ChainKeyError as exc:
            s.error("key_env" if key_env is not None else "key_file",
                    f"got {key_env or key_file!r}; {exc}")
    return AuditChainConfig(
        enabled=enabled and fmt == "json", key_env=key_env,
        key_file=Path(key_file) if key_file else None, verify_interval_s=verify_interval_s, key=key,
    )


def parse_retention(s: Section, default: int | None) -> int | None:
    if not s.has("retention_days"):
        return default
    value = s.raw("retention_days")
    if value == "forever":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    s.error("retention_days", f"got {value!r}; expected a whole number of days ≥ 1, or \"forever\"")
    return default


def parse_rotation(s: Section, base: RotationConfig) -> RotationConfig:
    return RotationConfig(
        max_bytes=s.get_size("max_bytes", base.max_bytes, minimum=1024),
        interval=s.get_str(  # type: ignore[arg-type]
            "interval", base.interval, choices=("none", "hourly", "daily")
        ),
        utc=s.get_bool("utc", base.utc),
        max_backups=s.get_int("max_backups", base.max_backups, minimum=0),
        compress=s.get_bool("compress", base.compress),
        compress_level=s.get_int("compress_level", base.compress_level, minimum=1, maximum=9),
    )


def parse_path_template(s: Section, name: str, default: str) -> str:
    value = s.get_str(name, default, allow_empty=False)
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        s.error(name, f"got {value!r}; expected a path relative to files.directory")
        return default
    if any(part == ".." for part in re.split(r"[/\\]", value)):
        s.error(name, f"got {value!r}; '..' is not allowed: paths stay under files.directory")
        return default
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        s.error(name, f"got {value!r}; not a valid template ({exc}); use {{field}} placeholders")
        return default
    if any(not f for f in fields):
        s.error(name, f"got {value!r}; empty {{}} placeholder; name a field such as {{category}}")
        return default
    if not _FIXED_SUFFIX_RE.search(value) or value.endswith(".gz"):
        # A file name ending in a field could take a value such as "bob.2026-01-01.1", which
        # retention would mistake for a rotated file and remove.
        s.error(name, f"got {value!r}; the file name must end in a fixed suffix such as .log or "
                      ".jsonl (not in a {field}, a digit or .gz)")
        return default
    return value


# ".log", ".jsonl", ".audit": a literal dot-suffix ending in a letter, after any last "}".
_FIXED_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9_-]*[A-Za-z]$")


