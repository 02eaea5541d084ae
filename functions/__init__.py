"""The AWS Lambda functions, each a thin handler over plain functions:

- intake/: S3 upload events (via SQS) -> dedupe, validate, record the job; a work item on the work queue and
  a GPU worker started, or the upload rejected (and `upscaler validate`, the same validation on a file);
- notifier/: drains the work DLQ: an item that kept killing its worker becomes FAILED with its one
  upscale.failed;
- scaler/: keeps GPU worker jobs following the work queue (every minute, and when a worker job ends).
"""
