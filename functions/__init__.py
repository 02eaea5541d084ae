"""AWS Lambda functions: intake (uploads -> validated jobs) and notifier (Batch failures -> notifications)."""
