"""Client-side helpers for webhook receivers (no dependency on the rest): SNS subscriptions (verify
signatures, confirm) and per-request webhooks (Standard Webhooks, `standard`)."""
