"""The person-like evaluation set: seeded renders in every style, all readable by the service, and the report."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.preprocessing import NUM_CLASSES
from training import personlike
from training.personlike import STYLES, build_personlike_set, evaluate_personlike, preprocess_uploads

SAMPLE = 60  # ten of each style


@pytest.fixture(scope="module")
def sample() -> personlike.PersonlikeSet:
    return build_personlike_set(limit=SAMPLE)


def test_writers_digits_come_from_a_package():
    images, labels = personlike.load_writer_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() == 1.0
    assert np.bincount(labels, minlength=NUM_CLASSES).min() >= 170  # about 180 of each digit


def test_renders_are_seeded(sample):
    assert build_personlike_set(limit=SAMPLE).uploads == sample.uploads
    assert build_personlike_set(seed=personlike.RENDER_SEED + 1, limit=SAMPLE).uploads != sample.uploads


def test_every_style_is_rendered_the_way_people_upload(sample):
    assert set(sample.styles) == set(STYLES)
    formats = set()
    for upload, style in zip(sample.uploads, sample.styles):
        image = Image.open(io.BytesIO(upload))
        formats.add(image.format)
        if style == "canvas":  # the drawing page's PNG: white strokes on its black 280x280 pad
            assert image.format == "PNG" and image.size == (personlike.CANVAS_SIDE, personlike.CANVAS_SIDE)
            assert np.median(np.asarray(image.convert("L"))) == 0
        else:  # dark ink on light paper, 36-150 px
            assert max(image.size) <= personlike.UPLOAD_SIDES[1] and min(image.size) >= personlike.UPLOAD_SIDES[0] // 2
            assert np.median(np.asarray(image.convert("L"))) > 128
        if style == "photo":
            assert image.format == "JPEG"
    assert formats == {"PNG", "JPEG"}


def test_every_upload_is_a_digit_the_service_reads(sample):
    digits = preprocess_uploads(sample.uploads)  # raises if any upload had no ink or could not be decoded
    assert digits.shape == (SAMPLE, 28, 28) and digits.dtype == np.uint8
    assert (digits.reshape(SAMPLE, -1).max(axis=1) == 255).all()


def test_halves_split_the_file_in_two():
    splits = personlike.split_of(11)
    assert splits.tolist() == ["tune"] * 5 + ["report"] * 6


def test_report_counts_each_split_class_and_style(sample):
    def oracle(batch: np.ndarray) -> np.ndarray:  # a model that is always right, by looking the answer up
        return np.eye(NUM_CLASSES)[sample.labels[: len(batch)]]

    result = evaluate_personlike(oracle, sample)
    assert result["tune"]["accuracy"] == 1.0 and result["tune"]["samples"] == SAMPLE
    assert set(result["tune"]["per_style_accuracy"]) == set(STYLES)
    assert "report" not in result  # the first 60 digits all fall in the tuning half

    def always_seven(batch: np.ndarray) -> np.ndarray:
        return np.tile(np.eye(NUM_CLASSES)[7], (len(batch), 1))

    result = evaluate_personlike(always_seven, sample)
    assert result["tune"]["accuracy"] == pytest.approx(np.mean(sample.labels == 7))
    assert result["tune"]["min_class_accuracy"] == 0.0


def test_without_scikit_learn_training_skips_it_and_says_so(monkeypatch, caplog):
    from training import train

    def unavailable(*args, **kwargs):
        raise personlike.PersonlikeUnavailable("The person-like set needs scikit-learn.")

    monkeypatch.setattr(train, "build_personlike_set", unavailable)
    assert train.evaluate_personlike_if_available(lambda batch: batch) is None
    assert "Skipping the person-like evaluation" in caplog.text


def test_plain_is_black_ink_on_white_paper_36_to_150_px():
    images, _ = personlike.load_writer_digits()
    rng = np.random.default_rng(0)
    formats = set()
    for image in images[:20]:
        upload = Image.open(io.BytesIO(personlike.render_upload(image, personlike.PLAIN, rng)))
        formats.add(upload.format)
        grey = np.asarray(upload.convert("L"))
        assert max(grey.shape) <= personlike.UPLOAD_SIDES[1] and min(grey.shape) >= personlike.UPLOAD_SIDES[0] // 2
        assert np.median(grey) >= 250 and grey.min() <= 40  # white paper, black ink, no light fall-off
    assert formats == {"PNG", "JPEG"}
    assert personlike.PLAIN not in STYLES  # the set itself keeps its six styles


def test_every_style_reads_each_digit_in_each_style(trained):
    from models.cnn import make_inference_fn

    infer = make_inference_fn(trained.model)
    both = personlike.every_style_accuracy(infer, styles=(personlike.PLAIN, "canvas"), limit=30)
    assert list(both) == [personlike.PLAIN, "canvas"]
    for row in both.values():
        assert row["samples"] == 30 and 0.0 <= row["accuracy"] <= 1.0
        assert set(row) >= {"tune", "per_class_accuracy"} and "report" not in row  # 30 digits: all in the first half
        assert row["tune"] == pytest.approx(row["accuracy"], abs=1e-5)
    # Each style has its own seeded renders: asked alone, it reads the same uploads.
    assert personlike.every_style_accuracy(infer, styles=("canvas",), limit=30)["canvas"] == both["canvas"]


def test_the_command_reads_the_registered_model_in_every_style(trained, tmp_path, capsys):
    import json

    out = tmp_path / "styles.json"
    assert personlike.main(["--limit", "20", "--styles", "plain", "scan", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "20 UCI digits in each style" in table
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["plain", "scan"]
    written = json.loads(out.read_text())
    assert written["model"].startswith("mnist_cnn:") and set(written["styles"]) == {"plain", "scan"}
    assert personlike.main(["--model", "mnist_cnn:notaversion", "--limit", "5"]) == 1
    assert "mnist_cnn:notaversion" in capsys.readouterr().err
    assert personlike.main(["--model", "Not A Tag!", "--limit", "5"]) == 1  # a sentence, not a traceback
    assert "is not a valid BentoML tag" in capsys.readouterr().err
    for limit in ("0", "-3", "many"):  # a usage error (exit 2) that names the option
        with pytest.raises(SystemExit) as exit_:
            personlike.main(["--limit", limit])
        error = capsys.readouterr().err
        assert exit_.value.code == 2 and "--limit: must be a whole number of digits, 1 or more" in error


def test_no_render_is_taken_for_a_sheet_on_a_desk():
    """The sheet-on-a-desk step of normalize_digit leaves every style's renders as they are (light strokes
    on the canvas's dark pad included): the person-like figures measured before it stand."""
    from models.preprocessing import WORKING_SIZE, _only_the_sheet, _reduce_to_working_size
    from service.imaging import decode_image

    images, _ = personlike.load_writer_digits()
    for style in personlike.EVERY_STYLE:
        rng = np.random.default_rng(personlike.EVERY_STYLE_SEED)
        for index, image in enumerate(images[:300]):
            upload = personlike.render_upload(image, style, rng)
            decoded = decode_image(upload, max_bytes=len(upload), max_pixels=10**6, reduce_to=WORKING_SIZE)
            gray = _reduce_to_working_size(np.asarray(decoded))  # what normalize_digit asks about
            assert np.array_equal(_only_the_sheet(gray), gray), f"{style} render {index}"
