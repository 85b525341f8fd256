"""Real uploads are not MNIST: the service's normalisation is what keeps accuracy on a person's photo.

MNIST test digits are rendered the way a person's upload looks (dark ink on light paper, off-centre,
scaled up, uneven light, noise, JPEG) and classified through the live service. Accuracy stays close to
the clean test accuracy; the naive pipeline most tutorials ship (grayscale, resize to 28x28, /255)
collapses to about chance on the very same files.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.uploads import encode, render_as_upload

pytestmark = pytest.mark.slow

SAMPLES = 300  # 30 of each digit from the subset's test split


@pytest.fixture(scope="module")
def uploads(subset_data) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    indices = np.concatenate([np.flatnonzero(subset_data.y_test == d)[:SAMPLES // 10] for d in range(10)])
    digits, labels = subset_data.x_test[indices], subset_data.y_test[indices]
    return [render_as_upload(digit, rng) for digit in digits], digits, labels


def naive_prediction(model, data: bytes) -> int:
    """What a tutorial server does: decode, grayscale, resize to 28x28, scale, predict."""
    image = Image.open(io.BytesIO(data)).convert("L").resize((28, 28))
    x = np.asarray(image, np.float32)[np.newaxis, :, :, np.newaxis] / 255.0
    return int(model(x, training=False).numpy().argmax())


def test_uploads_through_the_service_stay_close_to_clean_accuracy(trained, service_client, uploads):
    files, digits, labels = uploads

    def accuracy(payloads: list[bytes]) -> float:
        answers = [service_client.post("/classify", files={"image": ("u.jpg", p, "image/jpeg")}) for p in payloads]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
        return float(np.mean([a.json()["digit"] == label for a, label in zip(answers, labels)]))

    clean = accuracy([encode(digit, "PNG") for digit in digits])
    as_uploaded = accuracy(files)
    naive = float(np.mean([naive_prediction(trained.model, data) == label for data, label in zip(files, labels)]))

    print(f"clean {clean:.3f}, uploads through the service {as_uploaded:.3f}, naive resize {naive:.3f}")
    assert as_uploaded >= clean - 0.05
    assert naive <= 0.35
