"""The alerts sink: log alert rules over the masked stream, delivered to Alertmanager."""
