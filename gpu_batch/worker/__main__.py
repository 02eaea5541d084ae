"""`python -m gpu_batch.worker`: drain the work queue until idle, then exit (the container's command)."""

from gpu_batch.worker.main import main

raise SystemExit(main())
