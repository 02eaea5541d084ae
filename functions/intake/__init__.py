"""Intake Lambda: S3 upload events (via SQS) -> validated, deduplicated job records -> one GPU job each."""
