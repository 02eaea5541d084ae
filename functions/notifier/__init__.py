"""Notifier Lambda: settles the work DLQ (FAILED for items whose attempts kept dying, the rest back to work)."""

TIMEOUT_SECONDS = 30  # the function's timeout; its queue (the work DLQ) hides a message 6x as long
