"""End-to-end training on the bundled subset, the reports it writes, and the registry round trip."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import SUBSET_ACCURACY_FLOOR

pytestmark = pytest.mark.slow


def test_subset_training_reaches_the_floor(trained):
    assert trained.metrics["test_accuracy"] >= SUBSET_ACCURACY_FLOOR
    assert trained.metrics["data_source"] == "subset"
    assert trained.metrics["samples"] == {"train": 3600, "validation": 400, "test": 1000}


def test_every_run_writes_its_reports(trained):
    reports = trained.metrics  # the same dict that was written to metrics.json
    assert set(reports["per_class_accuracy"]) == {str(d) for d in range(10)}
    matrix = np.array(reports["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 1000
    assert reports["hyperparameters"]["batch_size"] == 64
    assert reports["versions"]["keras"].startswith("3.")
    assert len(reports["history"]["val_accuracy"]) == 8


def test_report_files_exist(trained):
    for name in ("metrics.json", "training_curves.png", "confusion_matrix.png"):
        assert (trained.reports_dir / name).stat().st_size > 0
    assert json.loads((trained.reports_dir / "metrics.json").read_text())["model_tag"] == trained.tag


def test_registered_model_round_trip(trained, subset_data):
    from models.cnn import make_inference_fn
    from models.preprocessing import to_model_input
    from training import registry

    stored = registry.get_stored(trained.tag)
    metadata = stored.info.metadata
    assert metadata["test_accuracy"] == pytest.approx(trained.metrics["test_accuracy"], abs=1e-5)
    assert metadata["data_source"] == "subset"
    assert metadata["input_spec"]["shape"] == [28, 28, 1]
    assert metadata["preprocessing_version"]
    assert metadata["hyperparameters"]["epochs"] == 8
    assert json.loads(open(stored.path_of(registry.CONFIG_FILE)).read())["seed"] == 42

    reloaded = registry.load_model(stored)
    images = to_model_input(subset_data.x_test[:200])
    np.testing.assert_array_equal(make_inference_fn(reloaded)(images), make_inference_fn(trained.model)(images))


def test_latest_tag_resolves_to_the_new_model(trained):
    from training import registry

    assert str(registry.get_stored("mnist_cnn:latest").tag) == trained.tag


def test_missing_model_says_to_run_make_train():
    from training import registry

    with pytest.raises(registry.ModelNotRegistered, match="make train"):
        registry.get_stored("mnist_cnn:doesnotexist")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"model.keras": b"not a keras archive"}, "not a .keras archive"),
        ({"zip": {"config.json": "{}"}}, "lacks model.weights.h5"),
        ({"zip": {"config.json": '{"class_name": "NoSuchLayer"}', "model.weights.h5": "x"}}, "could not be loaded"),
    ],
)
def test_damaged_model_is_a_clear_error(trained, content, message):
    import io
    import zipfile

    import bentoml

    from training import registry

    if "zip" in content:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, text in content["zip"].items():
                archive.writestr(name, text)
        content = {"model.keras": buffer.getvalue()}
    with bentoml.models.create(registry.MODEL_NAME, metadata={}) as broken:
        open(broken.path_of(registry.MODEL_FILE), "wb").write(content["model.keras"])
    try:
        with pytest.raises(registry.ModelLoadError, match=message) as error:
            registry.load_model(registry.get_stored(str(broken.tag)))
        assert "make train" in str(error.value)
    finally:
        bentoml.models.delete(str(broken.tag))


def test_every_run_reports_the_person_like_set(trained):
    from training import registry

    personlike = trained.metrics["personlike"]
    for split in ("tune", "report"):
        assert personlike[split]["samples"] in (898, 899)  # 1,797 digits in two halves
        assert set(personlike[split]["per_class_accuracy"]) == {str(d) for d in range(10)}
        assert set(personlike[split]["per_style_accuracy"]) == {"photo", "scan", "marker", "pen", "lowres", "canvas"}
        assert 0.3 < personlike[split]["accuracy"] <= 1.0  # far above chance even for the small test model
    assert (trained.reports_dir / "personlike_confusion_matrix.png").stat().st_size > 0
    metadata = registry.get_stored(trained.tag).info.metadata
    assert metadata["personlike_accuracy"] == pytest.approx(personlike["report"]["accuracy"], abs=1e-5)
    assert metadata["personlike_min_class_accuracy"] == personlike["report"]["min_class_accuracy"]


def test_the_people_preset_trains_on_upload_like_digits(tmp_path):
    """One short epoch of the default preset on the subset: the augmentation pipeline runs inside fit."""
    from training.config import make_config
    from training.train import train

    config = make_config("people", data="subset", epochs=1, batch_size=64, validation_fraction=0.1)
    result = train(config, reports_dir=tmp_path, register=False)
    assert result.metrics["hyperparameters"]["augment"] == "uploads"
    assert result.metrics["hyperparameters"]["augment_settings"]["low_resolution_sizes"] == (7, 12)
    assert result.metrics["test_accuracy"] > 0.7
    assert result.tag is None and result.metrics["personlike"]["report"]["accuracy"] > 0.3
    # The preset reads digits with their strokes normalised, then straightened; its fit's batches are only
    # straightened.
    assert result.metrics["preprocessing_version"] == "mnist-norm-1-strokes-deskew"
    assert config.fit_preprocessing_version == "mnist-norm-1-deskew"


def test_deskew_alone_trains_on_straightened_digits(tmp_path):
    """Deskew without augmentation: batches are made in NumPy too, and the model records its pipeline."""
    from training.config import make_config
    from training.train import model_metadata, train

    config = make_config("seed", data="subset", epochs=2, batch_size=64, validation_fraction=0.1, deskew=True)
    result = train(config, reports_dir=tmp_path, register=False)
    assert result.metrics["test_accuracy"] > 0.8
    assert model_metadata(result.metrics)["preprocessing_version"] == "mnist-norm-1-deskew"
    assert make_config("seed").preprocessing_version == "mnist-norm-1"  # the article's run is unchanged


@pytest.mark.parametrize("preset", ["seed", "people"])
def test_the_fit_pipeline_runs_without_tf_data_autotuner(preset, subset_data):
    """With tf.data's autotuner on, the finished fit's iterator waited for the autotuner's model thread before
    fit returned: 20-52 s after the last batch on the 2-core machine (found in `make serve`'s fit; README). The
    pipeline sets its own parallelism and prefetch, so that thread never starts."""
    from training.config import make_config
    from training.train import PIPELINE_PARALLELISM, training_dataset

    assert PIPELINE_PARALLELISM == len(os.sched_getaffinity(0))  # a NumPy batch on every core we may use
    config = make_config(preset, batch_size=32)
    dataset = training_dataset(subset_data.x_train[:100], subset_data.y_train[:100], config)
    assert dataset.options().autotune.enabled is False
    x, y = next(iter(dataset))
    assert x.shape == (32, 28, 28, 1) and y.shape == (32, 10)


def test_a_budget_too_small_trains_the_floor_and_the_probe_leaves_no_trace(tmp_path, caplog):
    """A run with a fit budget its machine cannot meet trains MIN_BUDGETED_EPOCHS, says so, and makes the very
    network an unbudgeted run of that many epochs makes: the probe's network and batches are thrown away."""
    from training.config import make_config
    from training.train import MIN_BUDGETED_EPOCHS, train

    settings = {"data": "subset", "batch_size": 64, "validation_fraction": 0.1, "deskew": True}
    budgeted = train(make_config("seed", epochs=MIN_BUDGETED_EPOCHS + 2, fit_budget_s=0.01, **settings),
                     reports_dir=tmp_path / "budgeted", register=False)
    plan = budgeted.metrics["fit_plan"]
    assert plan["epochs"] == MIN_BUDGETED_EPOCHS and plan["most_epochs"] == MIN_BUDGETED_EPOCHS + 2
    assert plan["step_s"] > 0 and plan["validation_s"] > 0 and plan["epoch_s"] > plan["step_s"]
    assert budgeted.metrics["hyperparameters"]["epochs"] == MIN_BUDGETED_EPOCHS  # what was trained, recorded
    assert len(budgeted.metrics["history"]["loss"]) == MIN_BUDGETED_EPOCHS
    assert f"training {MIN_BUDGETED_EPOCHS} anyway" in caplog.text

    unbudgeted = train(make_config("seed", epochs=MIN_BUDGETED_EPOCHS, **settings),
                       reports_dir=tmp_path / "unbudgeted", register=False)
    assert unbudgeted.metrics["fit_plan"] is None
    for ours, theirs in zip(budgeted.model.get_weights(), unbudgeted.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
