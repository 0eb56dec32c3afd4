"""The notifier: rule engine, dedupe, channels, reschedule flow (topologies/notifier.yaml)."""
