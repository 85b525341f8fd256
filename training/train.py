"""Train the seed's CNN on MNIST, evaluate it, register it in the BentoML store and write reports.

    python -m training                   # the default preset, "people": trained to read people's uploads
    python -m training --preset seed     # the article's run: 2 epochs of batch 256
    python -m training --preset best     # longer, for the best accuracy
    python -m training --data subset --epochs 1

The run reads top to bottom: prepare the data, build the model, train, evaluate, register, report.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from models.cnn import build_cnn, make_inference_fn
from models.preprocessing import INPUT_SHAPE, NUM_CLASSES, model_input_function, to_model_input
from service.device import usable_cpus
from training import registry
from training.augment import augment_batch, warp_clean
from training.config import DEFAULT_PRESET, PRESETS, TrainConfig, make_config
from training.data import SOURCES, MnistData, load_mnist
from training.evaluate import classification_report, predict_probabilities
from training.personlike import PersonlikeUnavailable, build_personlike_set, evaluate_personlike
from training.reports import plot_confusion_matrix, plot_history, write_metrics

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: object  # keras.Model
    metrics: dict
    tag: str | None
    reports_dir: Path


def split_validation(data: MnistData, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Hold ``fraction`` of the training images out, chosen at random with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(data.y_train))
    n_validation = int(round(len(order) * fraction))
    fit_idx, val_idx = order[n_validation:], order[:n_validation]
    return data.x_train[fit_idx], data.y_train[fit_idx], data.x_train[val_idx], data.y_train[val_idx]


def upload_augmenter(config: TrainConfig):
    """A NumPy function (batch number, uint8 digits, labels) -> augmented digits as model input.

    Each batch's random numbers come from (seed, batch number), so a run is repeatable however tf.data
    schedules the batches. With ``augment="uploads"``, ``augment_fraction`` of each batch goes through
    ``augment_batch``, and ``clean_warp_fraction`` of the rest through ``warp_clean``; then the whole batch
    becomes model input by the config's fit pipeline (``fit_preprocessing_version``).
    """
    model_input = model_input_function(config.fit_preprocessing_version)
    fraction = config.augment_fraction if config.augment == "uploads" else 0.0
    # One uniform draw per digit picks both shares: below ``fraction`` an upload, from ``warped_from`` up a
    # warped MNIST digit (none when clean_warp_fraction is 0: the draw is below 1), in between a clean one.
    warped_from = 1.0 - config.clean_warp_fraction * (1.0 - fraction)

    def augment(batch_number: np.ndarray, digits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([config.seed, int(batch_number)])
        draw = rng.random(len(digits))
        chosen = draw < fraction
        warped = ~chosen & (draw >= warped_from)
        digits = digits.copy()
        if chosen.any():
            digits[chosen] = augment_batch(digits[chosen], labels[chosen], rng, config.augment_settings)
        if warped.any():
            digits[warped] = warp_clean(digits[warped], rng)
        return model_input(digits)

    return augment


def in_numpy(config: TrainConfig) -> bool:
    """Whether batches are made in NumPy (augmented, or deskewed) rather than only scaled in the graph."""
    return config.augment == "uploads" or config.clean_warp_fraction > 0.0 or config.deskew


# How the fit's pipeline runs, set by hand rather than by tf.data's autotuner. The autotuner runs a model
# thread that a finished iterator, when destroyed, waits for until that thread's next wake-up: seconds to a
# minute after the fit's last batch (20-52 s measured at the end of the fit on the 2-core AVX2 machine, time
# that counted against `make serve`'s 5-minute start). NumPy batches are made on every core the process may
# use, two batches ahead of the step; the fit's pace is the same (README, "A fit that ends when its last
# epoch ends").
PIPELINE_PARALLELISM = usable_cpus()
PREFETCH_BATCHES = 2


def training_dataset(images: np.ndarray, labels: np.ndarray, config: TrainConfig):
    """A shuffled, batched tf.data pipeline over uint8 training digits (n, 28, 28) and integer labels,
    augmented when asked; it yields model inputs and one-hot labels."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(len(labels), seed=config.seed, reshuffle_each_iteration=True).batch(config.batch_size)
    one_hot = lambda y: tf.one_hot(tf.cast(y, tf.int32), NUM_CLASSES)  # noqa: E731
    if in_numpy(config):
        augment = upload_augmenter(config)

        def augment_graph(batch_number, batch):
            x, y = batch
            x = tf.numpy_function(augment, [batch_number, x, y], tf.float32, stateful=False)
            return tf.ensure_shape(x, (None, *INPUT_SHAPE)), one_hot(y)

        # Repeated here rather than restarted by Keras each epoch, so batch numbers never repeat.
        dataset = tf.data.Dataset.zip(tf.data.Dataset.counter(), dataset.repeat(config.epochs))
        dataset = dataset.map(augment_graph, num_parallel_calls=PIPELINE_PARALLELISM, deterministic=True)
    else:  # the same scaling as to_model_input, in the graph
        dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32)[..., tf.newaxis] / 255.0, one_hot(y)))
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)


def resolve_precision(precision: str) -> str:
    """"auto" becomes "bfloat16" on a CPU with bfloat16 instructions and no visible GPU, else "float32"."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: keep to float32
        return "float32"
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    return "bfloat16" if native and not tf.config.list_physical_devices("GPU") else "float32"


@contextlib.contextmanager
def compute_precision(precision: str):
    """Build and train inside Keras's "mixed_bfloat16" policy when asked; the old policy comes back after."""
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """A float for the constant schedule, or a cosine decay to zero over the whole run."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    import keras

    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.epochs * steps_per_epoch)


# A fit with a budget (TrainConfig.fit_budget_s) first times a throwaway copy of the network on the run's own
# batches: the first PROBE_WARMUP_STEPS (tracing, the pipeline filling) untimed, then PROBE_STEPS timed, and
# one validation pass. A few seconds; the run then trains as many whole epochs as fit in what is left.
PROBE_WARMUP_STEPS = 3
PROBE_STEPS = 12
# Fewer epochs than this and the model is not worth serving: a machine too slow to fit them in the budget
# trains this many anyway, and says it will be late.
MIN_BUDGETED_EPOCHS = 3


@dataclass(frozen=True)
class FitPlan:
    """How many epochs a budgeted run trains, and the measurements that chose it (in metrics.json)."""

    budget_s: float
    probe_s: float  # the probe itself, counted against the budget
    step_s: float  # one training batch, pipeline included
    validation_s: float  # one pass over the validation data
    epoch_s: float  # the estimate for one epoch: its batches and its validation pass
    epochs: int
    most_epochs: int  # the config's epochs


def epochs_within_budget(budget_s: float, epoch_s: float, most: int) -> int:
    """Whole epochs of ``epoch_s`` seconds that fit in ``budget_s``: at most ``most``, at least
    MIN_BUDGETED_EPOCHS (or ``most``, if that is fewer)."""
    fitting = int(budget_s // epoch_s) if epoch_s > 0 else most
    return min(most, max(MIN_BUDGETED_EPOCHS, fitting))


def plan_fit(config: TrainConfig, x_fit: np.ndarray, y_fit: np.ndarray, validation: tuple[np.ndarray, np.ndarray],
             steps_per_epoch: int, precision: str) -> FitPlan:
    """Measure this machine's pace on the run's own pipeline and choose the epochs for ``fit_budget_s``.

    The probe's network and batches are thrown away; the caller seeds the run again afterwards, so the
    fit that follows is the one an unbudgeted run of the planned epochs would make.
    """
    started = time.perf_counter()
    batches = iter(training_dataset(x_fit, y_fit, config).repeat())
    with compute_precision(precision):
        probe = build_cnn(learning_rate=config.learning_rate)
        for x, y in itertools.islice(batches, PROBE_WARMUP_STEPS):
            probe.train_on_batch(x, y)
        timed_from = time.perf_counter()
        for x, y in itertools.islice(batches, PROBE_STEPS):
            probe.train_on_batch(x, y)
        step_s = (time.perf_counter() - timed_from) / PROBE_STEPS
        validation_from = time.perf_counter()
        probe.evaluate(*validation, verbose=0)  # as fit's validation pass does it, batches of Keras's default
        validation_s = time.perf_counter() - validation_from
    probe_s = time.perf_counter() - started
    epoch_s = steps_per_epoch * step_s + validation_s
    left_s = config.fit_budget_s - probe_s
    epochs = epochs_within_budget(left_s, epoch_s, config.epochs)
    plan = FitPlan(budget_s=config.fit_budget_s, probe_s=round(probe_s, 1), step_s=round(step_s, 4),
                   validation_s=round(validation_s, 2), epoch_s=round(epoch_s, 1), epochs=epochs,
                   most_epochs=config.epochs)
    logger.info("Fit budget %.0f s: %.0f ms a batch, %.1f s a validation pass, so about %.0f s an epoch here: "
                "%d of %d epochs", plan.budget_s, 1000 * step_s, validation_s, epoch_s, epochs, config.epochs)
    if epochs * epoch_s > left_s:
        logger.warning("This machine fits fewer than %d epochs in %.0f s; training %d anyway (about %.0f s)",
                       MIN_BUDGETED_EPOCHS, plan.budget_s, epochs, epochs * epoch_s)
    return plan


def train(config: TrainConfig, reports_dir: Path = Path("reports"), register: bool = True) -> TrainResult:
    """Run the whole pipeline for ``config`` and return the model, its metrics and its store tag."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TensorFlow in one call

    # Prepare the data.
    model_input = model_input_function(config.preprocessing_version)
    data = load_mnist(config.data)
    x_fit, y_fit, x_val, y_val = split_validation(data, config.validation_fraction, config.seed)
    logger.info("Training on %d images, holding out %d for validation, testing on %d",
                len(y_fit), len(y_val), len(data.y_test))
    if not len(y_val):  # the seed's choice: watch the test set (see TrainConfig.validation_fraction)
        x_val, y_val = data.x_test, data.y_test
    validation = (model_input(x_val), keras.utils.to_categorical(y_val, NUM_CLASSES))
    steps_per_epoch = int(np.ceil(len(y_fit) / config.batch_size))
    precision = resolve_precision(config.precision)

    # With a budget, choose the epochs by this machine's pace; then seed again, so that the probe leaves
    # no trace in the run.
    fit_plan = None
    if config.fit_budget_s:
        fit_plan = plan_fit(config, x_fit, y_fit, validation, steps_per_epoch, precision)
        config = replace(config, epochs=fit_plan.epochs)
        keras.utils.set_random_seed(config.seed)

    # Build the model, and train it.
    fit_data = training_dataset(x_fit, y_fit, config)
    with compute_precision(precision):
        model = build_cnn(learning_rate=learning_rate(config, steps_per_epoch))
        history = model.fit(fit_data, epochs=config.epochs, validation_data=validation,
                            steps_per_epoch=steps_per_epoch if in_numpy(config) else None,
                            shuffle=False,  # the tf.data pipeline shuffles, with the seed
                            verbose=1 if sys.stdout.isatty() else 2)
    if precision != "float32":  # serve the same weights in a float32 copy of the very same network
        trained_model, model = model, build_cnn()
        model.set_weights(trained_model.get_weights())
    fit_seconds = time.perf_counter() - started

    # Evaluate on the test set, through the same preprocessing and compiled call the service uses.
    infer = make_inference_fn(model)
    probabilities = predict_probabilities(infer, data.x_test, model_input)
    report = classification_report(data.y_test, probabilities)
    test_loss = float(-np.log(np.clip(probabilities[np.arange(len(data.y_test)), data.y_test], 1e-7, 1)).mean())
    logger.info("Test accuracy %.4f (loss %.4f) after %.1f s", report["accuracy"], test_loss, fit_seconds)

    # Evaluate on person-like uploads (other writers, rendered as people upload), the service's way.
    personlike = evaluate_personlike_if_available(infer, model_input)

    metrics = {
        "test_accuracy": report["accuracy"],
        "test_loss": test_loss,
        "per_class_accuracy": report["per_class_accuracy"],
        "confusion_matrix": report["confusion_matrix"],
        "personlike": personlike,
        "data_source": data.source,
        "data_details": data.details,
        "samples": {"train": len(y_fit), "validation": len(y_val) if config.validation_fraction else "test set",
                    "test": len(data.y_test)},
        "hyperparameters": config.to_dict(),
        "precision": precision,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "fit_seconds": round(fit_seconds, 1),
        "fit_plan": asdict(fit_plan) if fit_plan else None,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": sys.version.split()[0]},
        "preprocessing_version": config.preprocessing_version,
        "git_commit": registry.git_commit(),
    }

    # Register.
    tag = None
    if register:
        tag = registry.register(model, metadata=model_metadata(metrics), config=config.to_dict(),
                                labels={"preset": config.preset, "data": data.source.split(":")[0]})
    metrics["model_tag"] = tag
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)

    # Report.
    reports_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(reports_dir / "metrics.json", metrics)
    plot_history(reports_dir / "training_curves.png", metrics["history"])
    plot_confusion_matrix(reports_dir / "confusion_matrix.png", report["confusion_matrix"], report["accuracy"])
    if personlike:
        plot_confusion_matrix(reports_dir / "personlike_confusion_matrix.png", personlike["report"]["confusion_matrix"],
                              personlike["report"]["accuracy"], title="Person-like (report half)")
    logger.info("Reports written to %s", reports_dir)
    return TrainResult(model=model, metrics=metrics, tag=tag, reports_dir=reports_dir)


def evaluate_personlike_if_available(infer, model_input=to_model_input) -> dict | None:
    """The person-like set's report (training/personlike.py), or None when scikit-learn, which ships its
    digits, is not installed (a plain ``pip install .``, as in the Docker image)."""
    try:
        personlike = build_personlike_set()
    except PersonlikeUnavailable as error:
        logger.warning("Skipping the person-like evaluation: %s", error)
        return None
    result = evaluate_personlike(infer, personlike, model_input=model_input)
    logger.info("Person-like uploads: %.4f on the report half (lowest digit %.4f), %.4f on the tuning half",
                result["report"]["accuracy"], result["report"]["min_class_accuracy"], result["tune"]["accuracy"])
    return result


def model_metadata(metrics: dict) -> dict:
    """What the service and ``bentoml models get`` show about a registered model."""
    metadata = {
        "test_accuracy": round(metrics["test_accuracy"], 5),
        "test_loss": round(metrics["test_loss"], 5),
        "data_source": metrics["data_source"],
        "samples": metrics["samples"],
        "hyperparameters": metrics["hyperparameters"],
        "input_spec": {"shape": list(INPUT_SHAPE), "dtype": "float32", "range": [0.0, 1.0],
                       "layout": "white ink on black, 20x20 digit centred by mass in 28x28"},
        "output_spec": {"shape": [NUM_CLASSES], "activation": "softmax", "labels": list(range(NUM_CLASSES))},
        "preprocessing_version": metrics["preprocessing_version"],
        "git_commit": metrics["git_commit"],
        "versions": metrics["versions"],
        "fit_seconds": metrics["fit_seconds"],
    }
    if metrics.get("fit_plan"):  # a budgeted run: how its epochs were chosen (the store takes no None)
        metadata["fit_plan"] = metrics["fit_plan"]
    personlike = metrics.get("personlike")
    if personlike:  # the store takes no None, so the keys are simply absent when it was not evaluated
        report = personlike["report"]
        metadata["personlike_accuracy"] = round(report["accuracy"], 5)  # the report half (training/personlike.py)
        metadata["personlike_per_class_accuracy"] = report["per_class_accuracy"]
        metadata["personlike_min_class_accuracy"] = report["min_class_accuracy"]
        metadata["personlike_samples"] = report["samples"]
        metadata["personlike_source"] = personlike["source"]
    return metadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train, evaluate and register the MNIST CNN.")
    parser.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                        help=f"{DEFAULT_PRESET} (default): trained to read people's uploads; seed: the article's "
                             "2 epochs; best: longer, for the best accuracy")
    parser.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--seed", type=int, help="random seed (default 42)")
    parser.add_argument("--learning-rate", type=float,
                        help="override the preset's (peak) learning rate (seed: 0.001, Adam's default)")
    parser.add_argument("--validation-fraction", type=float,
                        help="share of the training set held out for validation (default 0: watch the test "
                             "set, as the article does; the best preset holds out 0.1)")
    parser.add_argument("--clean-warp-fraction", type=float, metavar="SHARE",
                        help="share of the digits not made to look like uploads that get MNIST's classic "
                             "augmentation, 0 to 1 (people: 0, best: 1)")
    parser.add_argument("--normalize-strokes", action=argparse.BooleanOptionalAction, default=None,
                        help="read digits with their stroke widths brought into MNIST's range, in evaluation "
                             "and in the service (people and best: on; needs deskew); the fit is the same "
                             "either way")
    parser.add_argument("--fit-budget", type=float, metavar="SECONDS",
                        help="train as many of the preset's epochs as fit in SECONDS of fitting on this machine "
                             f"(at least {MIN_BUDGETED_EPOCHS}), measured by a short probe first; 0 (the default): "
                             "all of them. `make serve` sets one when it must train before it serves")
    parser.add_argument("--data", default=None, metavar="SOURCE",
                        help=f"where MNIST comes from: {', '.join(SOURCES)} (default auto)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="where reports go (default reports/)")
    parser.add_argument("--no-register", action="store_true", help="train and evaluate without registering")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    config = make_config(args.preset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, data=args.data,
                         validation_fraction=args.validation_fraction, learning_rate=args.learning_rate,
                         clean_warp_fraction=args.clean_warp_fraction, normalize_strokes=args.normalize_strokes,
                         fit_budget_s=args.fit_budget)
    result = train(config, reports_dir=args.reports, register=not args.no_register)
    logger.info("Done: test accuracy %.2f%%, model %s", 100 * result.metrics["test_accuracy"], result.tag)
    return 0
