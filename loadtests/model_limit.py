"""The model's in-process limit: images/s of the compiled forward pass, and of ``model.predict``, with no server.

    python -m loadtests.model_limit --seconds 3            # prints JSON; loadtests/bench.py runs it

Run in a process of its own, so the benchmark's orchestrator never imports TensorFlow, and TensorFlow's
thread pools are sized for this process alone (by default, one thread per core: the machine's limit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BATCHES = (1, 32, 256)


def time_calls(call, seconds: float, min_calls: int = 3) -> dict:
    """Call ``call()`` repeatedly for about ``seconds``; return calls, wall and CPU seconds, and the median call."""
    durations = []
    cpu_started, started = time.process_time(), time.perf_counter()
    while len(durations) < min_calls or time.perf_counter() - started < seconds:
        before = time.perf_counter()
        call()
        durations.append(time.perf_counter() - before)
    return {"calls": len(durations), "wall_s": time.perf_counter() - started,
            "cpu_s": time.process_time() - cpu_started, "median_call_ms": float(np.median(durations)) * 1000}


def rate(timing: dict, batch_size: int) -> dict:
    """Images/s and CPU seconds per 1,000 images from a ``time_calls`` result."""
    images = timing["calls"] * batch_size
    return {"batch_size": batch_size, "images_per_s": images / timing["wall_s"],
            "ms_per_call": timing["median_call_ms"], "cpu_s_per_1000_images": timing["cpu_s"] / images * 1000,
            "calls": timing["calls"]}


def measure(seconds: float, batches: tuple[int, ...] = DEFAULT_BATCHES, tag: str | None = None) -> dict:
    """Measure the registered model: the compiled function at each batch size, and ``model.predict`` at batch 1."""
    import tensorflow as tf

    from models.cnn import make_inference_fn
    from models.preprocessing import to_model_input
    from service.settings import get_settings
    from training.data import load_subset
    from training.registry import get_stored, load_model

    stored = get_stored(tag or get_settings().model_tag)
    model = load_model(stored)
    infer = make_inference_fn(model)
    digits = load_subset().x_test  # (1000, 28, 28) real test digits
    result = {"tag": str(stored.tag),
              "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
                             "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()}}
    for batch_size in batches:
        images = to_model_input(np.resize(digits, (batch_size, *digits.shape[1:])))  # (batch, 28, 28, 1)
        infer(images)  # warm-up
        result[f"batch_{batch_size}"] = rate(time_calls(lambda: infer(images), seconds), batch_size)
        logger.info("compiled, batch %d: %.0f images/s", batch_size, result[f"batch_{batch_size}"]["images_per_s"])
    one = to_model_input(digits[:1])
    model.predict(one, verbose=0)  # warm-up
    result["predict_batch_1"] = rate(time_calls(lambda: model.predict(one, verbose=0), seconds), 1)
    logger.info("model.predict, batch 1: %.0f images/s", result["predict_batch_1"]["images_per_s"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on each measurement")
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="compiled batch sizes")
    parser.add_argument("--tag", default=None, help="model tag (default: DIGITSERVE_MODEL_TAG, else mnist_cnn:latest)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    batches = tuple(int(size) for size in args.batches.split(","))
    print(json.dumps(measure(args.seconds, batches, args.tag)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
