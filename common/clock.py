"""Wall time as AWS keeps it: this machine's clock, corrected by the offset that AWS's own answers show.

Leases (claims, the outbox, worker slots) are epoch seconds compared across machines, so a host whose clock
runs 30 s behind would write leases that already look lapsed to everyone else. Every AWS response carries an
HTTP `Date` header from a clock AWS keeps right; common.aws feeds each one here, and `now()` adds the median
offset of the recent ones to the local clock. The header has a one-second resolution, which is far inside the
margins the leases keep; without any answer yet, the local clock is used as it is.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime

SAMPLES = 15
# A Date header truncates to the second: the server's time was, on average, half a second later.
_DATE_RESOLUTION_MIDPOINT = 0.5


class ServerClock:
    def __init__(self, local: Callable[[], float] | None = None, samples: int = SAMPLES) -> None:
        self._local = local or (lambda: time.time())  # looked up at each call: tests (and chaos runs) move it
        self._offsets: deque[float] = deque(maxlen=samples)
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Epoch seconds by AWS's clock (as far as its answers tell)."""
        return self._local() + self._offset

    @property
    def offset(self) -> float:
        return self._offset

    def observe_date(self, header: str | None) -> None:
        """One response's `Date` header, read as the response arrives."""
        if not header:
            return
        try:
            server = parsedate_to_datetime(header).timestamp() + _DATE_RESOLUTION_MIDPOINT
        except (TypeError, ValueError):
            return
        with self._lock:
            self._offsets.append(server - self._local())
            self._offset = statistics.median(self._offsets)


SERVER_CLOCK = ServerClock()


def server_time() -> float:
    """The process-wide corrected wall clock (what leases are written and compared with)."""
    return SERVER_CLOCK.now()
