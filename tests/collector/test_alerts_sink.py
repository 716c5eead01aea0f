"""`AlertsSink`: alert records through the other sinks, retries, and what survives a restart
or a crash — with real files and a `ManualClock`, no Alertmanager (tests/e2e has that)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_collector.batch import Batch, Signal
from sluice_collector.processors.routing import CategoryRouter
from sluice_collector.service.config import ReceiverConfig, parse_config
from sluice_collector.service.receiver import build_sinks
from sluice_collector.sinks.alerts.sink import AlertsSink
from sluice_collector.sinks.files.sink import RotatingFileSink
from sluice_collector.telemetry import ReceiverTelemetry
from sluice_collector.testing import InMemorySink, ManualClock
from tests.otlp_builders import log_record, logs_request

RULE: dict[str, Any] = {
    "alert": "FailedLogins", "window": "5m", "threshold": 3, "group_by": ["user.id"],
    "match": [{"category": "security", "event_name": "auth.failure"}],
    "annotations": {"summary": "{count} failures for {user.id}"},
}


def config_of(tmp_path: Path, **alerts: Any) -> ReceiverConfig:
    return parse_config(yaml.safe_dump({
        "files": {"directory": str(tmp_path / "logs")},
        "alerts": {"rules": [RULE], "evaluation_interval": "1h", "state": {"save_interval": "1h"},
                   **alerts},
    }))


class Rig:
    """A files sink, an in-memory sink and the alert sink after them, as build_sinks does."""

    def __init__(self, tmp_path: Path, clock: ManualClock, *, write: Any = os.write, **alerts: Any) -> None:
        self.config = config_of(tmp_path, **alerts)
        self.telemetry = ReceiverTelemetry()
        self.files = RotatingFileSink(self.config.files, self.telemetry, write=write)
        self.memory = InMemorySink()
        self.router = CategoryRouter(self.config.routing)
        self.alerts = AlertsSink(self.config.alerts, self.telemetry, tmp_path / "logs" / ".alerts",
                                 record_sinks=(self.files, self.memory), clock=clock)
        self.files.start()
        self.alerts.start()

    def failures(self, user: str, n: int) -> None:
        records = [log_record("login failed", severity=13, attributes={
            "log.category": "security", "event.name": "auth.failure", "user.id": user})
            for _ in range(n)]
        batch = self.router(Batch(Signal.LOGS, logs_request(*records), 0))
        self.files.consume(batch)
        self.alerts.consume(batch)

    def stop(self) -> None:
        self.alerts.force_flush(5)
        self.alerts.shutdown()
        self.files.shutdown()

    def alert_lines(self) -> list[tuple[str, str]]:
        path = self.config.files.directory / "alerts.log"
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        return [(x["attributes"]["alert.status"], x["attributes"]["alert.labels"]["user_id"])
                for x in lines]

    def metric(self, name: str, **labels: str) -> float:
        value = self.telemetry.registry.get_sample_value(name, labels)
        return value or 0.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


@pytest.fixture
def rig(tmp_path: Path, clock: ManualClock) -> Iterator[Rig]:
    r = Rig(tmp_path, clock)
    yield r
    r.stop()


def test_firing_and_resolved_alerts_are_records_of_the_alerts_category(rig: Rig, clock: ManualClock) -> None:
    rig.failures("alice", 3)
    assert rig.alert_lines() == [("firing", "alice")]
    clock.advance(400)
    rig.alerts.tick()
    assert rig.alert_lines() == [("firing", "alice"), ("resolved", "alice")]
    assert [ref[2].event_name for ref in rig.memory.by_category["alerts"]] == [
        "alert.firing", "alert.resolved"]
    assert rig.metric("sluice_records_written_total", signal="logs", category="alerts",
                      sink="files") == 2
    assert rig.metric("sluice_alerts_changes_total", rule="FailedLogins", status="firing") == 1
    assert rig.metric("sluice_alerts_evaluated_records_total") == 3


def test_alert_records_are_never_evaluated_by_the_rules(tmp_path: Path, clock: ManualClock) -> None:
    rig = Rig(tmp_path, clock, rules=[{"alert": "Everything", "window": "1m", "threshold": 1,
                                       "group_by": ["$category"]}])
    try:
        rig.failures("alice", 1)
        assert rig.alerts.health()["firing"] == 1
        assert rig.metric("sluice_alerts_evaluated_records_total") == 1
        assert list(rig.memory.by_category) == ["alerts"]
    finally:
        rig.stop()


def test_a_sink_that_refuses_a_record_gets_it_again_and_only_it(tmp_path: Path, clock: ManualClock) -> None:
    full = {"on": True}

    def write(fd: int, data: Any) -> int:
        if full["on"] and b'"alerts"' in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    rig = Rig(tmp_path, clock, write=write)
    try:
        rig.failures("alice", 3)
        assert rig.alert_lines() == []
        assert rig.alerts.health()["state"] == "degraded"
        assert rig.metric("sluice_alerts_record_failures_total", sink="files") == 1
        full["on"] = False
        rig.alerts.tick()
        assert rig.alert_lines() == [("firing", "alice")]
        assert len(rig.memory.by_category["alerts"]) == 1  # not asked twice
        assert rig.alerts.health()["state"] == "ok"
    finally:
        rig.stop()


def test_a_restart_keeps_firing_alerts_and_windows_without_new_records(
    tmp_path: Path, clock: ManualClock,
) -> None:
    first = Rig(tmp_path, clock)
    first.failures("alice", 3)
    first.failures("bob", 2)
    first.stop()

    clock.advance(60)
    second = Rig(tmp_path, clock)
    try:
        assert second.alerts.health()["firing"] == 1
        assert second.metric("sluice_alerts_firing", rule="FailedLogins") == 1
        assert second.alert_lines() == [("firing", "alice")]  # no second firing record
        second.failures("bob", 1)  # bob's two from before the restart still count
        assert second.alert_lines() == [("firing", "alice"), ("firing", "bob")]
        clock.advance(300)
        second.alerts.tick()
        assert second.alert_lines()[2:] == [("resolved", "alice"), ("resolved", "bob")]
    finally:
        second.stop()


def test_a_crash_after_firing_loses_neither_the_alert_nor_its_pending_record(
    tmp_path: Path, clock: ManualClock,
) -> None:
    """No shutdown and no snapshot (save_interval is an hour): the journal alone carries the
    firing alert, its window, and the record the full disk had refused."""
    def refuse_alerts(fd: int, data: Any) -> int:
        if b'"alerts"' in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    crashed = Rig(tmp_path, clock, write=refuse_alerts)
    crashed.failures("alice", 3)
    assert crashed.alert_lines() == []
    assert not (tmp_path / "logs" / ".alerts" / "state.json").read_bytes().count(b"alice")

    restarted = Rig(tmp_path, clock)
    try:
        assert restarted.alerts.health()["firing"] == 1
        assert restarted.alert_lines() == [("firing", "alice")]
        clock.advance(400)
        restarted.alerts.tick()
        assert restarted.alert_lines() == [("firing", "alice"), ("resolved", "alice")]
    finally:
        restarted.stop()
        crashed.alerts.shutdown()
        crashed.files.shutdown()


def test_a_torn_journal_line_and_a_corrupt_snapshot_do_not_stop_the_sink(
    tmp_path: Path, clock: ManualClock,
) -> None:
    state = tmp_path / "logs" / ".alerts"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{not json")
    (state / "journal").write_bytes(b'{"n": 1, "event": {"status": "fir')
    rig = Rig(tmp_path, clock)
    try:
        assert rig.alerts.health()["firing"] == 0
        assert (state / "state.json.bad").exists()
        rig.failures("alice", 3)
        assert rig.alert_lines() == [("firing", "alice")]
    finally:
        rig.stop()


def test_changes_wait_in_the_spool_while_alertmanager_cannot_be_reached(
    tmp_path: Path, clock: ManualClock,
) -> None:
    unreachable = {"url": "http://127.0.0.1:9", "backoff_initial_s": "10ms",
                   "backoff_max_s": "50ms", "timeout_s": 1}
    rig = Rig(tmp_path, clock, alertmanager=unreachable)
    rig.failures("alice", 3)
    assert rig.metric("sluice_alerts_spooled_total") == 1
    assert rig.alerts.force_flush(5) is False  # gives up: the change is durable in the spool
    assert rig.alerts.health()["alertmanager"]["spool_events"] == 1
    rig.stop()

    again = Rig(tmp_path, clock, alertmanager=unreachable)
    try:
        assert again.alerts.health()["alertmanager"]["spool_events"] == 1
    finally:
        again.stop()


def test_build_sinks_puts_alerts_last_with_a_state_directory_per_worker(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    sinks = build_sinks(config, ReceiverTelemetry(), worker_index=2)
    assert [s.name for s in sinks] == ["files", "alerts"]
    alerts = sinks[-1]
    assert isinstance(alerts, AlertsSink)
    assert alerts.state_dir == tmp_path / "logs" / ".alerts" / "worker-2"
    assert [s.name for s in alerts.records.sinks] == ["files"]
