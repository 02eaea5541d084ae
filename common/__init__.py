"""Shared by every part of the service:

- the contract (`contract.py`: work item, job states, notifications; `schemas/`) and the one settings object
  (`settings.py`, `UPSCALER_*`);
- AWS access: every boto3 client (`aws.py`), the job record store (`jobs.py`), the job lifecycle that owns
  every state change and its one notification (`lifecycle.py`), the work queue (`work_queue.py`), worker
  slots and scaling (`scaling.py`), the worker backends that start GPU workers (`worker_backends.py`:
  AWS Batch or the local stand-in), publishing (`notify.py`), presigned links (`presign.py`), webhook URL
  rules (`webhook_urls.py`);
- image facts decided once: formats and output sizes (`formats.py`), pixel bounds (`image_bounds.py`),
  metadata (`image_metadata.py`), HEIF support (`heif.py`), S3 keys (`keys.py`).

Importable by the Lambda bundle, the GPU worker image, the local stack and the tests. Nothing here imports
from functions/, gpu_batch/, infra/ or local_stack/.
"""
