"""`python tests/support/gated_worker.py GATE_FILE`: the real worker, started once GATE_FILE exists.

Lets a test change a job's record (e.g. add a webhook URL, as the HTTP API does at creation) before any
worker can finish the job; gives up waiting after GATE_SECONDS and runs anyway.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

GATE_SECONDS = 300.0

if __name__ == "__main__":
    gate, deadline = Path(sys.argv[1]), time.monotonic() + GATE_SECONDS
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    from gpu_batch.worker.main import main

    raise SystemExit(main())
