"""sluice receiver: OTLP/gRPC in; masked, categorised files, syslog and OTLP forwarding out."""

__version__ = "0.1.0.dev0"
