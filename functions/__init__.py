"""AWS Lambda functions: intake (uploads -> validated jobs), notifier (the work DLQ -> notifications), scaler
(GPU workers follow the work queue) and webhooks (per-request webhook delivery)."""
