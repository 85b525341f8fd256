"""The decode pixel budget and the return of freed heap memory (service/memory.py)."""

from __future__ import annotations

import asyncio

import numpy as np

from service.memory import FreedMemoryReturner, PixelBudget


def test_the_pixel_budget_runs_big_holders_one_after_another_and_small_ones_together():
    active, most = [0], [0]
    budget = None

    async def decode(pixels: int) -> None:
        async with budget.hold(pixels):
            active[0] += pixels
            most[0] = max(most[0], active[0])
            await asyncio.sleep(0.02)
            active[0] -= pixels

    async def main(sizes):
        nonlocal budget
        budget, most[0] = PixelBudget(capacity=40), 0  # one per event loop, as in a worker
        await asyncio.gather(*(decode(size) for size in sizes))
        return most[0]

    assert asyncio.run(main([30, 30, 30])) == 30  # never two at once
    assert asyncio.run(main([10, 10, 10, 10])) == 40  # all four fit together
    assert asyncio.run(main([100, 5])) == 100  # over the budget: it runs alone, and is not refused
    assert budget.in_use == 0


def test_freed_heap_memory_goes_back_to_the_system():
    returner = FreedMemoryReturner()
    if returner._libc is None:  # not glibc: the service leaves memory to the allocator and says so
        assert returner.start() is False
        return
    # Many medium blocks (under glibc's mmap threshold: they come from the heap), then freed.
    blocks = [np.ones(100_000, np.float64) for _ in range(500)]  # about 400 MB
    del blocks
    free_before = returner.free_heap_bytes()
    returner.trim()
    assert returner.free_heap_bytes() <= free_before
    assert returner.trims == 1
