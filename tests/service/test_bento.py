"""`make bento`: bentoml build packs the service, its code and the registered model, GPU-capable image spec.

No Docker engine runs here, so the image itself is not built (`bentoml containerize` needs one); the
test checks the Dockerfile BentoML generated for it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]

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


def _installed_with(requirements: list[str]) -> set[str]:
    """The distributions these requirements install on this machine, their own requirements included (an
    extra's only where a requirement names it), as canonical names."""
    found, pending = set(), [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        try:
            needs = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:  # not for this machine (the CUDA wheels, say)
            continue
        for text in needs:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra})
                                            for extra in (*requirement.extras, "")):
                pending.append(needed)
    return found


def test_the_bento_requires_every_package_its_code_imports():
    """The Bento installs only bentofile.yaml's packages: each third-party module that the code it packs
    imports must come with one of them (before, fastapi did not, and the Bento's service could not start)."""
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    packed = [path for pattern in bentofile["include"] if pattern.endswith(".py") for path in ROOT.glob(pattern)]
    modules = set()
    for path in packed:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    ours = {"service", "models", "training"}
    third_party = sorted(module for module in modules if module not in sys.stdlib_module_names | ours)
    distributions = importlib.metadata.packages_distributions()
    installed = _installed_with(bentofile["python"]["packages"])
    missing = [module for module in third_party
               if not any(canonicalize_name(name) in installed for name in distributions[module])]
    assert not missing, f"bentofile.yaml installs nothing that provides {missing}"
