"""The viewer in a real browser: Debian's headless Chromium driven by Playwright against a real
`sluice receiver run` with the query API on, fed traces and logs by the official OTel SDK.

Every wait is a poll with a deadline (Playwright's auto-waiting or `wait_for_function`), and
every time is relative to now: nothing depends on timing luck or today's date.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.viewer_harness import (
    ADMIN,
    ALICE,
    ESCAPES_BODY,
    HOSTILE_KEY,
    HOSTILE_SERVICE,
    HOSTILE_SPAN,
    Sender,
    Sent,
    api,
    browser,
    chromium_available,
    send_demo,
    sign_in,
    start_receiver,
    wait_indexed,
)
from tests.receiver_process import ReceiverProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium (make system-deps)"),
]


class Viewer:
    def __init__(self, proc: ReceiverProcess, sent: Sent) -> None:
        self.proc = proc
        self.sent = sent
        self.base = proc.status_url


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    proc = start_receiver(tmp_path_factory.mktemp("viewer"))
    try:
        sent = send_demo(proc.endpoint)
        base = proc.status_url
        wait_indexed(base, f"trace_id={sent.checkout_trace}", 5 + sent.logs_in_checkout)
        wait_indexed(base, f"trace_id={sent.orphan_trace}", 2)
        wait_indexed(base, f"trace_id={sent.hostile_trace}", 4)
        yield Viewer(proc, sent)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


class Watched:
    """A fresh tab (its own sessionStorage) that records dialogs and page errors."""

    def __init__(self, chromium: Any) -> None:
        self.context = chromium.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def tab(chromium: Any) -> Iterator[Watched]:
    watched = Watched(chromium)
    yield watched
    watched.context.close()


def wait_loaded(page: Any) -> None:
    page.wait_for_selector("div.records[data-loaded=true]")


def rows_text(page: Any, selector: str = "tr.record") -> list[str]:
    return list(page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)"))


def test_admin_finds_a_record_by_text_and_follows_it_to_its_trace_waterfall(viewer: Viewer, tab: Watched) -> None:
    page = tab.page
    sign_in(page, viewer.base, ADMIN)
    page.fill("input[name=text]", "order-4711-placed")
    page.press("input[name=text]", "Enter")
    page.wait_for_function("location.hash.includes('text=order-4711-placed')")
    wait_loaded(page)
    row = page.locator("tr.record", has_text="order-4711-placed by alice")
    row.wait_for()
    # The filter is in the address (shareable), the key never is.
    assert ADMIN not in page.url
    row.locator("td.trace a").click()
    page.wait_for_function(f"location.hash === '#/trace/{viewer.sent.checkout_trace}'")
    page.wait_for_selector(".span-row")
    shown = page.eval_on_selector_all(".span-row, .log-row", """els => els.map(e => ({
        kind: e.classList.contains('span-row') ? 'span' : 'log', id: e.dataset.spanId,
        parent: e.dataset.parentId, depth: Number(e.dataset.depth),
        duration: Number(e.dataset.durationMs), text: e.textContent,
        error: Boolean(e.querySelector('.error-mark')), orphan: Boolean(e.querySelector('.orphan'))}))""")
    spans = [s for s in shown if s["kind"] == "span"]
    sent = {s.span_id: s for s in viewer.sent.spans.values()
            if s.name in ("GET /checkout", "checkout.place_order", "payments.charge", "SELECT orders",
                          "render receipt")}
    assert {s["id"] for s in spans} == set(sent)  # every span of the trace, no other
    depth_of = {"GET /checkout": 0, "checkout.place_order": 1, "payments.charge": 2,
                "SELECT orders": 2, "render receipt": 1}
    position = {s["id"]: i for i, s in enumerate(shown) if s["kind"] == "span"}
    for s in spans:
        expected = sent[s["id"]]
        assert s["parent"] == expected.parent_id
        assert s["depth"] == depth_of[expected.name]
        assert s["duration"] == pytest.approx(expected.duration_ms)
        assert expected.name in s["text"]
        assert expected.service in s["text"]
        assert s["error"] == expected.error
        assert not s["orphan"]
        if expected.parent_id:  # nested: a child comes after its parent
            assert position[s["id"]] > position[expected.parent_id]
    assert "60.0 ms" in next(s["text"] for s in spans if sent[s["id"]].name == "payments.charge")
    # The trace's logs are interleaved under the spans they were written in.
    logs = [s for s in shown if s["kind"] == "log"]
    assert len(logs) == viewer.sent.logs_in_checkout
    charge_id = viewer.sent.spans["payments.charge"].span_id
    refused = next(entry for entry in logs if "charge refused" in entry["text"])
    assert refused["id"] == charge_id
    assert refused["depth"] == 3
    assert "[REDACTED:" in refused["text"]
    assert "hunter2" not in refused["text"]
    # A click shows the span's attributes and events.
    page.locator(".span-row", has_text="payments.charge").click()
    detail = page.locator("#detail")
    detail.locator("text=card declined").first.wait_for()
    assert "exception" in detail.text_content()
    assert "app.step" in detail.text_content()
    # Deep link: the address alone (and the tab's key) brings the waterfall back.
    page.reload()
    page.wait_for_selector(".span-row")
    assert page.locator(".span-row").count() == 5
    assert not tab.errors


def test_spans_whose_parent_never_arrived_render_at_the_root_marked(viewer: Viewer, tab: Watched) -> None:
    page = tab.page
    sign_in(page, viewer.base, ADMIN, f"#/trace/{viewer.sent.orphan_trace}")
    page.wait_for_selector(".span-row >> text=reconcile.batch")
    rows = page.eval_on_selector_all(".span-row", """els => els.map(e => ({
        text: e.textContent, depth: Number(e.dataset.depth), orphan: Boolean(e.querySelector('.orphan'))}))""")
    assert [(r["depth"], r["orphan"]) for r in rows] == [(0, True), (1, False)]
    assert "nightly-reconcile" in rows[0]["text"]
    assert "parent missing" in rows[0]["text"]


def test_live_tail_shows_a_record_sent_after_the_page_opened(viewer: Viewer, tab: Watched) -> None:
    page = tab.page
    sign_in(page, viewer.base, ADMIN)
    wait_loaded(page)
    page.check("#tail")
    page.wait_for_selector(".tail-state[data-state=live]")
    marker = f"tail-{uuid.uuid4().hex}"
    sender = Sender(viewer.proc.endpoint, "late-service")
    try:
        import time

        sender.log(f"{marker} arrived late", t=time.time_ns(), attributes={"user.id": "alice"})
    finally:
        sender.close()
    page.wait_for_selector(f"tr.record.fresh >> text={marker}")
    assert not tab.errors


def test_user_key_sees_only_its_users_records_and_not_the_audit_page(viewer: Viewer, tab: Watched) -> None:
    page = tab.page
    sign_in(page, viewer.base, ALICE)
    wait_loaded(page)
    page.wait_for_selector("p.status >> text=end of results")
    users = page.eval_on_selector_all("tr.record td.user", "els => els.map(e => e.textContent)")
    assert users
    assert set(users) == {"alice"}
    text = " ".join(rows_text(page))
    assert "bob-secret-record" not in text
    assert "page view 1 by bob" not in text
    assert page.locator("#nav a[data-view=audit]").is_hidden()
    page.goto(f"{viewer.base}/ui/#/audit")
    page.wait_for_selector("text=The audit trail needs an admin key")
    # And the server refuses it, whatever the page does: the key's scope is enforced there.
    results = page.evaluate("""async () => {
        const key = sessionStorage.getItem('sluice.apiKey');
        const get = async (path) => {
            const r = await fetch(path, {headers: {'X-Api-Key': key}});
            return [r.status, await r.json()];
        };
        return {
            audit: await get('/api/v1/logs?category=audit'),
            system: await get('/api/v1/logs?category=system'),
            chains: await get('/api/v1/audit/chains'),
            bob: await get('/api/v1/logs?user=bob&limit=1000'),
        };
    }""")
    assert results["audit"][0] == 403
    assert results["system"][0] == 403
    assert results["chains"][0] == 403
    assert results["bob"][0] == 200
    assert results["bob"][1]["records"] == []


def test_admin_audit_page_shows_the_reads_with_the_chain_status(viewer: Viewer, tab: Watched) -> None:
    """Reads are left out of ordinary results, but the audit trail is where an admin looks for
    who read what: there they are listed."""
    page = tab.page
    sign_in(page, viewer.base, ADMIN)
    wait_loaded(page)  # this very page load is a read, audited before it is answered
    page.goto(f"{viewer.base}/ui/#/audit")
    page.wait_for_selector("table.chains")
    page.locator("tr.record", has_text="read logs: LogQuery/").first.wait_for()
    assert not tab.errors


def test_hostile_text_runs_nothing_and_does_not_restyle_the_page(viewer: Viewer, tab: Watched) -> None:
    page = tab.page
    sign_in(page, viewer.base, ADMIN, "#/logs?range=1h")
    wait_loaded(page)
    header_before = page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor")
    for marker in ("hostile-body-marker", "escapes-marker", "hostile-style-marker", "window.__pwned='span'"):
        page.locator("tr.record", has_text=marker).first.click()
        page.wait_for_selector("#detail:not([hidden])")
    page.goto(f"{viewer.base}/ui/#/trace/{viewer.sent.hostile_trace}")
    page.wait_for_selector(".span-row")
    details = []
    for row in page.locator(".span-row, .log-row").all():
        row.click()
        page.wait_for_selector("#detail:not([hidden])")
        details.append(page.locator("#detail").text_content() or "")
    detail = "".join(details)
    page.goto(f"{viewer.base}/ui/#/stats?range=1h")  # the hostile service name in a chart
    page.wait_for_selector("svg.chart")
    page.goto(f"{viewer.base}/ui/#/logs?range=1h&user=mallory")
    page.wait_for_selector("tr.record >> text=hostile-body-marker")
    state = page.evaluate("""() => ({
        pwned: window.__pwned,
        injected: document.querySelectorAll('main img, aside img, main script, aside script, main style, aside style, main iframe, aside iframe').length,
        handlers: document.querySelectorAll('[onerror], [onload], [onclick]').length,
        jsLinks: document.querySelectorAll('a[href^="javascript:" i]').length,
        display: getComputedStyle(document.body).display,
        title: document.title,
        rawEscape: document.body.textContent.includes('\\x1b') || document.body.textContent.includes('\\u202e'),
        text: document.querySelector('main').textContent,
    })""")
    assert state["pwned"] is None
    assert tab.dialogs == []
    assert tab.errors == []
    assert state["injected"] == 0
    assert state["handlers"] == 0
    assert state["jsLinks"] == 0
    assert state["display"] != "none"
    assert state["title"] == "sluice viewer"
    assert page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor") == header_before
    # Shown as text, with escapes made visible instead of interpreted.
    assert "<img src=x onerror=window.__pwned='body'" in state["text"]
    assert "<style>body{display:none !important}</style>" in state["text"]
    assert "\\x1b[31mRED\\x1b[0m" in state["text"]
    assert "\\u202eevil" in state["text"]
    assert not state["rawEscape"]
    assert ESCAPES_BODY not in state["text"]
    assert HOSTILE_SPAN in detail
    assert HOSTILE_KEY in detail
    assert HOSTILE_SERVICE in page.locator("main").text_content()


def test_viewer_sends_a_strict_csp_that_forbids_html_sinks(viewer: Viewer, tab: Watched) -> None:
    response = tab.page.goto(f"{viewer.base}/ui/")
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "require-trusted-types-for 'script'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # Trusted Types are enforced: no string can reach innerHTML on this page at all.
    outcome = tab.page.evaluate("""() => {
        try { document.body.innerHTML = '<img src=x onerror="window.__pwned=1">'; return 'allowed'; }
        catch (e) { return e.name; }
    }""")
    assert outcome == "TypeError"


@pytest.fixture
def evil_origin(tmp_path: Path) -> Iterator[str]:
    """Another origin (another port) serving a page that tries to read the viewer's API."""
    (tmp_path / "evil.html").write_text("<!doctype html><title>evil</title><p>evil</p>")
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cross_site_requests_to_the_api_are_refused(viewer: Viewer, tab: Watched, evil_origin: str) -> None:
    page = tab.page
    page.goto(f"{evil_origin}/evil.html")
    outcome = page.evaluate("""async ([url, key]) => {
        const out = {};
        try {  // with the key header: needs a CORS preflight, which the viewer never grants
            const r = await fetch(url + '/api/v1/logs', {headers: {'X-Api-Key': key}});
            out.withKey = 'read ' + r.status;
        } catch (e) { out.withKey = 'blocked'; }
        try {  // a "simple" request: the browser sends it, the page cannot read the answer
            const r = await fetch(url + '/api/v1/session', {mode: 'no-cors', credentials: 'include'});
            out.simple = r.type;
        } catch (e) { out.simple = 'blocked'; }
        return out;
    }""", [viewer.base, ADMIN])
    assert outcome["withKey"] == "blocked"
    assert outcome["simple"] in ("opaque", "blocked")
    # What the server answers such requests, with or without the key.
    for headers in ({"Origin": evil_origin}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}):
        status, body, _ = api(viewer.base, "/api/v1/logs", ADMIN, headers)
        assert status == 403
        assert body["error"]["code"] == "PERMISSION_DENIED"
    status, _, _ = api(viewer.base, "/api/v1/logs?limit=1", ADMIN, {"Sec-Fetch-Site": "same-origin",
                                                                 "Origin": viewer.base})
    assert status == 200
