"""How much host memory the images a pipelined worker holds at once may need, added up.

Each image is admitted with its peak (the engine's estimate for the stage that needs the most: decode, the
forward's buffers or the encoder's); it gives its share back when its message is settled. Images wait before
the GPU stage, never inside it, so an image that does not fit yet only waits for the ones ahead of it to be
encoded. An image larger than the whole budget is admitted alone, so none waits forever.
"""

from __future__ import annotations

import threading


class HostMemoryBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._held = 0
        self._images = 0
        self._changed = threading.Condition()

    @property
    def held(self) -> int:
        return self._held

    def fits(self, nbytes: int) -> bool:
        return self._images == 0 or self._held + nbytes <= self.limit

    def acquire(self, nbytes: int, *, unless: threading.Event, poll_seconds: float = 0.2) -> bool:
        """Wait until `nbytes` fits beside what is held (or nothing is); False when `unless` was set first."""
        with self._changed:
            while not self.fits(nbytes):
                if unless.is_set():
                    return False
                self._changed.wait(poll_seconds)
            self._held += nbytes
            self._images += 1
            return True

    def release(self, nbytes: int) -> None:
        with self._changed:
            self._held -= nbytes
            self._images -= 1
            self._changed.notify_all()
