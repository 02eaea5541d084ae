"""`python tests/support/crashing_worker.py`: the real worker, except that an input whose bytes contain
CRASH_MARKER kills the process with SIGKILL right after the download, as the OOM killer would."""

from __future__ import annotations

import os
import signal

CRASH_MARKER = b"upscaler-test-crash-me"


def _install() -> None:
    from gpu_batch.worker import item

    real = item.download_input

    def download(s3, params):  # type: ignore[no-untyped-def]
        data, version = real(s3, params)
        if CRASH_MARKER in data:
            os.kill(os.getpid(), signal.SIGKILL)
        return data, version

    item.download_input = download


if __name__ == "__main__":
    _install()
    from gpu_batch.worker.main import main

    raise SystemExit(main())
