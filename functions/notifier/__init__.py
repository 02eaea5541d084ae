"""Notifier Lambda: drains the work DLQ, giving each item that kept killing its worker its one upscale.failed."""
