"""`make bento`: bentoml build packs the service, its code and the registered model, GPU-capable image spec.

No Docker engine runs here, so the image itself is not built (`bentoml containerize` needs one); the
test checks the Dockerfile BentoML generated for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_bentoml_build_packs_service_and_model(trained, bentoml_home):
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    result = subprocess.run([bentoml_cli, "build", "--output", "tag"], capture_output=True, text=True,
                            env={**os.environ, "BENTOML_HOME": str(bentoml_home)}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = bentoml_home / "bentos" / name / version

    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "service:DigitClassifier"
    (service_info,) = info["services"]
    assert [model["tag"] for model in service_info["models"]] == [trained.tag]
    for source in ("service/service.py", "service/imaging.py", "models/preprocessing.py", "training/registry.py"):
        assert (bento / "src" / source).is_file(), source
    assert not (bento / "src" / "tests").exists()

    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "tensorflow[and-cuda]" in requirements
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM nvidia/cuda:12.6" in dockerfile
