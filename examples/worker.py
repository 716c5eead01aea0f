"""A background worker that builds an MSI installer in stages, instrumented with `sluice.job`.

    python examples/worker.py                       # a successful build
    python examples/worker.py --fail-at sign        # the signing stage fails: see the failure path

The whole build is one job (`msi.generate`: a span, start/finish records, `job.duration`,
`job.succeeded`/`job.failed`); each stage is a nested job, so the trace shows where time went and
the failing stage's exception is recorded on its span and in an error record, then re-raised.
Audit records note what was published and by whom.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid

import sluice

log = logging.getLogger("examples.worker")
STAGES = ("fetch-sources", "compile", "sign", "package", "publish")


class BuildError(RuntimeError):
    """A stage of the build failed."""


def run_stage(stage: str, build_id: str, fail_at: str | None) -> None:
    with sluice.job(f"msi.generate.{stage}", job_id=f"{build_id}-{stage}", build_id=build_id):
        log.info("stage %s running", stage)
        time.sleep(0.01)
        if stage == fail_at:
            raise BuildError(f"stage {stage} failed: certificate unavailable")
        if stage == "publish":
            sluice.audit("installer.publish", actor="build-bot", entity_type="installer", entity_id=build_id,
                         new={"channel": "stable", "version": "2.4.0"})


def build(product: str, fail_at: str | None) -> str:
    build_id = uuid.uuid4().hex[:12]
    with sluice.context(request_id=build_id), sluice.job("msi.generate", job_id=build_id, product=product):
        for stage in STAGES:
            run_stage(stage, build_id, fail_at)
    return build_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--product", default="acme-agent")
    parser.add_argument("--fail-at", choices=STAGES, default=None)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s [%(trace_id)s] %(message)s")
    sluice.init(service_name="msi-worker")
    sluice.event(sluice.EventType.SYSTEM_START, message="worker started")
    try:
        build_id = build(args.product, args.fail_at)
    except BuildError as exc:
        log.error("build failed: %s", exc)
        return 1
    else:
        log.info("build %s done", build_id)
        return 0
    finally:
        sluice.event(sluice.EventType.SYSTEM_STOP, message="worker stopped")
        sluice.shutdown()


if __name__ == "__main__":
    sys.exit(main())
