"""The service's configuration: one validated object, read once from ``DIGITSERVE_*`` environment variables.

Every knob, its variable and its default are listed in README.md ("Configuration") and .env.example.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGITSERVE_", env_ignore_empty=True, frozen=True)  # VAR= means default

    model_tag: str = Field("mnist_cnn:latest", description="the BentoML store tag of the model to serve")
    # Like TF Serving's file system poll: a new version is picked up without a restart. 0 turns it off; a tag
    # naming an exact version never moves, whatever this is.
    model_poll_s: float = Field(10.0, ge=0, description="how often workers look for a new version of a moving tag")
    # Far below any trained model here (the seed preset reads ~99 % of these digits, the 5,000-digit test
    # model ~96 %), far above a broken one (~10 %).
    gate_min_accuracy: float = Field(0.9, ge=0, le=1, description="accuracy a new version needs on the gate digits")
    workers: int | None = Field(None, ge=1, description="worker processes; default one per GPU, else one per core (at most 4)")
    threads: int = Field(1, ge=1, description="TensorFlow intra-op threads per worker on the CPU")
    # Off like TF Serving's and Triton's: at 2,000 requests/s it is 2,000 lines/s, and the metrics already
    # count requests by endpoint and status. It cost about a tenth of the throughput at 64 clients here.
    access_log: bool = Field(False, description="log one line per request (BentoML's access log)")
    tracing: bool = Field(False, description="OpenTelemetry spans per request; for when BentoML exports them")
    gc_freeze: bool = Field(True, description="exempt the objects loaded at start-up from garbage collection")

    # Adaptive batching: concurrent requests are merged into one model call.
    max_batch_size: int = Field(64, ge=1, description="most images in one merged model call")
    # Admission control. Throughput peaks here at about 32 requests in progress per worker; twice that keeps
    # every normal load admitted while a flood gets a fast 503 instead of a queue that grows without bound.
    max_concurrency: int = Field(64, ge=1, description="inference requests in progress per worker before a 503")

    # Input limits: each rejection is a 4xx, never a 5xx.
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="largest accepted image file, in bytes")
    max_pixels: int = Field(40_000_000, ge=784, description="largest accepted image, in pixels (width x height)")
    max_batch_images: int = Field(256, ge=1, description="most images in one request (a batch, /infer or a v2 request)")
    max_request_pixels: int = Field(100_000_000, ge=784,
                                    description="most pixels, summed over its images, that one request may carry")
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest multipart or binary request body, in bytes")
    # The request line and headers, which arrive before any route sees the request (service/connection.py).
    # nginx allows 32 KiB by default, Node.js 16 KiB; big cookies fit either way.
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="longest request line and headers together, in bytes")
    # A JSON body becomes Python objects about ten times its size; 256 digits as JSON are under 1 MB.
    max_json_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest JSON request body, in bytes")

    # Time limits.
    body_timeout_s: float = Field(10.0, gt=0, description="longest pause while a request body arrives before a 408")
    header_timeout_s: float = Field(10.0, gt=0, description="longest time a request's headers may take to arrive before a 408")
    request_timeout_s: float = Field(30.0, gt=0, description="longest time to answer one request (408 or 504 past it)")
    # Long enough for a load balancer (a Kubernetes Service's endpoints) to notice /readyz turned 503.
    drain_delay_s: float = Field(5.0, ge=0, description="after SIGTERM, how long a worker keeps serving while not ready")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_pixels > self.max_request_pixels:
            raise ValueError("DIGITSERVE_MAX_PIXELS must not exceed DIGITSERVE_MAX_REQUEST_PIXELS.")
        if self.body_timeout_s >= self.request_timeout_s:
            raise ValueError("DIGITSERVE_BODY_TIMEOUT_S must be shorter than DIGITSERVE_REQUEST_TIMEOUT_S.")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
