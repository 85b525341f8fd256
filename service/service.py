"""The digit classifier as a BentoML service.

    bentoml serve service:DigitClassifier            # from the repository root, on port 3000

BentoML runs the workers, their lifecycle and the health routes (``/readyz``, ``/livez``). Each worker
loads the registered model once, runs a warm-up inference, and only then reports ready. Every route of the
service is in one FastAPI app (``service.app``) mounted with ``@bentoml.asgi_app``, a public API: the
routes are thin front doors over one engine (``service.engine``: decode -> normalise -> batch -> infer),
which the routes reach through ``bentoml.get_current_service()``. ``service.guard`` wraps every request
with the budgets, timeouts and admission control.
"""

from __future__ import annotations

import gc
import logging
import os
import signal

import bentoml
from bentoml.exceptions import NotFound

from service import connection
from service.app import POLICIES, create_app
from service.device import configure_tensorflow, count_gpus, usable_cpus, worker_count
from service.guard import Guard
from service.lifecycle import Drain
from service.memory import FreedMemoryReturner
from service.metrics import domain_metrics
from service.openapi import build_document
from service.settings import get_settings
from service.v2 import InferenceRequest
from service.versions import ModelWatcher, RunDir, pin
from training.registry import ModelLoadError, ModelNotRegistered, verify_archive

with bentoml.importing():
    from service.engine import Engine
    from service.served_model import load_served_model

logger = logging.getLogger(__name__)
settings = get_settings()
# Request heads bounded in bytes and time: uvicorn reads them before the app (or the guard) sees anything.
connection.install(settings)
# BentoML's workers log at WARNING below its own "bentoml" logger; this module is the workers' entry point,
# so it lets this project's INFO lines (the device in use, the model served) through to BentoML's handlers.
for package in ("service", "training", "models"):
    logging.getLogger(package).setLevel(logging.INFO)

GPU_COUNT = count_gpus()
app = create_app()


class DescribedService(bentoml.Service):
    """A service whose OpenAPI document is the FastAPI app's (BentoML only knows its own API methods, and
    this service has none) and whose description is ``SERVICE_DESCRIPTION``."""

    @property
    def doc(self) -> str:
        return app.description

    @property
    def openapi_spec(self):
        # BentoML's /docs.json view calls this property (a public one of bentoml.Service) for the document;
        # tests/service/test_api.py fails if it stops showing this app's routes.
        return build_document(app, extra_models=(InferenceRequest,))


def _pin_model() -> tuple[bentoml.models.BentoModel, RunDir]:
    """The exact model version to serve, pinned before any worker starts (see service.versions); fails at
    import, before any worker starts, when no model is registered or its file is damaged."""
    try:
        tag, run_dir = pin(settings.model_tag)
    except NotFound:
        raise ModelNotRegistered(
            f"No model {settings.model_tag!r} is registered in the BentoML model store. "
            "Run `make train` to train and register one (or set DIGITSERVE_MODEL_TAG)."
        ) from None
    reference = bentoml.models.BentoModel(tag)
    verify_archive(reference.stored)
    return reference, run_dir


def _stop_server(error: Exception) -> None:
    """A worker that cannot load the model stops the whole server: BentoML would restart it forever."""
    logger.critical("%s Stopping the server.", error)
    if bentoml.server_context.worker_index is not None:  # under `bentoml serve`, not in-process tests
        os.kill(os.getppid(), signal.SIGTERM)


@bentoml.service(
    name="digitserve",
    service_class=DescribedService,
    workers=worker_count(settings.workers),
    **({"resources": {"gpu": GPU_COUNT}} if GPU_COUNT else {}),
    # BentoML's own timeout is a backstop behind the guard's DIGITSERVE_REQUEST_TIMEOUT_S, which answers first.
    traffic={"timeout": int(settings.request_timeout_s) + 10},
    # BentoML's request metrics label each request with its raw path, so every new path a client invents
    # would add series to every worker's metrics without bound. service.guard counts requests by route
    # template instead, and service.web serves /metrics.
    metrics={"enabled": False},
    logging={"access": {"enabled": settings.access_log}},
    # OpenTelemetry spans cost about a sixth of a worker's time and go nowhere unless an exporter is set.
    tracing={} if settings.tracing else {"excluded_urls": [".*"]},
)
@bentoml.asgi_app(app, path="/")
class DigitClassifier:
    bento_model, run_dir = _pin_model()  # the model reference at class scope, so a Bento packs it

    def __init__(self) -> None:
        # On the CPU a large batch runs as one model call per core at once (Engine._infer); a GPU takes it whole.
        self.parallel_calls = 1 if GPU_COUNT else usable_cpus()
        self.device = configure_tensorflow(bentoml.server_context.worker_index or 1, settings.threads,
                                           self.parallel_calls)
        if settings.gc_freeze:
            # TensorFlow and Keras leave ~10^5 long-lived objects; moved out of the collector's sight, they
            # no longer make every full collection (a pause of tens of ms under load) walk them. The model
            # is loaded after, so that a model replaced by an update can still be collected.
            import keras  # noqa: F401  (its objects too)

            gc.collect()
            gc.freeze()
        try:
            model = load_served_model(self.bento_model)  # the class attribute resolves to the stored entry
        except ModelLoadError as error:
            _stop_server(error)
            raise

        self.metrics = domain_metrics()
        self.engine = Engine(model, settings, self.metrics, device=self.device, parallel_calls=self.parallel_calls)
        metadata = model.metadata
        self.metrics.model_info.labels(
            tag=model.tag,
            test_accuracy=str(metadata.get("test_accuracy", "unknown")),
            preprocessing_version=str(metadata.get("preprocessing_version", "unknown")),
        ).set(1)
        self.metrics.device_info.labels(device=self.device).set(1)
        # Every inference route's success and 5xx series exist from the start, at 0: Prometheus' rate() needs
        # a series' earlier value, so a first 503 would otherwise go unseen by the alerts.
        for template, policy in POLICIES.items():
            if policy.inference:
                for status in ("200", "503", "504"):
                    self.metrics.requests.labels(endpoint=template, method="POST", status=status)
        logger.info("Serving %s on %s (worker %s)", model.tag, self.device, bentoml.server_context.worker_index)
        self.watcher = ModelWatcher(self.engine, self.run_dir, settings.model_poll_s, settings.gate_min_accuracy,
                                    self.metrics)
        if bentoml.server_context.worker_index is not None:  # a `bentoml serve` worker, not an in-process app
            self.watcher.start()
            FreedMemoryReturner().start()
            Drain(settings.drain_delay_s, settings.request_timeout_s, on_draining=self._draining).install()

    def _draining(self) -> None:
        self.engine.ready = False
        self.watcher.stop()

    async def __is_ready__(self) -> bool:
        """BentoML's readiness hook behind /readyz: false once the worker drains before it stops."""
        return self.engine.ready


DigitClassifier.add_asgi_middleware(Guard, settings=settings, policies=POLICIES)
