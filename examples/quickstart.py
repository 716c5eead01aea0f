"""Quickstart: one `sluice.init()` call, then ordinary logging, a span, a metric, categories and
an audit record — all sent to the sluice receiver over OTLP.

    python examples/quickstart.py     # receiver at $OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317

What the receiver does with it: the GET lands in `access.log` (HTTP attributes), the failed
payment in `error.log`, the login warning in `security.log` with its password masked, the price
change in `audit.log`, the rest in `app.log`; the span in `traces.log`, the counter in
`metrics.log`. Every log line carries the trace id of the `checkout` span it was written in.
"""

from __future__ import annotations

import logging

from opentelemetry import metrics, trace

import sluice


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s [%(trace_id)s]: %(message)s")
    sluice.init(service_name="quickstart", environment="demo")
    log = logging.getLogger("quickstart")  # plain stdlib logging keeps working, now with trace ids
    security = sluice.get_logger("security")
    tracer = trace.get_tracer("quickstart")
    orders = metrics.get_meter("quickstart").create_counter("orders", unit="1")

    with sluice.context(request_id="req-42", user_id="u-17"), tracer.start_as_current_span("checkout"):
        log.info("GET /orders/42", extra={"http.request.method": "GET", "http.route": "/orders/{id}",
                                          "http.response.status_code": 200})
        log.info("order placed", extra={"order.id": "A-1042"})
        security.warning("login failed for user u-17 (password=hunter2)",
                         extra={"source.ip": "203.0.113.9"})
        sluice.audit("order.update", actor="u-17", entity_type="order", entity_id="A-1042",
                     old={"price": 10}, new={"price": 12})
        try:
            raise ValueError("card declined")
        except ValueError:
            log.exception("payment failed")
        orders.add(1, {"shop": "demo"})

    sluice.shutdown()


if __name__ == "__main__":
    main()
