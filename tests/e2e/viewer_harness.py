"""What the viewer's browser tests and `make screenshots` share: a real receiver with the query
API on, traces and logs sent to it by the official OpenTelemetry SDK, and Debian's Chromium
driven by Playwright (never a downloaded browser).

    python -m tests.e2e.viewer_harness screenshots docs/     # what `make screenshots` runs
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tests.receiver_process import ReceiverProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN = "admin-key-0123456789abcdef"
ALICE = "alice-key-0123456789abcdef"
MS = 1_000_000

# Attacker-controlled text, in every place a record can carry it. Each payload would set
# window.__pwned (or open a dialog, or restyle the page) if the viewer ever parsed it as markup.
HOSTILE_SERVICE = '<img src=x onerror="window.__pwned=\'service\'">'
HOSTILE_SPAN = "<script>window.__pwned='span'</script>"
HOSTILE_BODY = "<img src=x onerror=window.__pwned='body';alert(1)> hostile-body-marker"
HOSTILE_KEY = "<svg onload=window.__pwned='key'>"
HOSTILE_LINK = "javascript:window.__pwned='link'"
HOSTILE_STYLE = "<style>body{display:none !important}</style><b>hostile-style-marker</b>"
ESCAPES_BODY = "\x1b[31mRED\x1b[0m \x1b]0;pwned-title\x07 \u202eevil\u202c escapes-marker"


@dataclass
class SentSpan:
    name: str
    service: str
    span_id: str
    parent_id: str
    duration_ms: float
    error: bool = False


@dataclass
class Sent:
    """What the test sent, as the SDK itself reported it (ids, parents, durations)."""

    checkout_trace: str = ""
    orphan_trace: str = ""
    hostile_trace: str = ""
    spans: dict[str, SentSpan] = field(default_factory=dict)  # by name (unique per trace here)
    logs_in_checkout: int = 0


def start_receiver(workdir: Path) -> ReceiverProcess:
    return ReceiverProcess(workdir, {"query": {"api_keys": {
        "ops": {"key": ADMIN, "role": "admin"},
        "alice": {"key": ALICE, "role": "user", "user_id": "alice"},
    }}}).start()


class Sender:
    """One service's OTel SDK providers (its own resource), exporting at once over OTLP/gRPC."""

    def __init__(self, endpoint: str, service: str) -> None:
        resource = Resource.create({"service.name": service, "deployment.environment": "test"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True)))
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"http://{endpoint}", insecure=True)))
        self.tracer = self.tracer_provider.get_tracer("viewer.test")
        self.logger = self.logger_provider.get_logger("viewer.test")

    def log(self, body: str, *, t: int, severity: SeverityNumber = SeverityNumber.INFO,
            attributes: dict[str, Any] | None = None) -> None:
        """A log record in the current context (inside a span when one is current)."""
        self.logger.emit(timestamp=t, observed_timestamp=t, severity_number=severity,
                         severity_text=severity.name, body=body, attributes=attributes or {})

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def send_demo(endpoint: str, *, hostile: bool = True) -> Sent:
    """A checkout trace over three services with logs inside its spans, a trace whose parent
    span never arrives (sent in two parts), users' logs, and (optionally) hostile text."""
    sent = Sent()
    t = time.time_ns() - 5_000 * MS
    ends: dict[int, int] = {}
    front, checkout, payments = (Sender(endpoint, s) for s in ("shop-frontend", "checkout", "payments"))
    try:
        def span(sender: Sender, name: str, start_ms: int, dur_ms: int, parent: Any = None,
                 kind: SpanKind = SpanKind.INTERNAL, error: str = "") -> Any:
            ctx = trace.set_span_in_context(parent) if parent is not None else None
            s = sender.tracer.start_span(name, context=ctx, kind=kind, start_time=t + start_ms * MS,
                                         attributes={"app.step": name})
            if error:
                s.set_status(Status(StatusCode.ERROR, error))
                s.add_event("exception", {"exception.type": "CardDeclined", "exception.message": error},
                            timestamp=t + (start_ms + dur_ms - 5) * MS)
            ends[id(s)] = t + (start_ms + dur_ms) * MS
            ids = s.get_span_context()
            parent_id = _hex(parent.get_span_context().span_id, 16) if parent is not None else ""
            sent.spans[name] = SentSpan(name, sender.tracer_provider.resource.attributes["service.name"],  # type: ignore[arg-type]
                                        _hex(ids.span_id, 16), parent_id, float(dur_ms), bool(error))
            return s

        root = span(front, "GET /checkout", 0, 180, kind=SpanKind.SERVER)
        sent.checkout_trace = _hex(root.get_span_context().trace_id, 32)
        order = span(checkout, "checkout.place_order", 10, 120, root)
        charge = span(payments, "payments.charge", 30, 60, order, kind=SpanKind.CLIENT,
                      error="card declined")
        query = span(checkout, "SELECT orders", 100, 20, order, kind=SpanKind.CLIENT)
        render = span(front, "render receipt", 140, 30, root)
        with trace.use_span(root, end_on_exit=False):
            front.log("checkout started for order 4711", t=t + 2 * MS, attributes={"user.id": "alice"})
        with trace.use_span(order, end_on_exit=False):
            checkout.log("order-4711-placed by alice", t=t + 95 * MS,
                         attributes={"user.id": "alice", "event.name": "ORDER_PLACED"})
        with trace.use_span(charge, end_on_exit=False):
            payments.log("charge refused: login password=hunter2 for card", t=t + 85 * MS,
                         severity=SeverityNumber.ERROR,
                         attributes={"user.id": "alice", "event.name": "PAYMENT_FAILED"})
        sent.logs_in_checkout = 3
        # Children end before parents, as instrumented code does.
        for s in (query, charge, order, render, root):
            s.end(end_time=ends[id(s)])

        # A trace whose root never arrives: two spans name a parent nobody sends, exported in
        # separate requests a moment apart.
        missing = NonRecordingSpan(SpanContext(
            trace_id=0x5EED0000000000000000000000000001, span_id=0x00000000DEADBEEF,
            is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
        job = span(checkout, "nightly-reconcile", 200, 400, missing)
        sent.orphan_trace = _hex(job.get_span_context().trace_id, 32)
        job.end(end_time=ends[id(job)])
        time.sleep(0.3)
        step = span(checkout, "reconcile.batch", 250, 100, job)
        step.end(end_time=ends[id(step)])

        # Users' own records, outside any trace.
        for i in range(6):
            user = ("alice", "bob")[i % 2]
            front.log(f"page view {i} by {user}", t=t + (300 + i) * MS,
                      attributes={"user.id": user, "event.name": "PAGE_VIEW", "http.route": "/shop"})
        front.log("bob-secret-record only bob may see", t=t + 320 * MS,
                  severity=SeverityNumber.WARN, attributes={"user.id": "bob"})
    finally:
        for sender in (front, checkout, payments):
            sender.close()
    if hostile:
        send_hostile(endpoint, sent, t)
    return sent


def send_hostile(endpoint: str, sent: Sent, t: int) -> None:
    evil = Sender(endpoint, HOSTILE_SERVICE)
    try:
        s = evil.tracer.start_span(HOSTILE_SPAN, start_time=t + 400 * MS,
                                   attributes={HOSTILE_KEY: HOSTILE_LINK, "note": HOSTILE_STYLE})
        sent.hostile_trace = _hex(s.get_span_context().trace_id, 32)
        with trace.use_span(s, end_on_exit=False):
            evil.log(HOSTILE_BODY, t=t + 401 * MS,
                     attributes={HOSTILE_KEY: HOSTILE_LINK, "user.id": "mallory", "href": HOSTILE_LINK})
            evil.log(ESCAPES_BODY, t=t + 402 * MS, attributes={"user.id": "mallory"})
            evil.log(HOSTILE_STYLE, t=t + 403 * MS, attributes={"user.id": "mallory"})
        s.end(end_time=t + 410 * MS)
    finally:
        evil.close()


# -- the viewer's JSON API, as a plain HTTP client ------------------------------------------

def api(base: str, path: str, key: str | None, headers: dict[str, str] | None = None
        ) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(base + path, headers={**({"X-Api-Key": key} if key else {}),
                                                           **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def wait_indexed(base: str, query: str, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Poll the API (admin key) until `query` matches at least `count` records."""
    deadline = time.monotonic() + timeout_s
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, body, _ = api(base, f"/api/v1/logs?limit=1000&{query}", ADMIN)
        if status == 200:
            records = body["records"]
            if len(records) >= count:
                return records
        time.sleep(0.2)
    raise AssertionError(f"only {len(records)} of {count} records for {query!r} were indexed in time")


# -- the browser ---------------------------------------------------------------------------

def chromium_available() -> bool:
    return Path(CHROMIUM).exists()


@contextmanager
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (`executable_path`: nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    # Under `make test-dates` the browser is an outside client on the real calendar: Chromium's
    # many processes with libfaketime preloaded never finish loading a page.
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith(("FAKETIME", "DONT_FAKE"))}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env)
        try:
            yield b
        finally:
            b.close()


def sign_in(page: Any, base: str, key: str, route: str = "#/logs") -> None:
    page.goto(f"{base}/ui/{route}")
    page.fill("#key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")


# -- screenshots (make screenshots) ----------------------------------------------------------

def screenshots(out: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="sluice-shots-"))
    proc = start_receiver(workdir)
    try:
        sent = send_demo(proc.endpoint, hostile=False)
        base = proc.status_url
        wait_indexed(base, f"trace_id={sent.checkout_trace}", 8)
        with browser() as b:
            page = b.new_page(viewport={"width": 1400, "height": 820})
            sign_in(page, base, ADMIN)
            page.wait_for_selector("tr.record")
            page.click("tr.record >> text=charge refused")
            page.wait_for_selector("#detail:not([hidden])")
            page.screenshot(path=str(out / "viewer-logs.png"))
            page.goto(f"{base}/ui/#/trace/{sent.checkout_trace}")
            page.wait_for_selector(".span-row")
            page.click(".span-row >> text=payments.charge")
            page.screenshot(path=str(out / "viewer-trace.png"))
            page.goto(f"{base}/ui/#/stats?range=15m")
            page.wait_for_selector("svg.chart")
            page.screenshot(path=str(out / "viewer-stats.png"), full_page=True)
            page.goto(f"{base}/ui/#/audit")
            page.wait_for_selector("table.chains")
            page.wait_for_selector("tr.record")
            page.screenshot(path=str(out / "viewer-audit.png"))
    finally:
        proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "screenshots":
        raise SystemExit("usage: python -m tests.e2e.viewer_harness screenshots DIR")
    os.makedirs(sys.argv[2], exist_ok=True)
    screenshots(Path(sys.argv[2]))
