"""Prometheus metrics of the notifier, on a registry passed in (faust style): one counter per
outcome and channel, the dedupe hit rate, dead letters, send latency, and the exception counts of
the operations view (reason code × facility × region)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

OUTCOMES = ("sent", "retried", "dead_lettered", "deferred", "opted_out", "no_contact", "duplicate")


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.notifications = Counter(
            "parcel_notifications_total", "Notification outcomes per channel", ["channel", "outcome"],
            registry=registry)
        self.dedupe = Counter(
            "parcel_notification_dedupe_total", "Dedupe decisions (hit: suppressed as a duplicate)",
            ["event_type", "result"], registry=registry)
        self.dead_letters = Counter(
            "parcel_notification_dead_letters_total", "Messages dead-lettered after the last retry",
            ["channel", "reason"], registry=registry)
        self.latency = Histogram(
            "parcel_notification_latency_seconds", "From the event on `notifications` to the provider's answer",
            ["channel"], registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 43200))
        self.exceptions = Counter(
            "parcel_exceptions_total", "Exceptions and failed delivery attempts by reason, facility and region",
            ["reason_code", "facility", "region", "event_type"], registry=registry)
        self.decided = Counter("parcel_notification_events_total", "Events decided by the notifier",
                               ["event_type", "decision"], registry=registry)

    def outcome(self, channel: str, outcome: str, n: int = 1) -> None:
        self.notifications.labels(channel, outcome).inc(n)
