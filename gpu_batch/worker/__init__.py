"""The AWS Batch worker: one process drains the work queue, one image at a time (see docs/worker.md)."""
