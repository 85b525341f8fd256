"""The service's configuration: one validated object, read once from ``DIGITSERVE_*`` environment variables.

Every knob, its variable and its default are listed in README.md ("Configuration") and .env.example.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGITSERVE_", env_ignore_empty=True, frozen=True)  # VAR= means default

    model_tag: str = Field("mnist_cnn:latest", description="the BentoML store tag of the model to serve")
    workers: int | None = Field(None, ge=1, description="worker processes; default one per GPU, else one per core (at most 4)")
    threads: int = Field(1, ge=1, description="TensorFlow intra-op threads per worker on the CPU")
    # Off like TF Serving's and Triton's: at 2,000 requests/s it is 2,000 lines/s, and the metrics already
    # count requests by endpoint and status. It cost about a tenth of the throughput at 64 clients here.
    access_log: bool = Field(False, description="log one line per request (BentoML's access log)")
    tracing: bool = Field(False, description="OpenTelemetry spans per request; for when BentoML exports them")
    gc_freeze: bool = Field(True, description="exempt the objects loaded at start-up from garbage collection")

    # Adaptive batching: concurrent /classify requests are merged into one model call.
    max_batch_size: int = Field(64, ge=2, description="most images in one merged model call")
    # BentoML answers 503 when it predicts a request would wait longer than this; a prototype with 20 ms
    # refused 95 % of requests at 16 clients. Batches stay small at low load whatever this is.
    max_latency_ms: int = Field(2_000, ge=10, description="longest wait in the batching queue before a 503")

    # Input limits: each rejection is a 4xx, never a 5xx.
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="largest accepted image file, in bytes")
    max_pixels: int = Field(40_000_000, ge=784, description="largest accepted image, in pixels (width x height)")
    max_batch_images: int = Field(256, ge=1, description="most images in one /classify_batch request")
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest request body, in bytes")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
