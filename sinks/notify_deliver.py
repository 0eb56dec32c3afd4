"""notify_deliver: planned events in (from `notify_plan`), messages at the providers out. A
BatchingSink, so it runs at each checkpoint before the input offsets are committed: a crash replays
the batch, and the notifier's claim + outbox make that replay send nothing twice (notifier/service.py).

Also runs the deferred-send drainer in a background thread: quiet hours that ended, rows of a dead
process whose lease expired, reschedule confirmations planned by the HTTP form.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry
from quixstreams.sinks import BatchingSink, SinkBatch

from notifier.metrics import NotifierMetrics
from operators.registry import BuildContext, StepConfig, sink

log = logging.getLogger("notifier")


class NotifyDeliverConfig(StepConfig):
    # Run the deferred-send drainer inside the job (off: run `parcel notify drain` on a schedule).
    drain: bool = True


class NotifyDeliverSink(BatchingSink):
    def __init__(self, ctx: BuildContext, config: NotifyDeliverConfig) -> None:
        super().__init__()
        self.ctx = ctx
        self.config = config
        self.notifier: Any = None
        self._stop = threading.Event()
        self._drainer: threading.Thread | None = None

    def setup(self) -> None:
        from notifier.service import Notifier
        from topologies.bootstrap import SECRET_ENV

        res = self.ctx.resources
        if res.settings is None:
            raise RuntimeError(f"step {self.ctx.step_id!r}: notify_deliver needs resources.settings")
        registry = res.metrics.registry if res.metrics is not None else CollectorRegistry()
        metrics = res.extra.get("notifier_metrics") or NotifierMetrics(registry)
        res.extra["notifier_metrics"] = metrics
        self.settings = res.settings
        self.notifier = Notifier(res.settings, secret=res.secret(SECRET_ENV), metrics=metrics, clock=res.clock)
        if self.config.drain and self._drainer is None:
            self._drainer = threading.Thread(target=self._drain_loop, name="notify-drain", daemon=True)
            self._drainer.start()

    def _drain_loop(self) -> None:
        from notifier.service import Notifier

        # Its own Notifier: its own PostgreSQL connection and send pool, never the sink thread's.
        res = self.ctx.resources
        from topologies.bootstrap import SECRET_ENV

        drainer = Notifier(self.settings, secret=res.secret(SECRET_ENV), metrics=self.notifier.metrics,
                           clock=res.clock)
        interval = drainer.cfg.drain_interval_s
        if drainer.pause_after_claim:
            return  # test knob: the whole process freezes between claim and send, drainer included
        while not self._stop.wait(interval):
            try:
                drainer.drain()
            except Exception:  # noqa: BLE001 - the drainer must outlive a store hiccup; rows stay pending
                log.exception("deferred-send drain failed; retrying in %.1f s", interval)

    def write(self, batch: SinkBatch) -> None:
        items = [(item.value, {"topic": batch.topic, "partition": batch.partition, "offset": item.offset})
                 for item in batch]
        self.notifier.handle(items)


@sink("notify_deliver", config=NotifyDeliverConfig)
def build_notify_deliver(ctx: BuildContext, config: NotifyDeliverConfig) -> NotifyDeliverSink:
    """Dedupe, plan (outbox), and send each notification over SMS, email and push."""
    return NotifyDeliverSink(ctx, config)
