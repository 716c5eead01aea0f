"""Delivery to Alertmanager's v2 API: the body, the clock it is placed on, and what each answer
leads to — against a real HTTP server in this process that answers as told (a real
Alertmanager is in tests/e2e/test_alerts_e2e.py)."""

from __future__ import annotations

import datetime
import email.utils
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from sluice_collector.sinks._delivery.spool import DiskSpool
from sluice_collector.sinks.alerts.alertmanager import (
    AlertmanagerClock,
    AlertmanagerMetrics,
    AlertmanagerSender,
)
from sluice_collector.sinks.alerts.config import AlertmanagerConfig
from sluice_collector.sinks.alerts.evaluator import BOOT_ID, AlertEvent
from tests.prometheus_process import wait_for

AM_NOW = 1_900_000_000.0  # Alertmanager's clock in these tests (its Date header says so)


class FakeAlertmanager:
    """Answers POST /api/v2/alerts with the next status of `statuses` (then 200; 400 for a body
    holding an alert labelled bad=yes), records what it took, and sends a Date header of its
    own clock."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.posts: list[list[dict[str, Any]]] = []
        self.clock = AM_NOW
        this = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, extra: dict[str, str] | None = None) -> None:
                self.send_response_only(status)
                self.send_header("Date", email.utils.formatdate(this.clock, usegmt=True))
                self.send_header("Content-Length", "0")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def do_GET(self) -> None:
                self._answer(200)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = this.statuses.pop(0) if this.statuses else 200
                if any(a["labels"].get("bad") == "yes" for a in body):
                    status = 400  # as Alertmanager refuses a body with one invalid alert
                if status == 200:
                    this.posts.append(body)
                self._answer(status, {"Retry-After": "0"} if status == 503 else None)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def am() -> Iterator[FakeAlertmanager]:
    server = FakeAlertmanager()
    yield server
    server.close()


def event(status: str, user: str, *, starts_mono: float = 50.0, ends_mono: float | None = None,
          **labels: str) -> AlertEvent:
    return AlertEvent(
        status=status,  # type: ignore[arg-type]
        rule="R", group=("", user),
        labels=tuple(sorted({"alertname": "R", "user_id": user, **labels}.items())),
        annotations=(("summary", f"about {user}"),), starts_at=1_000.0,
        ends_at=2_000.0 if status == "resolved" else None, generator_url="http://x/R",
        starts_mono=starts_mono, ends_mono=ends_mono, boot=BOOT_ID,
    )


class Sender:
    def __init__(self, tmp_path: Path, url: str, firing: list[AlertEvent] | None = None) -> None:
        self.config = AlertmanagerConfig(url=url, resend_interval_s=60.0, backoff_initial_s=0.01,
                                         backoff_max_s=0.05, timeout_s=2.0)
        self.spool = DiskSpool(tmp_path / "spool", 1024 * 1024)
        self.registry = CollectorRegistry()
        self.sender = AlertmanagerSender(self.config, self.spool, AlertmanagerMetrics(self.registry),
                                         lambda: list(firing or []), clock=lambda: 5_000.0)

    def spool_events(self, *events: AlertEvent) -> None:
        self.spool.append([orjson.dumps(e.to_json()) for e in events], protected=True)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def __enter__(self) -> Sender:
        self.sender.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sender.close(3.0)


def test_the_clock_offset_is_the_highest_recent_reading_of_the_date_header() -> None:
    mono = [100.0]
    clock = AlertmanagerClock(lambda: mono[0])
    assert clock.stale
    clock.update(email.utils.formatdate(AM_NOW, usegmt=True))
    assert clock.at(100.0) == AM_NOW
    assert clock.at(90.0) == AM_NOW - 10
    mono[0] = 100.6  # a later reading, one second on: the truer offset is the higher one
    clock.update(email.utils.formatdate(AM_NOW + 1, usegmt=True))
    assert clock.at(100.6) == pytest.approx(AM_NOW + 1)
    mono[0] = 101.0
    clock.update(email.utils.formatdate(AM_NOW, usegmt=True))  # lower: ignored
    assert clock.at(100.6) == pytest.approx(AM_NOW + 1)
    mono[0] = 500.0
    assert clock.stale


def test_changes_are_folded_per_alert_and_placed_on_alertmanagers_clock(
    tmp_path: Path, am: FakeAlertmanager,
) -> None:
    rig = Sender(tmp_path, am.url)
    rig.sender.am_clock.update(email.utils.formatdate(AM_NOW, usegmt=True))
    mono_now = rig.sender.am_clock._taken
    body = rig.sender.payload([
        event("firing", "alice", starts_mono=mono_now - 30),
        event("firing", "bob", starts_mono=mono_now - 20),
        event("resolved", "alice", starts_mono=mono_now - 30, ends_mono=mono_now - 5),
    ])
    assert [(a["labels"]["user_id"], a["startsAt"]) for a in body] == [
        ("bob", "2030-03-17T17:46:20.000Z"), ("alice", "2030-03-17T17:46:10.000Z")]
    assert body[1]["endsAt"] == "2030-03-17T17:46:35.000Z"  # the resolution, placed exactly
    # A firing alert ends 4 x resend after the moment the payload is built: that moment is
    # this machine's monotonic "now", so only its lower bound is exact.
    ends = datetime.datetime.fromisoformat(body[0]["endsAt"].replace("Z", "+00:00"))
    expected = datetime.datetime(2030, 3, 17, 17, 50, 40, tzinfo=datetime.UTC)
    assert expected <= ends < expected + datetime.timedelta(seconds=30)
    assert body[1]["annotations"] == {"summary": "about alice"}
    assert body[1]["generatorURL"] == "http://x/R"


def test_a_change_from_another_boot_is_placed_by_its_age(tmp_path: Path, am: FakeAlertmanager) -> None:
    rig = Sender(tmp_path, am.url)
    rig.sender.am_clock.update(email.utils.formatdate(AM_NOW, usegmt=True))
    old = AlertEvent(status="firing", rule="R", group=("",), labels=(("alertname", "R"),),
                     annotations=(), starts_at=5_000.0 - 90, ends_at=None,
                     starts_mono=123.0, boot="another-boot")
    [alert] = rig.sender.payload([old])
    assert alert["startsAt"] == "2030-03-17T17:45:10.000Z"  # AM_NOW - 90 s (to the ms)


def test_retryable_answers_keep_the_change_until_it_is_delivered(tmp_path: Path, am: FakeAlertmanager) -> None:
    am.statuses = [503, 503, 500]
    with Sender(tmp_path, am.url) as rig:
        rig.spool_events(event("firing", "alice"))
        wait_for(lambda: am.posts, "a delivery after three refusals", timeout_s=20)
        wait_for(lambda: rig.spool.pending == 0, "the spool acknowledged")
        assert rig.metric("sluice_alerts_send_failures_total") == 3
        assert rig.metric("sluice_alerts_sent_total", kind="change") == 1
        assert [a["labels"]["user_id"] for a in am.posts[0]] == ["alice"]


def test_a_refused_alert_is_dropped_alone(tmp_path: Path, am: FakeAlertmanager) -> None:
    with Sender(tmp_path, am.url) as rig:
        rig.spool_events(event("firing", "a"), event("firing", "b", bad="yes"), event("firing", "c"))
        wait_for(lambda: rig.spool.pending == 0, "every change handled", timeout_s=20)
        delivered = [a["labels"]["user_id"] for post in am.posts for a in post]
        assert delivered == ["a", "c"]
        assert rig.metric("sluice_alerts_dropped_total", reason="refused") == 1


def test_firing_alerts_are_resent_when_nothing_waits_in_the_spool(
    tmp_path: Path, am: FakeAlertmanager,
) -> None:
    with Sender(tmp_path, am.url, firing=[event("firing", "alice")]) as rig:
        wait_for(lambda: am.posts, "a resend at start")
        assert rig.metric("sluice_alerts_sent_total", kind="resend") == 1
        [alert] = am.posts[0]
        assert alert["endsAt"] > alert["startsAt"]
