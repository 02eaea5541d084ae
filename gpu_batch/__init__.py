"""The AWS Batch GPU job: the Real-ESRGAN engine and the worker process that runs it."""
