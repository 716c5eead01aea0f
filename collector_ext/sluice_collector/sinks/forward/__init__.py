"""The forward sink: the masked stream on through OTLP (gRPC or HTTP), spooled."""
