"""Notifier Lambda: closes jobs whose Batch container died before it could report (docs/worker.md)."""
