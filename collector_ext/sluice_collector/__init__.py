"""sluice receiver: OTLP/gRPC in; masked, categorised files, syslog and OTLP forwarding out."""

__version__ = "0.1.0.dev0"
# The embedded default config, a resource of this package (`sluice receiver default-config`).
DEFAULT_CONFIG_RESOURCE = "default.yaml"
