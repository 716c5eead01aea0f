"""Masking engine throughput: the batch path (one RE2 pre-scan) against a naive per-string loop.

The named peer is what a first implementation looks like: for every string, a `re` substitution
with every detector's pattern in turn (same patterns, same checks, so both produce the same output — the
benchmark asserts it). The mix is realistic telemetry: access-log lines, SQL with placeholders,
trace ids, UUIDs, timestamps and short attribute values, with `--secret-rate` of strings carrying
a secret.

    .venv/bin/python bench/masking.py                    # 20,000 strings, 1% secrets, 5 rounds
    .venv/bin/python bench/masking.py --strings 50000 --secret-rate 0.05
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from sluice.masking import Masker


def _secrets(rng: random.Random) -> list[str]:
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def token(n: int) -> str:
        return "".join(rng.choice(alnum) for _ in range(n))

    return [
        f"login failed password={token(12)} user=alice",
        f'{{"event":"signup","api_key":"{token(32)}"}}',
        f"GET /callback?code=abc&access_token={token(40)} 200",
        f"connecting to postgres://app:{token(16)}@db.internal:5432/orders",
        "charging card 4111 1111 1111 1111 for order 8812",
        f"Authorization: Bearer {token(24)}.{token(30)}",
        f"pushed with {'gh' + 'p_'}{token(36)}",
        "new user bob.smith@example.com registered",
        "client 203.0.113.77 exceeded rate limit",
        f"aws key {'AK' + 'IA'}{token(16).upper()} rotated",
    ]


def _ordinary(rng: random.Random) -> list[Callable[[], str]]:
    routes = ["/api/v1/users/{id}", "/api/v1/orders", "/healthz", "/api/v1/orders/{order_id}/items"]

    def access() -> str:
        return (f"{rng.choice(['GET', 'POST', 'PUT'])} {rng.choice(routes)} "
                f"{rng.choice([200, 201, 204, 404, 500])} {rng.randint(1, 900)}ms "
                f"trace_id={rng.getrandbits(128):032x} span_id={rng.getrandbits(64):016x}")

    def sql() -> str:
        return ("SELECT id, status, total FROM orders WHERE customer_id = $1 AND created_at > $2 "
                f"LIMIT {rng.randint(10, 100)}")

    def ids() -> str:
        return f"processed job {uuid.UUID(int=rng.getrandbits(128))} in {rng.random() * 10:.3f}s"

    def stamp() -> str:
        return (f"2026-11-{rng.randint(10, 28)}T{rng.randint(10, 23)}:{rng.randint(10, 59)}:"
                f"{rng.randint(10, 59)}.{rng.randint(100, 999)}Z worker-{rng.randint(1, 9)} "
                f"flushed {rng.randint(1, 5000)} records, commit {rng.getrandbits(160):040x}")

    def short() -> str:
        return rng.choice(["GET", "POST", "ok", "orders-service", "eu-west-1", "1.4.2", "/healthz",
                           "application/json", "Mozilla/5.0 (X11; Linux x86_64)", "order 7723310055"])

    return [access, sql, ids, stamp, short, short, short]


def make_strings(count: int, secret_rate: float, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    secrets = _secrets(rng)
    makers = _ordinary(rng)
    return [rng.choice(secrets) if rng.random() < secret_rate else rng.choice(makers)()
            for _ in range(count)]


class NaiveMasker:
    """The peer: every detector's substitution over every string, no pre-scan.

    `Masker.mask_without_prescan` is exactly that loop (same patterns, checks and replacements
    as the fast path), so the outputs can be compared string for string.
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker

    def mask_many(self, texts: list[str]) -> list[str | None]:
        out: list[str | None] = []
        for text in texts:
            new = self._masker.mask_without_prescan(text)
            out.append(None if new == text else new)
        return out


def _best_of(rounds: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best = float("inf")
    result: Any = None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strings", type=int, default=20_000)
    parser.add_argument("--secret-rate", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    texts = make_strings(args.strings, args.secret_rate)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    masker = Masker()
    naive = NaiveMasker(masker)

    batch_s, batch = _best_of(args.rounds, lambda: masker.mask_many(texts))
    naive_s, naive_out = _best_of(max(1, args.rounds // 2), lambda: naive.mask_many(texts))
    if batch.values != naive_out:
        raise SystemExit("outputs differ between the batch path and the naive loop")

    changed = sum(v is not None for v in batch.values)
    print(f"{args.strings} strings, {megabytes:.2f} MB, {args.secret_rate:.1%} with a secret "
          f"({changed} changed), best of {args.rounds}")
    for name, seconds in (("sluice Masker.mask_many (RE2 pre-scan)", batch_s),
                          ("naive per-string re.sub loop", naive_s)):
        print(f"  {name:40s} {args.strings / seconds:12,.0f} strings/s {megabytes / seconds:8.1f} MB/s")
    print(f"  ratio: batch path is {naive_s / batch_s:.1f}x the naive loop")


if __name__ == "__main__":
    main()
