"""The syslog sink: RFC 5424/3164 over unix/udp/tcp/tls, spooled while the server is down."""
