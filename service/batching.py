"""Adaptive batching: concurrent requests share one model call.

A request waits only while the model is busy. The first digits to arrive go to the model at once; whatever
arrives while it runs is merged into the next call, up to ``max_batch_size`` images. So batches stay at
one image when the service is idle and grow with the load, with no timer to tune: Triton's dynamic batcher
with a queue delay of zero. (BentoML's ``CorkDispatcher`` adds a latency model on top of the same idea, but
it lives in a private module, ``bentoml._internal``, and only BentoML's own API routes reach it publicly.)

The model runs in a worker thread under a limiter of its own, so a model call never queues behind the
decoding of uploads, which runs under another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

import anyio
import anyio.to_thread
import numpy as np

logger = logging.getLogger(__name__)


class Sliceable(Protocol):
    def rows(self, start: int, stop: int) -> Sliceable: ...


R = TypeVar("R", bound=Sliceable)


@dataclass
class _Pending:
    digits: np.ndarray  # (n, 28, 28) uint8
    future: asyncio.Future


class Batcher(Generic[R]):
    """Runs ``run(digits)`` in a thread for the merged digits of every waiting request.

    ``run`` takes (n, 28, 28) digits and returns a result whose ``rows(start, stop)`` is the part for
    digits ``start:stop``; ``submit`` returns each request its own rows.
    """

    def __init__(self, run: Callable[[np.ndarray], R], *, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}.")
        self._run = run
        self.max_batch_size = max_batch_size
        self._limiter = anyio.CapacityLimiter(1)  # one model call at a time; merging does the rest
        self._queue: deque[_Pending] = deque()
        self._drainer: asyncio.Task | None = None

    @property
    def queued_images(self) -> int:
        return sum(len(pending.digits) for pending in self._queue)

    async def submit(self, digits: np.ndarray) -> R:
        """The model's result for ``digits`` (n, 28, 28), computed together with whatever else is waiting."""
        if len(digits) == 0:
            raise ValueError("submit needs at least one digit.")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(digits, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> list[_Pending]:
        """The next batch: the oldest request, then those behind it while they fit in max_batch_size."""
        batch: list[_Pending] = []
        size = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # its client went away: skip the work
                self._queue.popleft()
                continue
            if batch and size + len(pending.digits) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            size += len(pending.digits)
        return batch

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            if not batch:
                continue
            digits = batch[0].digits if len(batch) == 1 else np.concatenate([p.digits for p in batch])
            try:
                result = await anyio.to_thread.run_sync(self._run, digits, limiter=self._limiter)
            except asyncio.CancelledError:  # the event loop is shutting down
                for pending in (*batch, *self._queue):
                    pending.future.cancel()
                raise
            except Exception as error:
                logger.exception("A model call failed for %d digits", len(digits))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            start = 0
            for pending in batch:
                stop = start + len(pending.digits)
                if not pending.future.done():
                    pending.future.set_result(result.rows(start, stop))
                start = stop
