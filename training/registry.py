"""The BentoML model store: register a trained CNN with its metadata, and load it back.

A model is stored as a native ``.keras`` file inside a new version of ``mnist_cnn``; the deprecated
``bentoml.keras`` framework module is not used. The training config is saved beside the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

logger = logging.getLogger(__name__)

MODEL_NAME = "mnist_cnn"
MODEL_FILE = "model.keras"
CONFIG_FILE = "train_config.json"


class ModelNotRegistered(RuntimeError):
    """No version of the model is in the store."""


class ModelLoadError(RuntimeError):
    """The stored model exists but cannot be loaded."""


def git_commit() -> str:
    """The working tree's commit, with ``-dirty`` when it has uncommitted changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def register(model, metadata: dict, config: dict, labels: dict | None = None) -> str:
    """Save ``model`` as a new version of ``mnist_cnn`` and return its tag (``mnist_cnn:<version>``)."""
    with bentoml.models.create(MODEL_NAME, metadata=metadata, labels=labels or {}) as stored:
        model.save(stored.path_of(MODEL_FILE))
        Path(stored.path_of(CONFIG_FILE)).write_text(json.dumps(config, indent=2))
    tag = str(stored.tag)
    logger.info("Registered %s in the BentoML model store", tag)
    return tag


def get_stored(tag: str = f"{MODEL_NAME}:latest") -> bentoml.Model:
    """The store entry for ``tag``, or ModelNotRegistered with a sentence saying what to run."""
    try:
        return bentoml.models.get(tag)
    except NotFound:
        raise ModelNotRegistered(
            f"No model {tag!r} is registered in the BentoML model store. Run `make train` to train and register one."
        ) from None


KERAS_ARCHIVE_MEMBERS = ("config.json", "model.weights.h5")  # what every Keras 3 .keras file holds


def verify_archive(stored: bentoml.Model) -> Path:
    """Check, without TensorFlow, that the entry's .keras file is whole: ModelLoadError if not.

    Cheap enough for the serving process to run before it starts any worker, so a damaged model stops
    ``bentoml serve`` at once instead of leaving workers that crash and restart forever.
    """
    path = Path(stored.path_of(MODEL_FILE))
    if not path.is_file():
        raise ModelLoadError(f"Model {stored.tag} has no {MODEL_FILE} in {path.parent}; re-run `make train`.")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every member and checks its CRC
            missing = [name for name in KERAS_ARCHIVE_MEMBERS if name not in archive.namelist()]
    except zipfile.BadZipFile:
        raise ModelLoadError(f"Model {stored.tag}: {path} is not a .keras archive; re-run `make train`.") from None
    if damaged or missing:
        problem = f"member {damaged} is damaged" if damaged else f"it lacks {', '.join(missing)}"
        raise ModelLoadError(f"Model {stored.tag}: {path} is incomplete ({problem}); re-run `make train`.")
    return path


def load_model(stored: bentoml.Model):
    """Load the Keras model inside a store entry; ModelLoadError with a sentence when it is unusable."""
    import keras

    path = verify_archive(stored)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive; all mean the same here
        raise ModelLoadError(f"Model {stored.tag} at {path} could not be loaded ({error}); re-run `make train`.") from error


def model_input_of(stored: bentoml.Model):
    """The function that makes this entry's model input from uint8 digits (n, 28, 28), by the preprocessing
    pipeline its metadata names (``models.preprocessing.model_input_function``); ValueError for one this
    code does not know."""
    from models.preprocessing import model_input_function

    return model_input_function(pipeline_of(stored))


def pipeline_of(stored: bentoml.Model) -> str:
    """The preprocessing pipeline this entry's metadata names (the first, for entries from before it was
    recorded); ValueError for one this code does not know."""
    from models.preprocessing import PREPROCESSING_VERSION, model_input_function

    pipeline = stored.info.metadata.get("preprocessing_version")
    pipeline = PREPROCESSING_VERSION if pipeline is None else pipeline
    model_input_function(pipeline)  # raises ValueError, naming the pipelines this code knows
    return pipeline


def promote(tag: str) -> str:
    """Register a copy of an existing version as the newest version, and return the new tag.

    This is the rollback: a server following ``mnist_cnn:latest`` moves to the copy as to any new version
    (through its gate, with no restart), and nothing is retrained or deleted.
    """
    stored = get_stored(tag)
    verify_archive(stored)
    metadata = {**stored.info.metadata, "promoted_from": str(stored.tag)}
    labels = {**stored.info.labels, "promoted_from": stored.tag.version}
    with bentoml.models.create(MODEL_NAME, metadata=metadata, labels=labels) as copy:
        for name in (MODEL_FILE, CONFIG_FILE):
            source = Path(stored.path_of(name))
            if source.exists():
                shutil.copyfile(source, copy.path_of(name))
    logger.info("Registered %s as a copy of %s", copy.tag, stored.tag)
    return str(copy.tag)


def versions() -> list[str]:
    """Every registered version of the model, newest first."""
    return [str(model.tag) for model in sorted(bentoml.models.list(MODEL_NAME),
                                                key=lambda model: model.info.creation_time, reverse=True)]


def main(argv: list[str] | None = None) -> int:
    """``python -m training.registry --check``: exit 0 when a model is registered, 1 otherwise.
    ``--promote TAG`` registers a copy of TAG as the newest version (rollback); ``--previous`` names the
    version registered before the newest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 0 if a model is registered, else 1")
    parser.add_argument("--tag", default=f"{MODEL_NAME}:latest")
    parser.add_argument("--promote", metavar="TAG", help="register a copy of TAG as the newest version (rollback)")
    parser.add_argument("--previous", action="store_true", help="print the version registered before the newest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.promote:
            print(promote(args.promote))
            return 0
        if args.previous:
            history = versions()
            if len(history) < 2:
                print(f"Only {len(history)} version(s) of {MODEL_NAME} are registered: nothing to roll back to.",
                      file=sys.stderr)
                return 1
            print(history[1])
            return 0
        stored = get_stored(args.tag)
    except (ModelNotRegistered, ModelLoadError) as error:
        print(error, file=sys.stderr)
        return 1
    if not args.check:
        print(json.dumps({"tag": str(stored.tag), **stored.info.metadata}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
