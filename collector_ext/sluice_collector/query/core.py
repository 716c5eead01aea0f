"""The transport-neutral read core: one place that decides who may read what, and audits it.

Both read front doors — the `sluice.v1.LogQuery` gRPC service (`service.py`) and the viewer's
JSON API (`web.py`) — turn their transport into calls of this core and map its typed errors
back to their status codes, as the OTLP front doors share `ingest.IngestCore`:

    authenticate(headers)                   → ApiKeyConfig   (x-api-key / authorization: ApiKey)
    query | stats | export | tail | audit_chains (key, filter, ..., peer, via)
        check the filter → refuse admin-only categories → audit the read → read the index

Access is decided here and only here, from the API key — never from anything inside a request:

    admin key           every record (of its tenant, when the key names one)
    user key            only records whose user id is the key's `user_id` (and tenant, when
                        set), never the admin-only categories `system` and `audit`
    no / unknown key    ReadUnauthenticated

Every read is itself audited before it reads anything: an `audit` log record (who, which
method, which filter, from where and through which front door) goes through the receiver's own
ingest core, so it is masked, hash-chained and stored like any other audit record. A read that
cannot be audited is refused (`NotAudited`).

Errors (each front door maps them; the message is safe to show the caller):

    ReadError
     ├── ReadUnauthenticated   no or unknown API key              → UNAUTHENTICATED / 401
     ├── ReadForbidden         an admin-only category or view     → PERMISSION_DENIED / 403
     ├── TooManyStreams        over `query.max_streams`           → RESOURCE_EXHAUSTED / 429
     └── NotAudited            the read could not be audited      → UNAVAILABLE / 503
    store.InvalidFilter        a bad filter, regex or page token  → INVALID_ARGUMENT / 400
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from sluice_collector.batch import Signal
from sluice_collector.errors import DecodeError, RequestTooLarge, Retryable, SluiceReceiverError
from sluice_collector.ingest import Caller, Encoding, IngestCore
from sluice_collector.query.config import ApiKeyConfig, QueryConfig
from sluice_collector.query.export import export_chunks
from sluice_collector.query.store import (
    READ_EVENT,
    AccessScope,
    IndexStore,
    InvalidFilter,
    RecordFilter,
    Stats,
    StoredRow,
    check_filter,
)

log = logging.getLogger("sluice.receiver")

ADMIN_ONLY_CATEGORIES = frozenset({"system", "audit"})
DEFAULT_LIMIT = 100
FOLLOW_POLL_S = 0.2
SYNC_TIMEOUT_S = 2.0
TAIL_MAX_ROWS = 5000


class ReadError(SluiceReceiverError):
    """A read refused by the core; the message is safe to show the caller."""


class ReadUnauthenticated(ReadError):
    def __init__(self) -> None:
        super().__init__("missing or unknown API key; send `x-api-key: <key>`")


class ReadForbidden(ReadError):
    """The key may not read this (an admin-only category or view)."""


class TooManyStreams(ReadError):
    """No place for the read: every Export/Tail stream slot (`query.max_streams`) or Query/Stats
    call slot (`query.max_queries`) is taken, or the key holds its fair share of them."""


class NotAudited(ReadError):
    """The read's audit record could not be stored, so the read is refused."""


# -- who is reading --------------------------------------------------------------------------

class ApiKeyAuthenticator:
    """Maps `x-api-key: <key>` (or `authorization: ApiKey <key>`) to the configured key.

    Compared as SHA-256 digests with `hmac.compare_digest` against every key without stopping
    at a match, so neither which key matched nor the length of a guess shows in timing.
    Header names are matched lower-case (gRPC metadata and ASGI headers both are).
    """

    def __init__(self, config: QueryConfig) -> None:
        self._keys = [(hashlib.sha256(k.key.encode()).digest(), k) for k in config.api_keys]

    def __call__(self, headers: Iterable[tuple[str | bytes, str | bytes]] | None) -> ApiKeyConfig | None:
        presented: str | None = None
        for raw_key, value in headers or ():
            key = raw_key.decode("latin-1").lower() if isinstance(raw_key, bytes) else raw_key.lower()
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if key == "x-api-key":
                presented = text.strip()
                break
            if key == "authorization":
                scheme, _, credential = text.strip().partition(" ")
                if scheme.lower() == "apikey":
                    presented = credential.strip()
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: ApiKeyConfig | None = None
        for known, config in self._keys:
            if hmac.compare_digest(digest, known):
                found = config
        return found


def scope_of(key: ApiKeyConfig) -> AccessScope:
    """What a key may see: the scope every read of it is ANDed with."""
    if key.role == "admin":
        return AccessScope(tenant=key.tenant)
    return AccessScope(user_id=key.user_id, tenant=key.tenant,
                       hidden_categories=ADMIN_ONLY_CATEGORIES)


def is_admin(key: ApiKeyConfig) -> bool:
    return key.role == "admin"


# -- the index follower ----------------------------------------------------------------------

class IndexFollower:
    """Knows the index's newest row id and wakes every tail when it moves.

    Commits of this process are pushed: the index store calls `_pushed` right after each one,
    so a tail hears of a record as soon as it is indexed, and an idle receiver asks the index
    nothing. Only where other processes write the same index (`--workers`: `poll_s` set) does a
    thread also ask it one cheap question (`MAX(id)`) every `poll_s`, and only while someone
    listens. Thread waiters block on a condition; asyncio waiters get their event set on their
    own loop.
    """

    def __init__(self, store: IndexStore, poll_s: float | None = None) -> None:
        self._store = store
        self._poll_s = poll_s
        self._cond = threading.Condition()
        self._newest = -1
        self._listeners = 0
        self._async: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        store.add_commit_listener(self._pushed)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def _pushed(self, newest: int) -> None:
        with self._cond:
            if newest <= self._newest:
                return
            self._newest = newest
        self._wake()

    def subscribe(self) -> None:
        with self._cond:
            self._listeners += 1
            if self._poll_s is not None and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="sluice-index-follower",
                                                daemon=True)
                self._thread.start()

    def unsubscribe(self) -> None:
        with self._cond:
            self._listeners -= 1

    def newest(self) -> int:
        """The newest row id seen (asks the index when the follower has not looked yet)."""
        with self._cond:
            if self._newest >= 0:
                return self._newest
        return self._store.last_id()

    def wait(self, after_id: int, timeout_s: float) -> None:
        """Block until a row newer than `after_id` is seen, the timeout passes or we close."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._newest <= after_id and not self._closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    async def wait_async(self, after_id: int, timeout_s: float) -> None:
        """`wait` for asyncio callers: never blocks their event loop."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._cond:
            if self._newest > after_id or self._closing.is_set():
                return
            self._async.add(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            with self._cond:
                self._async.discard(entry)

    def close(self) -> None:
        self._store.remove_commit_listener(self._pushed)
        self._closing.set()
        self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(event.set)

    def _run(self) -> None:
        while not self._closing.is_set():
            with self._cond:
                if self._listeners <= 0:
                    self._thread = None
                    return
            try:
                newest = self._store.last_id()
            except Exception as exc:  # a locked or vanished index must not kill the follower
                log.debug("query: index follower: %s", exc)
                newest = self._newest
            self._pushed(newest)
            self._closing.wait(self._poll_s or FOLLOW_POLL_S)


class TailCursor:
    """The rows one tail has not yet been sent, read from the index as the follower sees them."""

    def __init__(self, store: IndexStore, follower: IndexFollower, f: RecordFilter,
                 scope: AccessScope) -> None:
        self._store = store
        self._follower = follower
        self._filter = f
        self._scope = scope
        self.last_id = store.last_id()

    @property
    def closing(self) -> bool:
        return self._follower.closing

    def poll(self) -> list[StoredRow]:
        """New matching rows in write order (at most TAIL_MAX_ROWS; the rest next time)."""
        newest = self._follower.newest()
        if newest <= self.last_id:
            return []
        # Bounded by the id range, so rows the filter rejects are read once only; and by
        # TAIL_MAX_ROWS, so a burst is sent in parts rather than all at once.
        rows = self._store.after(self._filter, self._scope, self.last_id, limit=TAIL_MAX_ROWS,
                                 until_id=newest)
        self.last_id = rows[-1].id if len(rows) == TAIL_MAX_ROWS else newest
        return rows

    def wait(self, timeout_s: float) -> None:
        self._follower.wait(self.last_id, timeout_s)

    async def wait_async(self, timeout_s: float) -> None:
        await self._follower.wait_async(self.last_id, timeout_s)


class KeySlots:
    """`total` places shared fairly: one API key holds at most `per_key` of them at a time, so
    one user key cannot lock admins (or other users) out."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> str:
        """Take a place for `key`; "" when taken, else why not (for the client)."""
        with self._lock:
            mine = self._held.get(key, 0)
            if mine >= self.per_key:
                return f"this key already has {mine} running (its share is {self.per_key})"
            if sum(self._held.values()) >= self.total:
                return f"all {self.total} places are taken"
            self._held[key] = mine + 1
            return ""

    def release(self, key: str) -> None:
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)


# -- the core ----------------------------------------------------------------------------------

class QueryCore:
    """Authenticate → check → audit → read, once for every read front door."""

    def __init__(self, config: QueryConfig, store: IndexStore, ingest: IngestCore, *,
                 files_directory: Path | None = None, chain_key: bytes | None = None,
                 audit_templates: Sequence[str] = (), shared_index: bool = False,
                 sync: Callable[[float], bool] | None = None) -> None:
        """`shared_index`: other processes (`--workers`) write the index too, so tails also
        poll for their rows; a single receiver's own commits are pushed. `sync(timeout_s)`
        waits until the index holds every record acknowledged so far (it follows the files:
        sinks/index/fileindexer.py); each read calls it first, so a client finds what it was
        acknowledged (at most SYNC_TIMEOUT_S of waiting: then it reads what is indexed)."""
        self.config = config
        self.store = store
        self._ingest = ingest
        self._authenticate = ApiKeyAuthenticator(config)
        self._queries = KeySlots(config.max_queries, config.max_queries_per_key)
        self._streams = KeySlots(config.max_streams, config.max_streams_per_key)
        self.follower = IndexFollower(store, FOLLOW_POLL_S if shared_index else None)
        self.files_directory = files_directory
        self._chain_key = chain_key
        self._audit_templates = list(audit_templates)  # paths audit sets are written under
        self.chain_keyed = chain_key is not None
        self._sync = sync

    def open(self) -> None:
        """Create the index (schema) if no index sink did, so reads never meet a bare file."""
        self.store.open()

    def close(self) -> None:
        """End running tails (so servers do not wait out their grace) and close the store."""
        self.follower.close()
        self.store.close()

    # -- access ----------------------------------------------------------------------------
    def authenticate(self, headers: Iterable[tuple[str | bytes, str | bytes]] | None) -> ApiKeyConfig:
        key = self._authenticate(headers)
        if key is None:
            raise ReadUnauthenticated
        return key

    def authorize(self, key: ApiKeyConfig, method: str, f: RecordFilter, *, peer: str,
                  via: str) -> AccessScope:
        """The key's scope for one read, after checking the filter and auditing the read."""
        check_filter(f)
        scope = scope_of(key)
        denied = sorted(scope.hidden_categories & set(f.categories))
        if denied:
            raise ReadForbidden(f"categories {', '.join(denied)} need an admin key")
        self._audit(key, method, f, peer, via)
        if self._sync is not None:
            self._sync(SYNC_TIMEOUT_S)  # after the audit: its own record is found too
        return scope

    # -- reads -----------------------------------------------------------------------------
    def query(self, key: ApiKeyConfig, f: RecordFilter, *, limit: int = 0, newest_first: bool = True,
              page_token: str = "", peer: str, via: str) -> tuple[list[StoredRow], str]:
        with self._slot(self._queries, key, "Query/Stats calls", "max_queries"):
            scope = self.authorize(key, "Query", f, peer=peer, via=via)
            capped = min(limit or DEFAULT_LIMIT, self.config.max_limit)
            return self.store.query(f, scope, limit=capped, newest_first=newest_first,
                                    page_token=page_token)

    def stats(self, key: ApiKeyConfig, f: RecordFilter, *, bucket_s: int = 0, peer: str,
              via: str) -> Stats:
        with self._slot(self._queries, key, "Query/Stats calls", "max_queries"):
            scope = self.authorize(key, "Stats", f, peer=peer, via=via)
            return self.store.stats(f, scope, max(0, bucket_s))

    @contextlib.contextmanager
    def export(self, key: ApiKeyConfig, f: RecordFilter, *, fmt: str, compression: str,
               newest_first: bool = False, max_records: int = 0, peer: str, via: str
               ) -> Iterator[Iterator[bytes]]:
        """The export's chunks, while holding a stream slot (the `with` block)."""
        with self._slot(self._streams, key, "Export/Tail streams", "max_streams"):
            scope = self.authorize(key, "Export", f, peer=peer, via=via)
            rows = self.store.iterate(f, scope, newest_first=newest_first, max_records=max_records)
            yield export_chunks(rows, fmt, compression)

    @contextlib.contextmanager
    def tail(self, key: ApiKeyConfig, f: RecordFilter, *, peer: str, via: str) -> Iterator[TailCursor]:
        """A cursor over records indexed from now on, while holding a stream slot."""
        with self._slot(self._streams, key, "Export/Tail streams", "max_streams"):
            scope = self.authorize(key, "Tail", f, peer=peer, via=via)
            self.follower.subscribe()
            try:
                yield TailCursor(self.store, self.follower, f, scope)
            finally:
                self.follower.unsubscribe()

    def audit_chains(self, key: ApiKeyConfig, *, peer: str, via: str) -> list[Any]:
        """The hash-chain verdict of every audit file set (admins only; audited)."""
        if not is_admin(key):
            raise ReadForbidden("the audit trail needs an admin key")
        self._audit(key, "AuditChain", RecordFilter(categories=("audit",)), peer, via)
        if self.files_directory is None:
            return []
        from sluice_collector.sinks.files.auditchain import ChainHasher
        from sluice_collector.sinks.files.auditverify import verify_directory

        return list(verify_directory(self.files_directory, ChainHasher(self._chain_key),
                                     self._audit_templates))

    # -- plumbing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _slot(self, slots: KeySlots, key: ApiKeyConfig, what: str, limit: str) -> Iterator[None]:
        """A place for one read, taken before it is audited (a refused read leaves no record)."""
        refused = slots.acquire(key.name)
        if refused:
            raise TooManyStreams(f"too many {what}: {refused} (query.{limit}, "
                                 f"query.{limit}_per_key); retry later")
        try:
            yield
        finally:
            slots.release(key.name)

    def _audit(self, key: ApiKeyConfig, method: str, f: RecordFilter, peer: str, via: str) -> None:
        data = audit_request(key, method, f, peer, via).SerializeToString()
        try:
            # In-process, past authentication: the reader was authenticated by its API key.
            result = self._ingest.export(Signal.LOGS, data, Encoding.PROTOBUF, Caller())
        except (DecodeError, RequestTooLarge, Retryable) as exc:
            log.warning("query: cannot audit a %s read, refusing it: %s", method, exc)
            raise NotAudited("the read could not be audited; retry later") from exc
        # The audit record carries the caller's filter, which masking scans: a `drop` rule that
        # matches it (or validation) must not turn into an unaudited read.
        if result.dropped or result.rejected or not result.routed.get("audit"):
            log.warning("query: the audit record of a %s read was dropped or not routed to "
                        "audit; refusing the read", method)
            raise NotAudited("the read could not be audited (its filter matched a masking drop "
                             "rule?); change the filter or ask an admin")


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def audit_request(key: ApiKeyConfig, method: str, f: RecordFilter, peer: str, via: str = "grpc"
                  ) -> ExportLogsServiceRequest:
    """The audit record of one read: who (key name, role, user, tenant), what, from where and
    through which front door (`audit.channel`: grpc | http)."""
    now = time.time_ns()
    shown = {fld.name: getattr(f, fld.name) for fld in dataclasses.fields(f) if getattr(f, fld.name)}
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", "sluice-receiver"))
    sl = rl.scope_logs.add()
    sl.scope.name = "sluice.query"
    rec = sl.log_records.add()
    rec.time_unix_nano = now
    rec.observed_time_unix_nano = now
    rec.severity_number = 9  # type: ignore[assignment]
    rec.severity_text = "INFO"
    rec.body.string_value = f"{key.name} read logs: LogQuery/{method}"
    rec.event_name = READ_EVENT
    attributes = [
        _kv("log.category", "audit"), _kv("audit.action", f"LogQuery.{method}"),
        _kv("audit.actor", key.name), _kv("audit.actor.role", key.role),
        _kv("audit.entity.type", "logs"), _kv("audit.status", "success"),
        _kv("audit.filter", orjson.dumps(shown).decode()), _kv("client.peer", peer),
        _kv("audit.channel", via),
    ]
    if key.user_id:
        attributes.append(_kv("audit.actor.user_id", key.user_id))
    if key.tenant:
        attributes.append(_kv("audit.actor.tenant", key.tenant))
    rec.attributes.extend(attributes)
    return request


# Shown by both front doors: which error class maps to which status, in one table each.
ERROR_NAMES: dict[type[Exception], str] = {
    ReadUnauthenticated: "UNAUTHENTICATED",
    ReadForbidden: "PERMISSION_DENIED",
    TooManyStreams: "RESOURCE_EXHAUSTED",
    NotAudited: "UNAVAILABLE",
    InvalidFilter: "INVALID_ARGUMENT",
}


def error_name(exc: Exception) -> str:
    for cls, name in ERROR_NAMES.items():
        if isinstance(exc, cls):
            return name
    raise TypeError(f"not a read error: {exc!r}")

