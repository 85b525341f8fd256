"""The service's metrics, defined once: the domain metrics and the HTTP request metrics.

``prometheus_client`` is imported inside ``DomainMetrics()``, never at module import: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker after importing the service module, and a client imported
before that would count in single-process mode, invisible to ``/metrics``.

Every label has a small, fixed set of values: ten digits, the reasons in ``service.errors``, the two
protocols, the service's route templates (``/v2/models/{name}/infer``, never the path a client sent:
a label per path would let any client grow every worker's metrics without bound), the HTTP statuses
the service answers with, the model versions registered in the store (a handful), one device.
"""

from __future__ import annotations

# Sub-millisecond resolution: a 28x28 upload is preprocessed in ~0.2 ms, a compiled batch runs in ~1 ms.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROTOCOLS = ("rest", "v2")

PREFIX = "digitserve"
METRIC_NAMES = {
    "requests": f"{PREFIX}_http_requests_total",
    "request_seconds": f"{PREFIX}_http_request_duration_seconds",
    "in_progress": f"{PREFIX}_http_requests_in_progress",
    "predictions": f"{PREFIX}_predictions_total",
    "confidence": f"{PREFIX}_prediction_confidence",
    "rejected": f"{PREFIX}_rejected_inputs_total",
    "preprocess": f"{PREFIX}_preprocess_seconds",
    "inference": f"{PREFIX}_inference_seconds",
    "batch_size": f"{PREFIX}_inference_batch_size",
    "model_info": f"{PREFIX}_model_info",
    "device_info": f"{PREFIX}_device_info",
    "model_updates": f"{PREFIX}_model_updates_total",
    "model_refusals": f"{PREFIX}_model_refusals_total",
}


_instance: DomainMetrics | None = None


def domain_metrics() -> DomainMetrics:
    """This process's metrics, created on first use: inside the worker, after BentoML set up multiprocess
    mode. Created once, since prometheus_client refuses to register a metric name twice."""
    global _instance
    if _instance is None:
        _instance = DomainMetrics()
    return _instance


class DomainMetrics:
    """The metrics one worker records; get it with ``domain_metrics()``."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(METRIC_NAMES["requests"].removesuffix("_total"),
                                "HTTP requests answered, by route template, method and status",
                                ["endpoint", "method", "status"])
        self.request_seconds = Histogram(METRIC_NAMES["request_seconds"],
                                         "Time from a request's arrival to the end of its answer, by route template",
                                         ["endpoint"], buckets=REQUEST_BUCKETS)
        self.in_progress = Gauge(METRIC_NAMES["in_progress"], "Inference requests in progress (admitted), by route template",
                                 ["endpoint"], multiprocess_mode="livesum")
        self.predictions = Counter(METRIC_NAMES["predictions"].removesuffix("_total"),
                                   "Predictions returned, by predicted digit and protocol", ["digit", "protocol"])
        self.confidence = Histogram(METRIC_NAMES["confidence"], "Probability of the predicted digit",
                                    buckets=CONFIDENCE_BUCKETS)
        self.rejected = Counter(METRIC_NAMES["rejected"].removesuffix("_total"),
                                "Requests refused with a 4xx or a 503, by reason and protocol", ["reason", "protocol"])
        self.preprocess_seconds = Histogram(METRIC_NAMES["preprocess"],
                                            "Time to decode and normalise one upload", buckets=LATENCY_BUCKETS)
        self.inference_seconds = Histogram(METRIC_NAMES["inference"],
                                           "Time of one model call (one merged batch)", buckets=LATENCY_BUCKETS)
        self.batch_size = Histogram(METRIC_NAMES["batch_size"], "Images in one model call",
                                    buckets=BATCH_SIZE_BUCKETS)
        # Info-style gauges: constant 1 with the facts as labels; "max" merges the workers' copies into one.
        self.model_info = Gauge(METRIC_NAMES["model_info"], "The model being served",
                                ["tag", "test_accuracy", "preprocessing_version"], multiprocess_mode="max")
        self.device_info = Gauge(METRIC_NAMES["device_info"], "The device inference runs on",
                                 ["device"], multiprocess_mode="max")
        self.model_updates = Counter(METRIC_NAMES["model_updates"].removesuffix("_total"),
                                     "Model versions swapped in without a restart (per worker)")
        self.model_refusals = Counter(METRIC_NAMES["model_refusals"].removesuffix("_total"),
                                      "Model versions the gate refused, by version and reason", ["version", "reason"])

    def record_predictions(self, digits, confidences, protocol: str) -> None:
        """Count a batch's predicted digits (one increment per digit value, not per image) and confidences."""
        import numpy as np

        for digit, count in enumerate(np.bincount(np.asarray(digits, dtype=np.int64), minlength=10)):
            if count:
                self.predictions.labels(digit=str(digit), protocol=protocol).inc(int(count))
        for confidence in np.asarray(confidences, dtype=np.float64).tolist():
            self.confidence.observe(confidence)


def exposition() -> tuple[bytes, str]:
    """Every worker's metrics merged, in Prometheus' text format: (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
