"""Intake Lambda: S3 upload events (via SQS) -> deduplicated, validated job records -> a work item on the work
queue (and a GPU worker started if none runs), or a rejection; `upscaler validate` runs the same checks."""
