"""OTLP log loads for the receiver benchmarks: an easy one and a PII-dense one.

- `easy`: order and HTTP records with 8 attributes; about 1 % carry something to mask.
- `pii`: what real access and auth logs look like — about one record in three holds an IP
  address, a `password=`, a bearer token, an e-mail address or a card number (in the body or in
  an attribute); the rest are ordinary access, database, cache and heartbeat lines. Masking's
  per-hit work is what this load makes expensive.

Requests are distinct (seeded), pre-encoded bytes, so a client spends nothing on encoding.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

BASE_NS = 1_763_900_000_000_000_000
ROUTES = ["/orders/{id}", "/users/{id}", "/cart", "/checkout", "/health", "/login", "/api/v2/items"]


def _new_request(n: int, service: str) -> tuple[ExportLogsServiceRequest, Any]:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    for k, v in (("service.name", f"{service}-{n % 3}"), ("service.version", "1.4.2"),
                 ("deployment.environment", "prod"), ("host.name", "web-7")):
        rl.resource.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
    sl = rl.scope_logs.add()
    sl.scope.name = f"{service}.api"
    return req, sl


def _set_attributes(rec: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        kv = rec.attributes.add()
        kv.key = k
        if isinstance(v, str):
            kv.value.string_value = v
        elif isinstance(v, float):
            kv.value.double_value = v
        else:
            kv.value.int_value = v


def _stamp(rec: Any, rnd: random.Random, at: int, severity: int) -> None:
    rec.time_unix_nano = at
    rec.observed_time_unix_nano = at
    rec.severity_number = severity
    rec.severity_text = {9: "INFO", 13: "WARN", 17: "ERROR"}[severity]
    rec.trace_id = rnd.randbytes(16)
    rec.span_id = rnd.randbytes(8)


def easy_requests(count: int, records: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for n in range(count):
        req, sl = _new_request(n, "shop")
        for i in range(records):
            rec = sl.log_records.add()
            _stamp(rec, rnd, BASE_NS + n * records + i, rnd.choice((9, 9, 9, 9, 13, 17)))
            body = (f"order {rnd.randint(1, 10**6)} placed by user u-{rnd.randint(1, 5000)} "
                    f"in {rnd.random() * 100:.2f} ms")
            if rnd.random() < 0.01:
                body += " password=hunter2 card=4111 1111 1111 1111"
            rec.body.string_value = body
            attrs: dict[str, Any] = {
                "code.function.name": "place_order", "code.file.path": "/app/shop/orders.py",
                "code.line.number": 120 + i % 50, "user.id": f"u-{rnd.randint(1, 5000)}",
                "request.id": f"{rnd.getrandbits(64):016x}", "order.total": rnd.random() * 500,
            }
            if i % 4 == 0:
                attrs.update({"http.request.method": "GET", "http.route": rnd.choice(ROUTES)})
            else:
                attrs.update({"shop.region": "eu-west", "retry": i % 3})
            _set_attributes(rec, attrs)
        out.append(req.SerializeToString())
    return out


def _ip(rnd: random.Random) -> str:
    return f"{rnd.randint(11, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"


def _card(rnd: random.Random) -> str:
    """A Luhn-valid 16-digit card number, grouped as people paste them."""
    digits = [4] + [rnd.randint(0, 9) for _ in range(14)]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i:i + 4] for i in range(0, 16, 4))


def _pii_record(rnd: random.Random, i: int) -> tuple[str, dict[str, Any], int]:
    """(body, attributes, severity) of one record of the PII-dense mix."""
    user = f"u-{rnd.randint(1, 50_000)}"
    kind = rnd.random()
    if kind < 0.10:  # access line with the client's IP
        ip = _ip(rnd)
        route = rnd.choice(ROUTES)
        status = rnd.choice((200, 200, 200, 201, 304, 404, 500))
        return (f'{ip} - {user} "GET {route} HTTP/1.1" {status} {rnd.randint(80, 9000)}',
                {"http.request.method": "GET", "http.route": route, "client.address": ip,
                 "http.response.status_code": status, "user.id": user}, 17 if status >= 500 else 9)
    if kind < 0.18:  # a login with a password in the query string or a form dump
        return (f"POST /login?user={user}&password={rnd.getrandbits(48):x}Qz! from {_ip(rnd)}",
                {"event.name": "AUTH_LOGIN", "user.id": user, "auth.result": "failure"}, 13)
    if kind < 0.24:  # a card number in a payment trace
        return (f"charge failed for card {_card(rnd)} amount={rnd.randint(1, 900)}.00 EUR",
                {"event.name": "PAYMENT", "user.id": user, "payment.card": _card(rnd)}, 17)
    if kind < 0.29:  # an e-mail address and a bearer token
        token = f"eyJhbGciOiJIUzI1NiJ9.{rnd.getrandbits(120):x}.{rnd.getrandbits(128):x}"
        return (f"sent reset mail to {user}@example.org",
                {"user.email": f"{user}@example.org", "http.request.header.authorization": f"Bearer {token}",
                 "user.id": user}, 9)
    if kind < 0.33:  # a DSN with a password
        return (f"db pool reconnect postgres://app:{rnd.getrandbits(40):x}@db-{i % 4}.internal:5432/shop",
                {"db.system": "postgresql", "retry": i % 5}, 13)
    plain = rnd.random()
    if plain < 0.4:
        route = rnd.choice(ROUTES)
        return (f"GET {route} 200 in {rnd.random() * 80:.1f} ms",
                {"http.request.method": "GET", "http.route": route, "http.response.status_code": 200,
                 "user.id": user}, 9)
    if plain < 0.7:
        return (f"SELECT * FROM orders WHERE id = ? took {rnd.random() * 20:.2f} ms",
                {"db.system": "postgresql", "db.operation.name": "SELECT", "code.function.name": "load"}, 9)
    if plain < 0.9:
        return (f"cache {'hit' if rnd.random() < 0.8 else 'miss'} key=order:{rnd.randint(1, 10**6)}",
                {"cache.name": "orders", "code.function.name": "get"}, 9)
    return ("heartbeat ok", {"component": "scheduler"}, 9)


def pii_requests(count: int, records: int, seed: int = 11) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for n in range(count):
        req, sl = _new_request(n, "shop")
        for i in range(records):
            rec = sl.log_records.add()
            body, attrs, severity = _pii_record(rnd, i)
            _stamp(rec, rnd, BASE_NS + n * records + i, severity)
            rec.body.string_value = body
            _set_attributes(rec, attrs)
        out.append(req.SerializeToString())
    return out


LOADS: dict[str, Callable[[int, int], list[bytes]]] = {"easy": easy_requests, "pii": pii_requests}
