"""The AWS Batch worker: one process runs one job (see docs/worker.md)."""

from gpu_batch.worker.job import classify, run_job

__all__ = ["classify", "run_job"]
