"""`python tests/support/crashing_worker.py`: the real worker, except that an input whose bytes contain
CRASH_MARKER kills the process with SIGKILL when its inference starts, as the OOM killer would."""

from __future__ import annotations

import os
import signal

CRASH_MARKER = b"upscaler-test-crash-me"


def _install() -> None:
    from gpu_batch.worker import item, loop

    real_download, real_upscale = item.download_input, loop.upscale
    doomed: set[str] = set()

    def download(s3, params):  # type: ignore[no-untyped-def]
        data, version = real_download(s3, params)
        if CRASH_MARKER in data:
            doomed.add(params.job_id)
        return data, version

    def upscale(worker, held):  # type: ignore[no-untyped-def]
        if held.job_id in doomed:  # the process dies inside the network, after the attempt is marked started
            worker.engine.infer = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        return real_upscale(worker, held)

    item.download_input = download
    loop.upscale = upscale


if __name__ == "__main__":
    _install()
    from gpu_batch.worker.main import main

    raise SystemExit(main())
