"""Real HTTP requests to the OTLP/HTTP port (http.client, no test doubles), and reading the
`google.rpc.Status` bodies it answers errors with."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def rpc_status(self) -> status_pb2.Status:
        """The google.rpc.Status error body, in whichever encoding it came."""
        if self.headers.get("content-type") == JSON:
            return json_format.Parse(self.body, status_pb2.Status())
        assert self.headers.get("content-type") == PROTOBUF, self.headers
        return status_pb2.Status.FromString(self.body)

    def retry_delay_s(self) -> float:
        for detail in self.rpc_status().details:
            info = RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        raise AssertionError("no RetryInfo in the Status")

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    endpoint: str, path: str = "/v1/logs", body: bytes = b"", *, method: str = "POST",
    content_type: str | None = PROTOBUF, headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None, timeout_s: float = 20.0,
) -> Reply:
    """One request on a fresh connection; the whole reply."""
    host, _, port = endpoint.rpartition(":")
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout_s, context=tls)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers.setdefault("Content-Type", content_type)
    try:
        conn.request(method, path, body, all_headers)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()
