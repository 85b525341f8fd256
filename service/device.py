"""Which device TensorFlow runs on: GPUs when there are any, with memory growth; otherwise the CPU."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def count_gpus() -> int:
    """NVIDIA GPUs visible to this process, counted through NVML without importing TensorFlow.

    Cheap enough to call at import time, where the service decides its number of workers.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    try:
        import pynvml  # shipped by nvidia-ml-py, a BentoML dependency

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library, no device: all mean "run on the CPU"
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return min(count, len(visible.split(","))) if visible else count


MAX_CPU_WORKERS = 4  # each worker holds its own TensorFlow and model copy: about 850 MB of memory


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, which containers' cpusets narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(configured: int | None) -> int:
    """Worker processes to start: ``configured`` if set, else one per GPU, else one per core up to 4.

    On the CPU one worker per core lets the Python half of each request (HTTP, multipart, decoding)
    run on every core; each worker's TensorFlow then uses DIGITSERVE_THREADS (default 1) threads.
    """
    if configured:
        return configured
    gpus = count_gpus()
    return gpus if gpus else min(usable_cpus(), MAX_CPU_WORKERS)


def configure_tensorflow(worker_index: int, cpu_threads: int, parallel_calls: int = 1) -> str:
    """Pin this worker to one GPU (worker i takes GPU i mod n) or to ``cpu_threads`` CPU threads.

    Must run before TensorFlow executes anything. Returns the device in use, e.g. ``GPU:0 (NVIDIA H200)``
    or ``CPU``, for the startup log, ``/model`` and the metrics.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    try:
        if not gpus:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_threads)
            # One inter-op thread per model call that may run at once (service.engine splits large batches).
            tf.config.threading.set_inter_op_parallelism_threads(parallel_calls)
            return "CPU"
        gpu = gpus[(worker_index - 1) % len(gpus)]  # BentoML numbers workers from 1
        tf.config.set_visible_devices(gpu, "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)  # share the card instead of taking all its memory
    except RuntimeError as error:  # TensorFlow already ran in this process (in-process tests): keep its setup
        logger.warning("TensorFlow was initialised before the service configured it: %s", error)
        if not gpus:
            return "CPU"
        gpu = tf.config.get_visible_devices("GPU")[0]
    details = tf.config.experimental.get_device_details(gpu)
    name = details.get("device_name", "GPU")
    return f"GPU:{gpu.name.rsplit(':', 1)[-1]} ({name})"
