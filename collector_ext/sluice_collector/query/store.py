"""The SQLite index the LogQuery API reads: one row per stored log record or span.

Why SQLite next to the files: queries by trace id, user or time must not scan gigabytes of
gzipped JSON lines. Each row keeps the record's JSON line itself, so a query never touches the
files — at the price of storing indexed categories twice (`query.index_categories` limits it).
The files stay the record of truth: the index can be dropped and rebuilt from them at any time
(`sluice index rebuild`), which is why it runs with `synchronous=NORMAL` in WAL mode (a power
cut may lose the last transactions of the index, never of the files).

Rows are derived from the JSON line alone (`row_of_line`), both when the receiver indexes live
batches and when a rebuild reads the files, so the two cannot disagree. Audit lines are
indexed without their hash-chain fields: the chain is verified on the files
(`sluice audit verify`), and the index must look the same before and after a rebuild.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import gzip
import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import re2

from sluice_collector.otlpvalues import SEVERITY_NAMES
from sluice_collector.query import storedmarks, traceblooms
from sluice_collector.sinks.files.fsclock import fs_now
from sluice_collector.sinks.files.naming import ROTATED_RE
from sluice_collector.sinks.files.retention import TENANTS_DIR

INDEX_DIR = ".index"
DB_NAME = "records.db"
ERROR_SEVERITY = 17
USER_KEYS = ("user.id", "enduser.id")
# Where the SDK's `event()`/`audit()` and common conventions put a record's outcome and duration.
STATUS_KEYS = ("event.status", "audit.status", "status", "http.response.status_code",
               "http.status_code", "event.outcome")
# Access records (sluice's middleware, and those derived from HTTP server spans) and jobs too.
# A user id the masking stage replaced whole: the same token for every user it hid.
MASKED_USER_RE = re.compile(r"\[REDACTED:[a-z0-9_]+\]\Z")
DURATION_KEYS = ("event.duration_ms", "http.server.request.duration_ms", "job.duration_ms",
                 "duration_ms")
# The event of the audit record every LogQuery call writes before it reads (query/service.py).
# Those records stay in the audit trail (files, index) but are not results of other queries,
# so that a query never finds itself (a `text` filter is in the record's `audit.filter`) and
# reads do not swell stats; `include_reads`, or asking for this event type, shows them.
READ_EVENT = "audit.logs.read"
_NOT_A_READ_SQL = f"NOT (category = 'audit' AND event_name = '{READ_EVENT}')"
_CHAIN_FIELDS_RE = re.compile(rb'(?:,"audit\.(?:torn_prev|prev_hash|hash)":"[0-9a-f]*")+\}$')
_ERROR_SQL = "(severity >= 17 OR status = 'error' OR status GLOB '5[0-9][0-9]')"
_ATTRIBUTE_KEY_RE = re.compile(r'^[^"\\\x00-\x1f]{1,256}$')
_HEX32_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_NS = 2**63 - 1  # the index holds times as SQLite's signed 64-bit integers
WRITER_CACHE_KIB = 65536
WRITER_MMAP_BYTES = 1 << 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id          INTEGER PRIMARY KEY,
    time_ns     INTEGER NOT NULL,
    severity    INTEGER NOT NULL,
    category    TEXT NOT NULL,
    service     TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    span_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    status      TEXT NOT NULL,
    duration_ms REAL,
    line        TEXT NOT NULL,
    stored_ns   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records (time_ns, id);
CREATE INDEX IF NOT EXISTS records_user_set ON records (user_id, time_ns) WHERE user_id != '';
CREATE INDEX IF NOT EXISTS records_category ON records (category, time_ns);
CREATE INDEX IF NOT EXISTS records_tenant_set ON records (tenant, time_ns) WHERE tenant != '';
DROP INDEX IF EXISTS records_user;
DROP INDEX IF EXISTS records_tenant;
"""
# Where the index stands in each file it follows (sinks/index/fileindexer.py), committed in the
# same transaction as the rows read from it, so a crash can neither skip nor repeat a line.
_CURSOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS followed (
    rel    TEXT PRIMARY KEY,
    ino    INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    head   BLOB NOT NULL
);
"""
# SQL is assembled from the fixed fragments of this module only; every value a caller gives
# travels as a bound parameter (hence the S608 waivers below).
_COLUMNS = ("time_ns", "severity", "category", "service", "trace_id", "span_id", "user_id",
            "tenant", "event_name", "status", "duration_ms", "line")
_INSERT = (f"INSERT INTO records ({', '.join(_COLUMNS)}, stored_ns) "  # noqa: S608
           f"VALUES ({', '.join('?' * len(_COLUMNS))}, ?)")
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM records"  # noqa: S608


class InvalidFilter(ValueError):
    """A filter or page token the caller got wrong (gRPC INVALID_ARGUMENT)."""


class Row(NamedTuple):
    """One index row; `line` is the JSON line without its newline."""

    time_ns: int
    severity: int
    category: str
    service: str
    trace_id: str
    span_id: str
    user_id: str
    tenant: str
    event_name: str
    status: str
    duration_ms: float | None
    line: str


class Cursor(NamedTuple):
    """How far the index has read one file: `rel` (its path under files.directory when this was
    written), its inode, the byte offset just past the last indexed line, and the file's first
    bytes (`head`), by which it is found again once rotated, renamed and gzipped."""

    rel: str
    ino: int
    offset: int
    head: bytes


class StoredRow(NamedTuple):
    id: int
    row: Row


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What the caller asked for. Every set field must hold (see proto Filter)."""

    since_ns: int = 0
    until_ns: int = 0
    severity_at_least: int = 0
    categories: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    trace_id: str = ""
    user_id: str = ""
    event_type: str = ""
    attribute_equals: tuple[tuple[str, str], ...] = ()
    text: str = ""
    regex: str = ""
    tenant: str = ""
    include_reads: bool = False  # also the audit records of reads (READ_EVENT)

    def digest(self) -> str:
        """Ties a page token to the query it came from."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AccessScope:
    """What the reader may see, decided by the server from the API key alone."""

    user_id: str | None = None
    tenant: str | None = None
    hidden_categories: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def everything(cls) -> AccessScope:
        return cls()


# -- rows from JSON lines ------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _second_ns(prefix: str) -> int:
    stamp = _dt.datetime.strptime(prefix, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.UTC)
    return int(stamp.timestamp()) * 1_000_000_000


def parse_timestamp(text: str) -> int:
    """Unix ns of the files' RFC 3339 form (``2026-11-23T08:57:35.123456789Z``)."""
    prefix, _, frac = text.rstrip("Z").partition(".")
    return _second_ns(prefix) + int((frac or "0").ljust(9, "0")[:9])


_NO_ATTRIBUTES: dict[str, Any] = {}


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def strip_chain(line: bytes) -> bytes:
    """The audit line as encoded, before the hash chain appended its fields."""
    return _CHAIN_FIELDS_RE.sub(b"}", line)


def _user(source: dict[str, Any]) -> str:
    for key in USER_KEYS:
        value = source.get(key)
        if value:
            return value if type(value) is str else _text(value)
    return ""


def _str(value: Any) -> str:
    """`_text`, with its common case first: this runs several times for every indexed row."""
    return value if type(value) is str else _text(value)


def row_of_line(line: bytes, tenant: str = "") -> Row | None:
    """The index row of one JSON line; None for lines that are not a log record or span."""
    body = line.rstrip(b"\n")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    category = obj.get("category")
    if type(category) is not str:
        return None
    attrs = obj.get("attributes")
    if type(attrs) is not dict:
        attrs = _NO_ATTRIBUTES
    # The record's own user wins; else its resource's (a per-user instance, `sluice run
    # --resource-attribute user.id=...`, an SDK that sets it once for the process).
    user = _user(attrs) if attrs else ""
    if not user:
        resource = obj.get("resource")
        if type(resource) is dict:
            user = _user(resource)
    if user.startswith("[REDACTED:") and MASKED_USER_RE.match(user):
        # `[REDACTED:email]` is every e-mail user at once: not a user (pseudonymise user ids
        # to tell them apart, docs/masking.md).
        user = ""
    status = ""
    duration_ms: float | None = None
    if "severity_number" in obj:  # a log record
        severity = obj["severity_number"]
        if not isinstance(severity, int):
            severity = 0
        event = _str(obj.get("event_name") or attrs.get("event.name"))
        if attrs:
            for key in STATUS_KEYS:
                value = attrs.get(key)
                if value is not None and value != "":
                    status = _str(value)
                    break
            for key in DURATION_KEYS:
                duration = attrs.get(key)
                if isinstance(duration, int | float) and not isinstance(duration, bool):
                    duration_ms = float(duration)
                    break
    elif "start_time" in obj and "kind" in obj:  # a span
        severity = 0
        event = _str(attrs.get("event.name"))
        status_obj = obj.get("status")
        status = _str(status_obj.get("code")) if type(status_obj) is dict else ""
        duration_ms = float(obj.get("duration_ms") or 0.0)
    else:
        return None  # metrics are not indexed
    try:
        stamp = obj["timestamp"]
        time_ns = parse_timestamp(stamp if type(stamp) is str else str(stamp))
    except (KeyError, ValueError):
        return None
    if category == "audit":
        body = strip_chain(body)
    return Row(time_ns, severity, category, _str(obj.get("service.name")),
               _str(obj.get("trace_id")), _str(obj.get("span_id")), user, tenant, event, status,
               duration_ms, body.decode("utf-8", "replace"))


# -- SQL -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False  # a caller's bad pattern is their error, answered; not our log
    return re2.compile(pattern, options)


def _regexp(pattern: str, value: str | None) -> bool:
    # RE2: linear time whatever the caller's pattern, so a regex cannot stall the receiver.
    return value is not None and _compiled(pattern).search(value) is not None


def check_filter(f: RecordFilter) -> None:
    """Refuse what cannot be a meaningful filter before any SQL runs."""
    if f.regex:
        try:
            _compiled(f.regex)
        except Exception as exc:  # re2.error is not exported under one name
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):  # pyre2 gives RE2's own message as bytes
                reason = reason.decode("utf-8", "replace")
            raise InvalidFilter(
                f"filter.regex: {f.regex!r} is not a valid RE2 expression ({reason})") from exc
    if f.trace_id and not _HEX32_RE.match(f.trace_id):
        raise InvalidFilter(f"filter.trace_id: got {f.trace_id!r}; expected 32 lower-case hex characters")
    for key, _ in f.attribute_equals:
        if not _ATTRIBUTE_KEY_RE.match(key):
            raise InvalidFilter(f"filter.attribute_equals: key {key!r} is not an attribute name")
    if not 0 <= f.severity_at_least <= 24:
        raise InvalidFilter(f"filter.severity_at_least: got {f.severity_at_least}; expected 0-24")
    # Stored times are never negative (validation refuses what SQLite cannot hold): a negative
    # bound can only be a mistake, and made the time arithmetic of Stats overflow.
    for name, value in (("since_unix_nano", f.since_ns), ("until_unix_nano", f.until_ns)):
        if value < 0:
            raise InvalidFilter(f"filter.{name}: got {value}; expected a time in Unix "
                                "nanoseconds ≥ 0 (0 = unbounded)")
    if f.until_ns and f.since_ns and f.until_ns <= f.since_ns:
        raise InvalidFilter("filter: until must be after since")


def where_clause(f: RecordFilter, scope: AccessScope) -> tuple[str, list[Any]]:
    """SQL conditions (joined with AND) and their parameters. The scope's conditions are
    always added, whatever the filter says, so a filter can only narrow what a key sees."""
    check_filter(f)
    sql: list[str] = []
    params: list[Any] = []
    # A trace holds a handful of rows, a user, tenant, category or hour up to millions: with a
    # trace id, the unary `+` keeps SQLite from walking one of their indexes instead of reading
    # the trace's rows by their ids (`IndexStore._where`).
    plain = "+" if f.trace_id else ""
    # Rows without a user or tenant (most, often all) are not in those indexes: the term
    # `!= ''`, word for word the indexes' own, lets SQLite use them (a key's user and tenant,
    # and a filter's, are never empty).
    if scope.user_id is not None:
        sql.append(f"{plain}user_id = ? AND user_id != ''")
        params.append(scope.user_id)
    if scope.tenant is not None:
        sql.append(f"{plain}tenant = ? AND tenant != ''")
        params.append(scope.tenant)
    if scope.hidden_categories:
        hidden = sorted(scope.hidden_categories)
        sql.append(f"{plain}category NOT IN ({', '.join('?' * len(hidden))})")
        params.extend(hidden)
    if not f.include_reads and f.event_type != READ_EVENT and "audit" not in scope.hidden_categories:
        sql.append(_NOT_A_READ_SQL)
    if f.since_ns:
        sql.append(f"{plain}time_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns:
        sql.append(f"{plain}time_ns < ?")
        params.append(f.until_ns)
    if f.severity_at_least:
        sql.append("severity >= ?")
        params.append(f.severity_at_least)
    for column, values in (("category", f.categories), ("service", f.services)):
        if values:
            sql.append(f"{plain}{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    for column, value in (("trace_id", f.trace_id), ("user_id", f.user_id),
                          ("event_name", f.event_type), ("tenant", f.tenant)):
        if value:
            partial = f" AND {column} != ''" if column in ("user_id", "tenant") else ""
            sql.append(f"{plain}{column} = ?{partial}")
            params.append(value)
    for key, value in f.attribute_equals:
        sql.append("CAST(json_extract(line, ?) AS TEXT) = ?")
        params.extend((f'$.attributes."{key}"', value))
    if f.text:
        sql.append("instr(line, ?) > 0")
        params.append(f.text)
    if f.regex:
        sql.append("line REGEXP ?")
        params.append(f.regex)
    return (" AND ".join(sql) or "1"), params


def encode_token(time_ns: int, row_id: int, newest_first: bool, f: RecordFilter) -> str:
    raw = orjson.dumps([time_ns, row_id, newest_first, f.digest()])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, newest_first: bool, f: RecordFilter) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        time_ns, row_id, order, digest = orjson.loads(raw)
        if not isinstance(time_ns, int) or not isinstance(row_id, int):
            raise TypeError
        if not (0 <= time_ns <= MAX_NS and 0 <= row_id <= MAX_NS):
            raise ValueError  # forged: SQLite cannot even compare with it
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidFilter("page_token: not a token this server issued") from exc
    if order != newest_first or digest != f.digest():
        raise InvalidFilter("page_token: belongs to a query with another filter or order; "
                            "send the same filter and order as the first page")
    return time_ns, row_id


@dataclass(slots=True)
class Stats:
    total: int = 0
    errors: int = 0
    unique_users: int = 0
    avg_duration_ms: float = 0.0
    with_duration: int = 0
    by_category: list[tuple[str, int]] = field(default_factory=list)
    by_severity: list[tuple[str, int]] = field(default_factory=list)
    by_event_type: list[tuple[str, int]] = field(default_factory=list)
    by_status: list[tuple[str, int]] = field(default_factory=list)
    by_service: list[tuple[str, int]] = field(default_factory=list)
    bucket_ns: int = 0
    buckets: list[tuple[int, int, int]] = field(default_factory=list)  # (start, count, errors)
    # Volume over time split by category and by severity name: (start, key, count).
    category_buckets: list[tuple[int, str, int]] = field(default_factory=list)
    severity_buckets: list[tuple[int, str, int]] = field(default_factory=list)


# Who wants to hear of each commit to an index file of this process (query/core.py's
# IndexFollower, for pushed tails), by the file's resolved path: the index sink and the query
# core hold IndexStore objects of their own for one file.
_commit_listeners: dict[Path, list[Callable[[int], None]]] = {}
_listeners_lock = threading.Lock()


class IndexStore:
    """The index database of one files directory. Thread-safe: one writer connection behind a
    lock; every read opens its own connection, so readers never wait for the writer (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._resolved = Path(path).resolve()  # the key of its commit listeners
        self._lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        # Whether `open()` created the cursor table (the files were never followed before).
        self.cursors_created = False
        self._blooms = traceblooms.BloomWriter()
        self._marks = storedmarks.MarkWriter()
        self._bloom_reader = traceblooms.BloomReader()

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(newest row id)` after every commit of rows to this file, from the
        committing thread (so it must only note the id and wake someone)."""
        with _listeners_lock:
            _commit_listeners.setdefault(self._resolved, []).append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        with _listeners_lock:
            listeners = _commit_listeners.get(self._resolved, [])
            if listener in listeners:
                listeners.remove(listener)

    @classmethod
    def for_directory(cls, directory: Path) -> IndexStore:
        return cls(Path(directory) / INDEX_DIR / DB_NAME)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False,
                               isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.create_function("regexp", 2, _regexp, deterministic=True)
        return conn

    def open(self, *, background_checkpoints: bool = False) -> None:
        """Create the database and its schema if needed and open the writer connection.

        `background_checkpoints`: the owner calls `checkpoint()` from a thread of its own, so
        the writer only checkpoints (and fsyncs) as a safety net when the WAL reaches ~80 MB;
        otherwise SQLite's default (every ~4 MB, on the inserting thread) applies.
        """
        if self._writer is not None:
            return
        # The index holds what the files hold: the same owner-only modes (SQLite gives its -wal
        # and -shm files the mode of the database file).
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640))
        conn = self._connect()
        conn.executescript(_SCHEMA)
        self.cursors_created = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'followed'").fetchone() is None
        conn.executescript(_CURSOR_SCHEMA)
        conn.executescript(traceblooms.SCHEMA)
        conn.executescript(storedmarks.SCHEMA)
        # Written before trace ids had Bloom filters and stored times had marks: build them
        # once, then drop the B-trees they replace.
        for index, build in (("records_trace", traceblooms.build_missing),
                             ("records_stored", storedmarks.build_missing)):
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                            (index,)).fetchone() is None:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                build(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        if background_checkpoints:
            conn.execute("PRAGMA wal_autocheckpoint=20000")
            # The index's B-trees outgrow SQLite's default 2 MB cache within minutes; every
            # insert then reads pages back through the kernel. A bigger cache, and reads
            # through a memory map, keep the writer's cost per row from growing with the index.
            conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            conn.execute(f"PRAGMA mmap_size={WRITER_MMAP_BYTES}")
        self._writer = conn

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, the writer).
        Its fsync is the costliest part of indexing; done here it stays off the ingest path."""
        conn = self._connect()
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def insert(self, rows: Sequence[Row], stored_ns: int, cursors: Sequence[Cursor] = (),
               forget: Sequence[str] = ()) -> int:
        """All rows in one transaction: a batch is indexed whole or not at all. `stored_ns` is
        when the receiver stored them (its own clock): retention counts from it. `cursors` (set)
        and `forget` (removed, by rel) move the files' read positions in the same transaction.
        Returns the newest row id (0 when no row was inserted)."""
        if not rows and not cursors and not forget:
            return 0
        with self._lock:
            conn = self._writer
            if conn is None:
                raise RuntimeError("index store is not open")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, [(*row, stored_ns) for row in rows])
                newest = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                # One transaction's rows get consecutive ids (max + 1 each).
                first = newest - len(rows) + 1
                self._blooms.add(conn, first, [row.trace_id for row in rows])
                self._marks.add(conn, first, len(rows), stored_ns)
                conn.executemany("DELETE FROM followed WHERE rel = ?", [(rel,) for rel in forget])
                conn.executemany("INSERT OR REPLACE INTO followed (rel, ino, offset, head) "
                                 "VALUES (?, ?, ?, ?)", cursors)
            except BaseException:
                conn.execute("ROLLBACK")
                self._blooms.reset()
                self._marks.reset()
                raise
            conn.execute("COMMIT")
        if not rows:
            return 0
        self.notify_commit(int(newest))
        return int(newest)

    def notify_commit(self, newest: int) -> None:
        """Call this process's commit listeners of this file: after our own commit, or when
        the process that writes the index says it committed (sinks/index/client.py)."""
        with _listeners_lock:
            listeners = list(_commit_listeners.get(self._resolved, ()))
        for listener in listeners:
            listener(newest)

    def cursors(self) -> dict[str, Cursor]:
        """Every file the index follows, by rel."""
        conn = self._connect()
        try:
            return {r[0]: Cursor(r[0], int(r[1]), int(r[2]), bytes(r[3])) for r in conn.execute(
                "SELECT rel, ino, offset, head FROM followed")}
        finally:
            conn.close()

    def categories(self) -> list[str]:
        """The categories that have rows."""
        conn = self._connect()
        try:
            return [r[0] for r in conn.execute("SELECT DISTINCT category FROM records")]
        finally:
            conn.close()

    def delete_older(self, category: str, cutoff_ns: int) -> int:
        """Delete the rows of `category` stored before `cutoff_ns` (never by record time: a
        client's clock or a forged timestamp must not decide how long data is kept)."""
        with self._lock:
            conn = self._writer
            if conn is None:
                return 0
            removed = 0
            # By the marks of when rows were stored, range by range through the primary key
            # (query/storedmarks.py); each range is a transaction of its own, so the index
            # process is never held up for long.
            for first_id, last_id in storedmarks.expired_ranges(conn, cutoff_ns):
                removed += conn.execute(
                    "DELETE FROM records WHERE id BETWEEN ? AND ? AND category = ?",
                    (first_id, last_id, category)).rowcount
            traceblooms.trim(conn)
            storedmarks.trim(conn)
            return removed

    def _where(self, conn: sqlite3.Connection, f: RecordFilter, scope: AccessScope
               ) -> tuple[str, list[Any]]:
        """`where_clause`, plus the ids of the trace's rows when the filter names a trace
        (found through the Bloom filters: there is no index over trace ids)."""
        where, params = where_clause(f, scope)
        if f.trace_id:
            # Integers the database gave: inlined, so no trace is too long for SQLite's limit
            # on bound parameters.
            ids = ",".join(map(str, self._bloom_reader.row_ids(conn, f.trace_id)))
            where += f" AND id IN ({ids})" if ids else " AND 0"
        return where, params

    @staticmethod
    def _stored(r: Sequence[Any]) -> StoredRow:
        return StoredRow(r[0], Row(*r[1:]))

    def query(self, f: RecordFilter, scope: AccessScope, *, limit: int, newest_first: bool = True,
              page_token: str = "") -> tuple[list[StoredRow], str]:
        """One page of rows and the token of the next page ("" when this is the last)."""
        if page_token:
            t, i = decode_token(page_token, newest_first, f)
        conn = self._connect()
        try:
            where, params = self._where(conn, f, scope)
            if page_token:
                where += " AND (time_ns, id) < (?, ?)" if newest_first else " AND (time_ns, id) > (?, ?)"
                params += [t, i]
            order = "DESC" if newest_first else "ASC"
            sql = f"{_SELECT} WHERE {where} ORDER BY time_ns {order}, id {order} LIMIT ?"
            rows = [self._stored(r) for r in conn.execute(sql, [*params, limit + 1])]
        finally:
            conn.close()
        if len(rows) <= limit:
            return rows, ""
        rows = rows[:limit]
        last = rows[-1]
        return rows, encode_token(last.row.time_ns, last.id, newest_first, f)

    def iterate(self, f: RecordFilter, scope: AccessScope, *, newest_first: bool = False,
                page_size: int = 1000, max_records: int = 0) -> Iterator[StoredRow]:
        """Every matching row, fetched page by page (Export)."""
        token = ""
        sent = 0
        while True:
            size = page_size if not max_records else min(page_size, max_records - sent)
            if size <= 0:
                return
            rows, token = self.query(f, scope, limit=size, newest_first=newest_first,
                                     page_token=token)
            yield from rows
            sent += len(rows)
            if not token:
                return

    def last_id(self) -> int:
        conn = self._connect()
        try:
            value = conn.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0]
        finally:
            conn.close()
        return int(value)

    def after(self, f: RecordFilter, scope: AccessScope, last_id: int, *, limit: int = 500,
              until_id: int | None = None) -> list[StoredRow]:
        """Rows indexed after row `last_id` (up to `until_id`), in the order they were written."""
        bound = "" if until_id is None else f" AND id <= {int(until_id)}"
        conn = self._connect()
        try:
            where, params = self._where(conn, f, scope)
            return [self._stored(r) for r in conn.execute(
                f"{_SELECT} WHERE id > ?{bound} AND {where} ORDER BY id LIMIT ?",
                [last_id, *params, limit])]
        finally:
            conn.close()

    def stats(self, f: RecordFilter, scope: AccessScope, bucket_s: int = 0) -> Stats:
        out = Stats()
        conn = self._connect()
        try:
            where, params = self._where(conn, f, scope)
            total, errors, users, avg, with_duration, first, last = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM({_ERROR_SQL}), 0), COUNT(DISTINCT NULLIF(user_id, '')), "  # noqa: S608
                f"AVG(duration_ms), COUNT(duration_ms), MIN(time_ns), MAX(time_ns) "
                f"FROM records WHERE {where}", params).fetchone()
            out.total, out.errors, out.unique_users = total, errors, users
            out.avg_duration_ms, out.with_duration = float(avg or 0.0), with_duration
            for column, target in (("category", out.by_category), ("event_name", out.by_event_type),
                                   ("status", out.by_status), ("service", out.by_service)):
                target.extend(conn.execute(
                    f"SELECT {column}, COUNT(*) AS n FROM records WHERE {where} AND {column} != '' "  # noqa: S608
                    f"GROUP BY {column} ORDER BY n DESC, {column}", params).fetchall())
            for number, n in conn.execute(
                    f"SELECT severity, COUNT(*) AS n FROM records WHERE {where} "  # noqa: S608
                    f"GROUP BY severity ORDER BY severity", params):
                out.by_severity.append((severity_name(number), n))
            if total:
                start = f.since_ns or first
                end = f.until_ns or last + 1
                # At most ~1000 buckets whatever the caller asks (a 1 s bucket over a year would
                # be millions of rows), and within SQLite's 64-bit integers.
                floor_ns = max(1_000_000_000, -(-(end - start) // 1000))
                wanted_ns = min(bucket_s, 10**9) * 1_000_000_000 if bucket_s > 0 else max(
                    1_000_000_000, -(-(end - start) // 60 // 1_000_000_000) * 1_000_000_000)
                bucket_ns = min(max(wanted_ns, floor_ns), 2**62)
                out.bucket_ns = bucket_ns
                out.buckets = [(int(b), int(n), int(e)) for b, n, e in conn.execute(
                    f"SELECT (time_ns - ?) / ? * ? + ? AS b, COUNT(*), SUM({_ERROR_SQL}) "  # noqa: S608
                    f"FROM records WHERE {where} GROUP BY b ORDER BY b",
                    [start, bucket_ns, bucket_ns, start, *params])]
                out.category_buckets = [(int(b), str(k), int(n)) for b, k, n in conn.execute(
                    f"SELECT (time_ns - ?) / ? * ? + ? AS b, category, COUNT(*) "  # noqa: S608
                    f"FROM records WHERE {where} GROUP BY b, category ORDER BY b, category",
                    [start, bucket_ns, bucket_ns, start, *params])]
                # Severity numbers 9-12 are all INFO, etc.: summed per name.
                by_name: dict[tuple[int, str], int] = {}
                for b, number, n in conn.execute(
                        f"SELECT (time_ns - ?) / ? * ? + ? AS b, severity, COUNT(*) "  # noqa: S608
                        f"FROM records WHERE {where} GROUP BY b, severity ORDER BY b, severity",
                        [start, bucket_ns, bucket_ns, start, *params]):
                    name = severity_name(number)
                    by_name[int(b), name] = by_name.get((int(b), name), 0) + int(n)
                out.severity_buckets = [(b, k, n) for (b, k), n in by_name.items()]
        finally:
            conn.close()
        return out

    def rows(self) -> list[Row]:
        """Every row, in time order (tests and rebuild checks)."""
        conn = self._connect()
        try:
            return [Row(*r[1:]) for r in conn.execute(f"{_SELECT} ORDER BY time_ns, id")]
        finally:
            conn.close()


def severity_name(number: int) -> str:
    if 0 < number < len(SEVERITY_NAMES):
        return str(SEVERITY_NAMES[number])
    return "UNSPECIFIED"


# -- rebuild -------------------------------------------------------------------------------

def tenant_of(rel: str) -> str:
    """The tenant a file's place under files.directory implies (`tenants/<tenant>/...`), as
    the file sink puts it."""
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == TENANTS_DIR else ""


def stored_files(directory: Path) -> Iterator[tuple[Path, str]]:
    """Every file under `directory` that may hold JSON lines (active, rotated, .gz), with the
    tenant its location implies; hidden directories (.index, .spool) are skipped."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and ".tmp" not in name:
                path = Path(root) / name
                yield path, tenant_of(path.relative_to(directory).as_posix())


HEAD_BYTES = 256  # a file's first bytes: its identity once rotation renamed and gzipped it


def file_head(fd: int) -> bytes:
    return os.pread(fd, HEAD_BYTES, 0)


def line_end(fd: int, size: int) -> int:
    """The offset just past the last newline before `size` (0 if there is none)."""
    position = size
    while position > 0:
        start = max(0, position - 65536)
        found = os.pread(fd, position - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


def is_active_name(name: str) -> bool:
    """Whether a file name under files.directory is an active file (not rotated, gzipped, a
    torn-line quarantine, a temp file or hidden)."""
    return not (name.startswith(".") or ".tmp" in name or name.endswith((".gz", ".torn"))
                or ROTATED_RE.match(name))


def _active_lines(path: Path, directory: Path) -> tuple[list[bytes], Cursor | None]:
    """An active file's whole lines, and the cursor just past them (the index follows the
    file from there: sinks/index/fileindexer.py)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return [], None
    try:
        st = os.fstat(fd)
        end = line_end(fd, st.st_size)
        data = os.pread(fd, end, 0)
        cursor = Cursor(path.relative_to(directory).as_posix(), st.st_ino, end, file_head(fd))
    finally:
        os.close(fd)
    return data.split(b"\n")[:-1], cursor


def _lines(path: Path) -> Iterator[bytes]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            yield from fh
    except (OSError, EOFError):
        return  # unreadable or truncated archive: index what was readable


def rebuild(directory: Path, categories: Iterable[str] = (), batch_rows: int = 5000,
            progress: Callable[[int, int], None] | None = None) -> int:
    """Rebuild the index of `directory` from its files; returns the rows indexed.

    Built beside the live database and renamed over it, so readers see either the old or the
    new index. Run it with the receiver stopped: rows a running receiver writes meanwhile go
    to the old database and are lost with it. `progress(lines, bytes)` is told what was read.
    """
    wanted = frozenset(categories)
    final = Path(directory) / INDEX_DIR / DB_NAME
    temp = final.with_name(DB_NAME + ".rebuild")
    for stale in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm")):
        stale.unlink(missing_ok=True)
    store = IndexStore(temp)
    store.open()
    count = 0
    # File mtimes are on the file system's clock; stored_ns is on ours (see retention.fs_now).
    try:
        skew_ns = int((time.time() - fs_now(Path(directory))) * 1e9)
    except OSError:
        skew_ns = 0
    cursors: list[Cursor] = []
    try:
        pending: list[Row] = []
        for path, tenant in stored_files(Path(directory)):
            try:
                # The file's last write: when its newest record was stored, so rebuilt rows
                # expire with the file that holds them (see docs/query.md, Retention).
                stored_ns = path.stat().st_mtime_ns + skew_ns
            except FileNotFoundError:
                continue
            seen = seen_bytes = 0
            lines: Iterable[bytes] = _lines(path)
            if is_active_name(path.name):
                lines, cursor = _active_lines(path, Path(directory))
                if cursor is not None:
                    cursors.append(cursor)
            for line in lines:
                if progress is not None:
                    seen += 1
                    seen_bytes += len(line)
                    if seen >= 4096:
                        progress(seen, seen_bytes)
                        seen = seen_bytes = 0
                row = row_of_line(line, tenant)
                if row is None or (wanted and row.category not in wanted):
                    continue
                pending.append(row)
                if len(pending) >= batch_rows:
                    store.insert(pending, stored_ns)
                    count += len(pending)
                    pending = []
            store.insert(pending, stored_ns)
            count += len(pending)
            pending = []
            if progress is not None and seen:
                progress(seen, seen_bytes)
        store.insert([], 0, cursors)  # the receiver's index follows the active files from here
        with store._lock:
            assert store._writer is not None
            store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    for stale in (Path(f"{final}-wal"), Path(f"{final}-shm")):
        stale.unlink(missing_ok=True)
    os.replace(temp, final)
    return count
