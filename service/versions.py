"""Which model version the server serves: pinned once, the same in every worker, updated without a restart.

**One version per server.** ``DIGITSERVE_MODEL_TAG`` (``mnist_cnn:latest`` by default) is resolved to an
exact version once, when ``bentoml serve`` imports the service, before any worker starts. The choice is
written to a small state file in a run directory that the workers inherit (through the environment), and
every worker, a restarted one included, serves the version that file names.

**Updates without a restart.** When the tag moves (its version is ``latest``), every worker looks at the
BentoML model store every ``DIGITSERVE_MODEL_POLL_S`` seconds. The first worker to see a new version takes
the state file's lock and puts the version through the gate (``validate``): the archive's integrity, a load,
the output's shape, and the accuracy on a fixed set of labelled digits. If it passes, the worker records it
as the version to serve; every worker then loads it beside the one serving, warms it up and swaps it in
between two model calls. If it fails, it is recorded as refused, with a log line and a metric naming the
version and the reason, and the old version keeps serving. A tag that names an exact version never moves.

**Rollback**: register the previous version again under a new version (``python -m training.registry
--promote mnist_cnn:<version>``): it is then the newest, and the servers move to it as to any update.
"""

from __future__ import annotations

import asyncio
import atexit
import fcntl
import gc
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

logger = logging.getLogger(__name__)

RUN_DIR_ENV = "DIGITSERVE_RUN_DIR"  # internal: "<pid of bentoml serve>:<run directory>", set at import
STATE_FILE = "serving.json"
LOCK_FILE = "serving.lock"
GATE_DIGITS = Path(__file__).with_name("gate_digits.npz")
GATE_CHUNK = 32  # digits per model call while a version is judged
FOLLOW_S = 1.0  # how often a worker reads the state file for a version its siblings adopted


class ModelRefused(RuntimeError):
    """A model version that did not pass the gate; ``reason`` is a metric label."""

    def __init__(self, tag: str, reason: str, message: str) -> None:
        super().__init__(f"Model {tag} refused ({reason}): {message.rstrip('.')}.")
        self.tag, self.reason, self.message = tag, reason, message


# --- the pinned version and the run directory ------------------------------------------------------


def is_moving(tag: str) -> bool:
    """Whether a tag follows the newest version (``name``, ``name:latest``) rather than naming one."""
    return ":" not in tag or tag.split(":", 1)[1] == "latest"


@dataclass
class State:
    """The run directory's record: the version every worker serves, and the versions refused."""

    tag: str
    follows: str | None  # the moving tag being followed, or None when pinned to an exact version
    refused: dict[str, str] = field(default_factory=dict)  # tag -> reason


class RunDir:
    """The directory the workers of one ``bentoml serve`` share: the state file and its lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> State:
        return State(**json.loads((self.path / STATE_FILE).read_text()))

    def write(self, state: State) -> None:
        temporary = self.path / f".{STATE_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(state.__dict__))
        os.replace(temporary, self.path / STATE_FILE)  # atomic: a reader sees the old or the new file

    @contextmanager
    def try_lock(self) -> Iterator[bool]:
        """True inside when this process holds the lock; False when another does (nothing waits)."""
        with open(self.path / LOCK_FILE, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def pin(configured_tag: str) -> tuple[str, RunDir]:
    """The exact tag this process serves, and the run directory shared with its siblings.

    In ``bentoml serve`` the service module is imported first by the server process, which resolves the
    tag and creates the run directory; its workers, started after, inherit ``DIGITSERVE_RUN_DIR`` and read
    the version there. Every other process (the server process itself, an in-process app, a server started
    by a process that had one) resolves the tag and makes a run directory of its own.
    """
    import bentoml

    inherited = os.environ.get(RUN_DIR_ENV, "")
    owner, _, directory = inherited.partition(":")
    is_worker = bentoml.server_context.worker_index is not None  # set before a worker imports the service
    if is_worker and owner == str(os.getppid()) and Path(directory, STATE_FILE).exists():
        run_dir = RunDir(Path(directory))
        return run_dir.read().tag, run_dir

    exact = str(bentoml.models.get(configured_tag).tag)  # NotFound when nothing is registered
    run_dir = RunDir(Path(tempfile.mkdtemp(prefix="digitserve-run-")))
    run_dir.write(State(tag=exact, follows=configured_tag if is_moving(configured_tag) else None))
    os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{run_dir.path}"
    atexit.register(shutil.rmtree, run_dir.path, ignore_errors=True)
    return exact, run_dir


# --- the gate ---------------------------------------------------------------------------------------


def gate_digits() -> tuple[np.ndarray, np.ndarray]:
    """The fixed labelled digits every version is judged on: uint8 (300, 28, 28) and their labels.

    The first 30 of each class in the MNIST test set (``test_indices`` in the file): digits no preset
    trains on, balanced, and the same for every version, so versions are compared on equal terms; stored
    with the service, not with the model, so a candidate cannot bring an easier test of its own.
    """
    with np.load(GATE_DIGITS) as data:
        return data["digits"], data["labels"].astype(np.int64)


def validate(stored, min_accuracy: float):
    """Load ``stored`` (a bentoml.Model) and return it as a ServedModel if it passes the gate, or raise
    ModelRefused. The checks, in order: the archive is whole; it was trained for a preprocessing pipeline
    this service has; Keras loads it; its answers for the gate digits (made into its input by that
    pipeline) have shape (n, 10), are finite and sum to 1; it reads at least ``min_accuracy`` of them."""
    from models.preprocessing import NUM_CLASSES
    from service.served_model import load_served_model
    from training.registry import ModelLoadError, model_input_of, verify_archive

    tag = str(stored.tag)
    try:
        verify_archive(stored)
    except ModelLoadError as error:
        raise ModelRefused(tag, "damaged_archive", str(error)) from error
    try:
        model_input_of(stored)
    except ValueError as error:
        raise ModelRefused(tag, "preprocessing_mismatch", str(error)) from error
    try:
        model = load_served_model(stored)
    except ModelLoadError as error:
        raise ModelRefused(tag, "load_failed", str(error)) from error
    except Exception as error:  # a model that loads but cannot run: the warm-up call failed
        raise ModelRefused(tag, "load_failed", f"{type(error).__name__}: {error}") from error
    digits, labels = gate_digits()
    try:
        # In chunks no larger than a served batch: one call on all 300 digits would make TensorFlow's
        # allocator grow (and keep) tens of megabytes of activations that serving never needs.
        probabilities = np.concatenate([np.asarray(model.probabilities(digits[start:start + GATE_CHUNK]))
                                        for start in range(0, len(digits), GATE_CHUNK)])
    except Exception as error:
        raise ModelRefused(tag, "bad_output", f"the model failed on the gate digits: {error}") from error
    if probabilities.shape != (len(digits), NUM_CLASSES) or not np.isfinite(probabilities).all():
        raise ModelRefused(tag, "bad_output", f"answered shape {probabilities.shape}, expected ({len(digits)}, "
                                              f"{NUM_CLASSES}) finite probabilities")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise ModelRefused(tag, "bad_output", "its outputs are not probabilities (rows do not sum to 1)")
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    if accuracy < min_accuracy:
        raise ModelRefused(tag, "below_accuracy_floor", f"it reads {accuracy:.1%} of the {len(digits)} gate "
                                                        f"digits; the floor is {min_accuracy:.1%}")
    logger.info("Model %s passed the gate: %.1f%% of %d gate digits", tag, 100 * accuracy, len(digits))
    return model


# --- following the tag --------------------------------------------------------------------------------


class ModelWatcher:
    """One worker's loop: adopt the version the run directory names, and decide on new versions in the store."""

    def __init__(self, engine, run_dir: RunDir, poll_s: float, min_accuracy: float, metrics) -> None:
        self.engine = engine
        self.run_dir = run_dir
        self.poll_s = poll_s
        self.min_accuracy = min_accuracy
        self.metrics = metrics
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.poll_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        """Follow the state file every second (a sibling's decision reaches this worker within a second of
        it), and look at the store every ``poll_s``."""
        next_look = time.monotonic() + self.poll_s
        while True:
            await asyncio.sleep(min(FOLLOW_S, self.poll_s))
            look = time.monotonic() >= next_look
            if look:
                next_look = time.monotonic() + self.poll_s
            try:
                await self.check(look_in_store=look)
            except asyncio.CancelledError:
                raise
            except Exception:  # a store that cannot be read now may be readable next time
                logger.exception("Checking for a new model version failed; trying again in %.0f s", self.poll_s)

    async def check(self, look_in_store: bool = True) -> None:
        """Follow the recorded version; then, if asked, see whether the store has a newer one to decide on."""
        state = self.run_dir.read()
        if state.tag != self.engine.model.tag:
            await self._adopt(state.tag)
        if state.follows is None or not look_in_store:
            return
        newest = await asyncio.to_thread(_newest, state.follows)
        if newest is None or newest == state.tag or newest in state.refused:
            return
        with self.run_dir.try_lock() as mine:
            if not mine:
                return  # a sibling is deciding; its verdict is in the state file next time
            state = self.run_dir.read()
            if newest == state.tag or newest in state.refused:
                return
            try:
                model = await asyncio.to_thread(_validate_tag, newest, self.min_accuracy)
            except ModelRefused as refusal:
                state.refused[newest] = refusal.reason
                self.run_dir.write(state)
                logger.error("%s Still serving %s.", refusal, self.engine.model.tag)
                self.metrics.model_refusals.labels(version=_version(newest), reason=refusal.reason).inc()
                return
            state.tag = newest
            self.run_dir.write(state)
        self._swap(model)

    async def _adopt(self, tag: str) -> None:
        try:
            model = await asyncio.to_thread(_validate_tag, tag, self.min_accuracy)
        except ModelRefused as refusal:  # it passed a sibling's gate but fails here: keep the one serving
            logger.error("%s Still serving %s.", refusal, self.engine.model.tag)
            self.metrics.model_refusals.labels(version=_version(tag), reason=refusal.reason).inc()
            return
        self._swap(model)

    def _swap(self, model) -> None:
        """Serve ``model`` from the next model call on; free the previous one."""
        previous = self.engine.model
        self.engine.model = model  # one assignment: a batch reads it once, so no batch sees half of a switch
        info = self.metrics.model_info
        info.labels(tag=previous.tag, **_info_labels(previous)).set(0)
        info.labels(tag=model.tag, **_info_labels(model)).set(1)
        self.metrics.model_updates.inc()
        logger.info("Now serving %s (was %s)", model.tag, previous.tag)
        del previous
        release_memory()


def _version(tag: str) -> str:
    return tag.split(":", 1)[-1]


def _info_labels(model) -> dict[str, str]:
    metadata = model.metadata
    return {"test_accuracy": str(metadata.get("test_accuracy", "unknown")),
            "preprocessing_version": str(metadata.get("preprocessing_version", "unknown"))}


def _newest(tag: str) -> str | None:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound:
        return None


def _validate_tag(tag: str, min_accuracy: float):
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.get(tag)
    except NotFound as error:
        raise ModelRefused(tag, "not_found", "it is no longer in the model store") from error
    return validate(stored, min_accuracy)


def release_memory() -> None:
    """Collect the replaced model's reference cycles now, and give the memory back to the system. (The
    objects frozen at start-up, ``gc.freeze``, are TensorFlow's and Keras's, not the model's.)"""
    started = time.perf_counter()
    gc.collect()
    _trim_malloc()
    logger.info("Released the previous model in %.0f ms", 1000 * (time.perf_counter() - started))


def _trim_malloc() -> None:
    """Give freed memory back to the system (glibc keeps it in its arenas otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
