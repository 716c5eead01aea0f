"""Log alert rules end to end: apps log through the official OpenTelemetry SDK and OTLP exporter,
a real receiver evaluates the shipped rules, and a real Alertmanager (Debian's) notifies a
webhook in this process.

Windows are crossed with a `ManualClock` given to the receiver's alert rules, so the shipped
rules run with their real 5-minute windows and nothing waits for minutes or depends on timing
luck: a window ends when the test advances the clock. Every wait polls with a deadline.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from sluice_collector.service.config import load_config
from sluice_collector.service.receiver import Receiver
from sluice_collector.testing import ManualClock, start_receiver
from tests.prometheus_process import ALERTMANAGER, AlertmanagerProcess, get_json, wait_for

pytestmark = pytest.mark.skipif(not Path(ALERTMANAGER).exists(),
                                reason=f"{ALERTMANAGER} is not installed")


class Webhook:
    """Alertmanager's webhook receiver: keeps every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        lock = threading.Lock()
        self._lock = lock
        notifications = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Every alert of every notification, in order, with these labels (and status)."""
        with self._lock:
            out = [a for n in self.notifications for a in n["alerts"]]
        return [a for a in out if (status is None or a["status"] == status)
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[AlertmanagerProcess]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        # sluice always sends endsAt, so resolve_timeout never decides; tiny anyway, so that a
        # test passing because of it could not go unnoticed.
        "global": {"resolve_timeout": "1s"},
        "route": {
            "receiver": "hook",
            "group_by": ["..."],  # every alert is its own group: one notification each
            "group_wait": "50ms",
            "group_interval": "200ms",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "hook",
                       "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}],
    }))
    am = AlertmanagerProcess(tmp_path / "am", config).start()
    yield am
    am.stop()


def shipped_rule(name: str) -> dict[str, Any]:
    """A rule of the embedded default, as YAML data (the config users start from)."""
    text = (Path(__file__).resolve().parents[2] / "collector_ext" / "sluice_collector"
            / "default.yaml").read_text()
    rules: list[dict[str, Any]] = yaml.safe_load(text)["alerts"]["rules"]
    assert name in [r["alert"] for r in rules]
    assert any(r.name == name for r in load_config(None).alerts.rules)
    return next(r for r in rules if r["alert"] == name)


def settings(tmp_path: Path, am_url: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "files": {"directory": str(tmp_path / "logs")},
        "alerts": {
            "rules": list(rules),
            "evaluation_interval": "50ms",
            "generator_url": "http://sluice.example/alerts/{alertname}",
            "alertmanager": {"url": am_url, "resend_interval": "300ms",
                             "backoff_initial_s": "50ms", "backoff_max_s": "300ms",
                             "timeout_s": 3},
        },
    }


class App:
    """An app logging through the OpenTelemetry Logs API, exported by the official OTLP/gRPC
    exporter (one Export per record, answered before `failed_login` returns)."""

    def __init__(self, endpoint: str) -> None:
        self.provider = LoggerProvider(resource=Resource.create({"service.name": "shop"}))
        self.provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=10)))
        self.logger = self.provider.get_logger("shop.auth")

    def failed_login(self, user: str, source: str) -> None:
        self.logger.emit(
            severity_number=SeverityNumber.WARN, severity_text="WARN", body="login failed",
            event_name="auth.failure",
            attributes={"log.category": "security", "user.id": user, "client.address": source},
        )

    def close(self) -> None:
        self.provider.shutdown()


def metric(receiver: Receiver, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{receiver.status_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def instant(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alerts_log(receiver: Receiver) -> list[dict[str, Any]]:
    path = receiver.config.files.directory / "alerts.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_six_failed_logins_for_one_user_fire_once_and_resolve_after_the_window(
    tmp_path: Path, alertmanager: AlertmanagerProcess, webhook: Webhook, clock: ManualClock,
) -> None:
    """The acceptance: the shipped rule, a real Alertmanager, the official exporter."""
    receiver = start_receiver(settings(tmp_path, alertmanager.url, shipped_rule("FailedLoginsPerUser")),
                              alerts_clock=clock)
    app = App(receiver.endpoint)
    try:
        # Five failed logins spread over five users: no alert, neither here nor there.
        for i in range(5):
            app.failed_login(f"user{i}", "198.51.100.7")
        assert metric(receiver, "sluice_alerts_matched_records_total") == 5
        assert metric(receiver, "sluice_alerts_changes_total", status="firing") == 0

        # Six failed logins for alice within a minute (the clock moves 10 s between them).
        for i in range(6):
            app.failed_login("alice", f"203.0.113.{i}")
            clock.advance(10)
        firing = wait_for(lambda: webhook.alerts("firing", user_id="alice"),
                          "alice's alert at the webhook", alive=alertmanager.check_alive,
                          show=lambda: webhook.notifications)
        alert = firing[0]
        assert alert["labels"] == {"alertname": "FailedLoginsPerUser", "user_id": "alice",
                                   "severity": "warning"}
        # Rendered when it fired (5) or re-rendered by a resend after the sixth (6).
        assert re.fullmatch(r"[56] failed logins for user alice in 5m", alert["annotations"]["summary"])
        assert alert["generatorURL"] == "http://sluice.example/alerts/FailedLoginsPerUser"

        # While it fires it is re-sent; Alertmanager deduplicates: still one notification.
        resent = metric(receiver, "sluice_alerts_sent_total", kind="resend")
        wait_for(lambda: metric(receiver, "sluice_alerts_sent_total", kind="resend") >= resent + 3,
                 "three resends of the firing alert")
        assert len(webhook.alerts("firing", user_id="alice")) == 1
        assert [a for a in webhook.alerts() if a["labels"].get("user_id", "").startswith("user")] == []
        am_alerts = get_json(f"{alertmanager.url}/api/v2/alerts")
        assert [a["labels"]["user_id"] for a in am_alerts] == ["alice"]
        assert am_alerts[0]["status"]["state"] == "active"

        # The window passes with no more failures: resolved, once.
        clock.advance(5 * 60)
        resolved = wait_for(lambda: webhook.alerts("resolved", user_id="alice"),
                            "alice's resolution at the webhook", alive=alertmanager.check_alive,
                            show=lambda: webhook.notifications)
        assert resolved[0]["startsAt"] == alert["startsAt"]
        assert len(webhook.alerts("firing", user_id="alice")) == 1

        # Both changes are records of the `alerts` category in the files.
        records = alerts_log(receiver)
        assert [(r["attributes"]["alert.status"], r["attributes"]["alert.labels"]["user_id"])
                for r in records] == [("firing", "alice"), ("resolved", "alice")]
        assert records[0]["body"] == ("[FIRING] FailedLoginsPerUser: 5 failed logins for user "
                                      "alice in 5m")
    finally:
        app.close()
        receiver.stop()


def test_an_alertmanager_outage_while_firing_loses_nothing(
    tmp_path: Path, alertmanager: AlertmanagerProcess, webhook: Webhook, clock: ManualClock,
) -> None:
    """Fired while Alertmanager is down: spooled, delivered once it is back; resolved during a
    second outage: delivered after that one."""
    receiver = start_receiver(settings(tmp_path, alertmanager.url, shipped_rule("FailedLoginsPerUser")),
                              alerts_clock=clock)
    app = App(receiver.endpoint)
    try:
        alertmanager.stop()
        for _ in range(6):
            app.failed_login("bob", "203.0.113.9")
        wait_for(lambda: metric(receiver, "sluice_alerts_send_failures_total") >= 2,
                 "failed attempts to reach the stopped Alertmanager")
        assert metric(receiver, "sluice_alerts_spool_events") == 1
        assert receiver.health()[1]["sinks"]["alerts"]["state"] == "degraded"

        alertmanager.start()
        wait_for(lambda: webhook.alerts("firing", user_id="bob"), "bob's alert after the outage",
                 alive=alertmanager.check_alive, show=lambda: webhook.notifications)
        wait_for(lambda: metric(receiver, "sluice_alerts_spool_events") == 0, "an empty spool")

        alertmanager.stop()
        clock.advance(6 * 60)
        wait_for(lambda: metric(receiver, "sluice_alerts_changes_total", status="resolved") == 1,
                 "the resolution")
        alertmanager.start()
        wait_for(lambda: webhook.alerts("resolved", user_id="bob"),
                 "bob's resolution after the second outage", alive=alertmanager.check_alive,
                 show=lambda: webhook.notifications)
        assert len(webhook.alerts("firing", user_id="bob")) == 1
    finally:
        app.close()
        receiver.stop()


def test_a_restart_keeps_the_firing_alert_without_firing_it_again(
    tmp_path: Path, alertmanager: AlertmanagerProcess, webhook: Webhook, clock: ManualClock,
) -> None:
    config = settings(tmp_path, alertmanager.url, shipped_rule("FailedLoginsPerUser"),
                      shipped_rule("FailedLoginsPerSource"))
    # Firing alerts expire in Alertmanager 4 x resend_interval after the last post: the restart
    # must take less than that to be invisible there (4 minutes by default; 40 s here).
    config["alerts"]["alertmanager"]["resend_interval"] = "10s"
    receiver = start_receiver(config, alerts_clock=clock)
    app = App(receiver.endpoint)
    try:
        for i in range(5):
            app.failed_login("carol", f"10.{i}.0.1")  # five networks: masking keeps the /24
        for i in range(3):
            app.failed_login(f"other{i}", "192.0.2.1")  # 3 of the 5 needed from this source
        first = wait_for(lambda: webhook.alerts("firing", user_id="carol"), "carol's alert",
                         alive=alertmanager.check_alive)
    finally:
        app.close()
        receiver.stop()

    clock.advance(60)
    receiver = start_receiver(config, alerts_clock=clock)
    app = App(receiver.endpoint)
    try:
        assert receiver.health()[1]["sinks"]["alerts"]["firing"] == 1
        # The new process tells Alertmanager at once that it still fires: same alert, no new
        # notification.
        wait_for(lambda: metric(receiver, "sluice_alerts_sent_total", kind="resend") >= 1,
                 "the restarted receiver's first resend")
        [am_alert] = [a for a in get_json(f"{alertmanager.url}/api/v2/alerts")
                      if a["labels"].get("user_id") == "carol"]
        # The same start (to within the second the Date header can tell), not a new alert.
        assert abs(instant(am_alert["startsAt"]) - instant(first[0]["startsAt"])) < 1.5
        assert len(webhook.alerts("firing", user_id="carol")) == 1
        assert len(webhook.alerts("firing", alertname="FailedLoginsPerSource")) == 0

        # The window state survived too: two more failures from that source make five.
        app.failed_login("other3", "192.0.2.1")
        app.failed_login("other4", "192.0.2.1")
        wait_for(lambda: webhook.alerts("firing", client_address="192.0.2.x"),
                 "the per-source alert, counted across the restart", alive=alertmanager.check_alive)

        clock.advance(5 * 60)
        wait_for(lambda: webhook.alerts("resolved", user_id="carol"), "carol's resolution",
                 alive=alertmanager.check_alive)
        assert len(webhook.alerts("firing", user_id="carol")) == 1
    finally:
        app.close()
        receiver.stop()
