"""The load test's request bodies: real digits that decode to themselves, in multipart a server can parse."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from loadtests.payloads import UPLOAD_KINDS, bad_inputs, digit_batches, digit_uploads, encode_digit, multipart, on_paper


@pytest.fixture(scope="module")
def digits(subset_data):
    return subset_data.x_test[:20], subset_data.y_test[:20]


def parse_form(body) -> list[tuple[str, str | None, bytes]]:
    """Parse a multipart body the way the service does (Starlette's parser): (field, filename, bytes) each."""
    import anyio
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def parse():
        sent = False

        async def receive():
            nonlocal sent
            message = {"type": "http.request", "body": b"" if sent else body.data, "more_body": False}
            sent = True
            return message

        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
                 "headers": [(b"content-type", body.content_type.encode())]}
        form = await Request(scope, receive).form()
        parts = []
        for field, value in form.multi_items():
            if isinstance(value, UploadFile):
                parts.append((field, value.filename, await value.read()))
            else:
                parts.append((field, None, value.encode()))
        return parts

    return anyio.run(parse)


def test_png_uploads_are_the_mnist_digits_exactly(digits):
    images, labels = digits
    uploads = digit_uploads(images, labels, kinds=("png",))
    assert [u.label for u in uploads] == labels.tolist()
    for upload, image in zip(uploads, images):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(upload.image))), image)


def test_every_kind_is_a_readable_image_of_the_right_polarity(digits):
    digit = digits[0][0]
    for kind in UPLOAD_KINDS:
        decoded = np.asarray(Image.open(io.BytesIO(encode_digit(digit, kind))).convert("L"))
        border = np.concatenate([decoded[0], decoded[-1]])
        if kind == "paper":
            assert decoded.shape == (112, 112) and border.mean() > 200  # dark ink on light paper
        else:
            assert decoded.shape == (28, 28) and border.mean() < 30  # MNIST: light ink on black
    assert np.array_equal(on_paper(np.zeros((28, 28), np.uint8)), np.full((112, 112), 235, np.uint8))
    with pytest.raises(ValueError, match="Unknown upload kind"):
        encode_digit(digit, "bmp")


def test_a_single_upload_body_parses_to_the_image_field(digits):
    upload = digit_uploads(*digits, kinds=("jpeg",))[0]
    assert parse_form(upload.body) == [("image", "digit0.jpg", upload.image)]


def test_a_batch_body_carries_its_images_in_the_order_of_its_labels(digits):
    uploads = digit_uploads(*digits, kinds=("png",))
    batch = digit_batches(uploads, batch_size=5, count=1, seed=3)[0]
    parts = parse_form(batch.body)
    assert [field for field, _, _ in parts] == ["images"] * 5
    by_image = {u.image: u.label for u in uploads}
    assert tuple(by_image[data] for _, _, data in parts) == batch.labels
    with pytest.raises(ValueError, match="positive"):
        digit_batches(uploads, batch_size=0, count=1)


def test_bad_inputs_each_expect_a_4xx():
    cases = {bad.name: bad for bad in bad_inputs()}
    assert set(cases) == {"not_an_image", "empty", "blank_canvas", "pickle", "url_field"}
    assert all(400 <= bad.status < 500 for bad in cases.values())
    assert cases["pickle"].body.content_type == "application/vnd.bentoml+pickle"
    assert parse_form(cases["url_field"].body) == [("image", None, b"http://127.0.0.1:9/digit.png")]
    assert parse_form(cases["empty"].body) == [("image", "empty.png", b"")]


def test_multipart_keeps_binary_bytes_intact():
    data = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    assert parse_form(multipart([("image", "x.png", "image/png", data)])) == [("image", "x.png", data)]
