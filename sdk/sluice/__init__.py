"""sluice: one call to make a Python app emit correlated logs, spans and metrics over OTLP."""

__version__ = "0.1.0.dev0"
__all__: list[str] = []
