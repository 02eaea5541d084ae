"""The AWS Lambda functions, each a thin handler over plain functions:

- intake/: S3 upload events (via SQS) -> dedupe, validate, record the job; a work item on the work queue and
  a GPU worker started, or the upload rejected or superseded (and `upscaler validate`, the same validation);
- notifier/: settles the work DLQ through each item's job record (FAILED when its attempts kept dying, else
  back on the work queue);
- scaler/: keeps GPU worker jobs following the work queue (every minute, when a worker job ends) and stops the
  workers on an instance at a spot interruption warning;
- sweeper/: every few minutes, finishes or re-drives every job left non-terminal past its bound;
- webhooks/: per-request webhook delivery (Standard Webhooks signatures, retries, SSRF guard).
"""
