"""The engine and its batcher, in process with a stand-in model (a NumPy function: these tests are about
where work runs and how requests are merged, not about the network)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import types

import anyio
import numpy as np
import pytest
from PIL import Image

from service import engine as engine_module
from service import errors
from service.batching import Batcher
from service.engine import Engine, Prediction
from service.metrics import domain_metrics
from service.served_model import ServedModel
from service.settings import Settings


class CountingModel:
    """(n, 28, 28, 1) -> (n, 10): row i is one-hot at the digit's mean grey level mod 10. Records each call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import time

        self.calls.append(len(images))
        time.sleep(self.delay)
        out = np.zeros((len(images), 10), np.float32)
        out[np.arange(len(images)), np.rint(images[:, 0, 0, 0] * 255).astype(int) % 10] = 1.0
        return out


def served(model) -> ServedModel:
    info = types.SimpleNamespace(metadata={}, creation_time=dt.datetime.now(dt.timezone.utc))
    return ServedModel(tag="mnist_cnn:test", info=info, infer=model)


def digits(*values: int) -> np.ndarray:
    batch = np.zeros((len(values), 28, 28), np.uint8)
    for i, value in enumerate(values):
        batch[i, 0, 0] = value
    return batch


def make_engine(model, **settings) -> Engine:
    return Engine(served(model), Settings(**settings), domain_metrics())


def png(width: int, height: int) -> bytes:
    picture = np.full((height, width), 255, np.uint8)
    picture[height // 4: 3 * height // 4, width // 2 - max(1, width // 20): width // 2 + max(1, width // 20)] = 0
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the batcher -------------------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls_and_get_their_own_rows():
    model = CountingModel(delay=0.05)
    engine = make_engine(model, max_batch_size=64)

    async def main():
        return await asyncio.gather(*(engine.predict(digits(i), "rest") for i in range(20)))

    predictions = asyncio.run(main())
    assert [int(p.digits[0]) for p in predictions] == [i % 10 for i in range(20)]
    assert sum(model.calls) == 20
    assert len(model.calls) < 20, "no requests were merged"


def test_a_request_alone_goes_to_the_model_at_once():
    model = CountingModel()
    engine = make_engine(model)

    async def main():
        for i in range(5):
            await engine.predict(digits(i), "rest")

    asyncio.run(main())
    assert model.calls == [1] * 5


def test_a_batch_never_exceeds_max_batch_size_but_a_large_request_is_not_split():
    model = CountingModel(delay=0.02)
    engine = make_engine(model, max_batch_size=8)

    async def main():
        small = [engine.predict(digits(1, 2, 3), "rest") for _ in range(10)]
        large = engine.predict(digits(*range(20)), "rest")
        return await asyncio.gather(*small, large)

    results = asyncio.run(main())
    assert all(call <= 8 for call in model.calls if call != 20)
    assert 20 in model.calls
    assert [int(d) for d in results[-1].digits] == [i % 10 for i in range(20)]


def test_a_large_batch_runs_as_parallel_parts_in_order():
    """With parallel_calls, a batch of at least two PART_MIN_DIGITS parts is split, the parts run at once in
    different threads, and the rows come back in the request's order."""
    import threading

    threads: set[str] = set()
    inner = CountingModel(delay=0.05)

    def model(images):
        threads.add(threading.current_thread().name)
        return inner(images)

    engine = Engine(served(model), Settings(max_batch_size=64), domain_metrics(), parallel_calls=2)
    values = [i % 250 for i in range(256)]
    prediction = asyncio.run(engine.predict(digits(*values), "v2"))
    assert sorted(inner.calls) == [128, 128]
    assert len(threads) == 2
    assert list(prediction.digits) == [value % 10 for value in values]

    inner.calls.clear()
    asyncio.run(engine.predict(digits(*values[:127]), "v2"))  # too small for two parts of 64
    assert inner.calls == [127]


def test_a_failing_model_call_fails_its_requests_only():
    calls = []

    def flaky(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.full((len(images), 10), 0.1, np.float32)

    engine = make_engine(flaky)

    async def main():
        with pytest.raises(RuntimeError):
            await engine.predict(digits(1), "rest")
        return await engine.predict(digits(2), "rest")

    assert asyncio.run(main()).probabilities.shape == (1, 10)


def test_a_cancelled_request_is_skipped():
    model = CountingModel(delay=0.05)
    engine = make_engine(model)

    async def main():
        first = asyncio.ensure_future(engine.predict(digits(1), "rest"))
        await asyncio.sleep(0.01)  # the first is in the model; the next two wait
        gone = asyncio.ensure_future(engine.predict(digits(*range(5)), "rest"))
        kept = asyncio.ensure_future(engine.predict(digits(3), "rest"))
        await asyncio.sleep(0)
        gone.cancel()
        return await first, await kept

    asyncio.run(main())
    assert model.calls == [1, 1]


def test_batcher_refuses_empty_requests():
    batcher = Batcher(lambda d: Prediction(np.zeros((len(d), 10)), None), max_batch_size=4)
    with pytest.raises(ValueError):
        asyncio.run(batcher.submit(np.zeros((0, 28, 28), np.uint8)))


# --- where decoding runs -----------------------------------------------------------------------------


@pytest.fixture
def thread_calls(monkeypatch):
    """Records which limiter each hop to a thread used."""
    calls = []
    real = anyio.to_thread.run_sync

    async def spy(function, *args, limiter=None, **kwargs):
        calls.append(limiter)
        return await real(function, *args, limiter=limiter, **kwargs)

    monkeypatch.setattr(engine_module.anyio.to_thread, "run_sync", spy)
    return calls


def test_an_mnist_sized_upload_is_decoded_on_the_event_loop(thread_calls):
    engine = make_engine(CountingModel())
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="PNG")
    asyncio.run(engine.normalise(buffer.getvalue()))
    assert thread_calls == []
    asyncio.run(engine.normalise(png(56, 56)))  # more pixels than MNIST's: the whole normalisation, in a thread
    assert thread_calls == [engine.decode_limiter]


def test_an_upload_declaring_many_pixels_is_decoded_in_a_thread_whatever_its_size(thread_calls):
    engine = make_engine(CountingModel())
    data = png(3000, 3000)  # 9 Mpx in a few kilobytes
    assert len(data) < engine_module.INLINE_HEADER_BYTES
    asyncio.run(engine.normalise(data))
    assert thread_calls == [engine.decode_limiter]


def test_the_model_never_waits_behind_decoding():
    """Every decode slot is taken, yet a model call goes through: the model has its own limiter."""
    engine = make_engine(CountingModel())

    async def main():
        holders = [object() for _ in range(int(engine.decode_limiter.total_tokens))]
        for holder in holders:
            await engine.decode_limiter.acquire_on_behalf_of(holder)
        try:
            with anyio.fail_after(10):
                return await engine.predict(digits(4), "rest")
        finally:
            for holder in holders:
                engine.decode_limiter.release_on_behalf_of(holder)

    assert int(asyncio.run(main()).digits[0]) == 4


def test_the_request_pixel_budget_is_checked_before_anything_is_decoded(monkeypatch):
    engine = make_engine(CountingModel(), max_pixels=10_000_000, max_request_pixels=20_000_000)
    decoded = []
    monkeypatch.setattr(engine_module, "normalise_image", lambda image: decoded.append(image) or np.zeros((28, 28)))
    with pytest.raises(errors.TooManyPixels, match="20,000,000"):
        asyncio.run(engine.normalise_all([png(3000, 3000)] * 3))  # 27 Mpx together
    assert decoded == []


def test_a_bad_image_in_a_batch_is_named_by_position():
    engine = make_engine(CountingModel())
    with pytest.raises(errors.NotAnImage, match="Image 1 "):
        asyncio.run(engine.normalise_all([png(50, 50), b"not an image", png(50, 50)]))


def test_request_image_count_limits():
    engine = make_engine(CountingModel(), max_batch_images=3)
    with pytest.raises(errors.BatchTooLarge):
        asyncio.run(engine.predict(digits(1, 2, 3, 4), "rest"))
    with pytest.raises(errors.InvalidInput):
        asyncio.run(engine.normalise_all([]))
