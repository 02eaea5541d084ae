"""Client-side helpers for webhook receivers of the upscaler's SNS topic (no dependency on the rest)."""
