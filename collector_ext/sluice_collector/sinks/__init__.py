"""Destinations for routed batches: files, syslog, OTLP forwarding, and an in-memory twin."""

from sluice_collector.sinks.base import Sink

__all__ = ["Sink"]
