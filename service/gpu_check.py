"""``make gpu-check``: is a GPU found, is inference placed on it, and how fast is a large batch there.

Prints one JSON report and exits 0 when a GPU was found and used, 1 when none was found (the CPU figure
is still reported, for comparison), 2 when a GPU was found but the model ran elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

logger = logging.getLogger(__name__)


def images_per_second(infer, batch_size: int, seconds: float) -> float:
    """Throughput of ``infer`` on random (batch, 28, 28, 1) inputs, after a warm-up call."""
    from models.preprocessing import INPUT_SHAPE

    images = np.random.default_rng(0).random((batch_size, *INPUT_SHAPE), dtype=np.float32)
    infer(images)  # trace, compile, and move the weights
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        infer(images)
        calls += 1
    return calls * batch_size / (time.perf_counter() - started)


def load_cnn():
    """The registered model when there is one; otherwise an untrained CNN (speed does not depend on weights)."""
    from models.cnn import build_cnn
    from training import registry

    try:
        stored = registry.get_stored()
    except registry.ModelNotRegistered:
        return build_cnn(), "untrained build_cnn()"
    return registry.load_model(stored), str(stored.tag)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from models.cnn import make_inference_fn
    from service.device import configure_tensorflow, count_gpus

    report = {"nvml_gpus": count_gpus(), "tensorflow": tf.__version__,
              "built_with_cuda": tf.test.is_built_with_cuda()}
    device = configure_tensorflow(worker_index=1, cpu_threads=0)
    report["device"] = device
    model, report["model"] = load_cnn()
    infer = make_inference_fn(model)

    probe = model(np.zeros((1, 28, 28, 1), np.float32), training=False)
    report["output_placed_on"] = probe.device
    report["images_per_s"] = round(images_per_second(infer, args.batch_size, args.seconds))
    report["batch_size"] = args.batch_size
    if device != "CPU":
        with tf.device("/CPU:0"):
            cpu_infer = make_inference_fn(model)
            report["cpu_images_per_s"] = round(images_per_second(cpu_infer, min(args.batch_size, 512), args.seconds))
    print(json.dumps(report, indent=2))

    if device == "CPU":
        logger.error("No GPU found: TensorFlow sees none (NVML counts %d). Install with `pip install .[gpu]`.",
                     report["nvml_gpus"])
        return 1
    if "GPU" not in probe.device:
        logger.error("A GPU was found but the model ran on %s.", probe.device)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
