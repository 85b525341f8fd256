"""Memory after the largest requests: does each worker's RSS come back after the biggest work it accepts?

    python -m loadtests.memory                                         # default limits, 3 rounds
    python -m loadtests.memory --service-dir /work/scratch/old         # another checkout's service
    python -m loadtests.memory --env MALLOC_ARENA_MAX=2                # an allocator experiment
    python -m loadtests.memory --malloc-trim-probe                     # how much of "after" is free heap

It starts the service (or drives ``--url``), warms every endpoint up with ordinary requests and records
each worker's RSS ("after warm-up"). Then, ``--rounds`` times, it sends the largest request each endpoint
accepts under the default limits (``service.settings``), ``--concurrency`` at a time so that every worker
gets them, together with requests that must be refused, and records the peak. It waits ``--settle-s``
seconds and records each worker's RSS again ("after").

The largest accepted requests (built here, deterministically):

- ``/classify`` and ``/normalized``: a photo-like RGB JPEG (``photo_jpeg``, noisy paper with a digit, just
  under DIGITSERVE_MAX_UPLOAD_BYTES and DIGITSERVE_MAX_PIXELS), a transparent RGBA PNG drawing and a
  16-bit grey PNG scan of the same size (no JPEG-style reduced decoding: the whole image is decoded),
  and a 1-bit PNG of the same size (a few tens of KB that decode to 40 MB);
- ``/classify_batch``: DIGITSERVE_MAX_BATCH_IMAGES photo-like JPEGs, together just under
  DIGITSERVE_MAX_REQUEST_BYTES and DIGITSERVE_MAX_REQUEST_PIXELS;
- ``/infer``: DIGITSERVE_MAX_BATCH_IMAGES digits as JSON, and the same padded with spaces to just under
  DIGITSERVE_MAX_JSON_BYTES.

And the refused: an upload, a batch and a JSON body just over their byte limits, a 1-bit PNG bomb
declaring 100 Mpx, a batch over the request pixel budget, one image or digit too many, truncated
JSON, values out of range, and a multipart body without a boundary.

Target (issue 9, item 2): each worker's RSS after is within 20 % of its RSS after warm-up. A request that
gets a status outside what it should get (200 for the accepted, a 4xx for the refused) is listed too.
Writes ``reports/memory.{json,md}``; exits 1 when the target is missed or a status is wrong.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import http.client
import io
import json
import logging
import os
import statistics
import struct
import subprocess
import sys
import time
import urllib.parse
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from loadtests.payloads import Body, encode_image, multipart
from loadtests.reliability import (
    MB,
    REPORTS_DIR,
    TargetSpec,
    Watcher,
    add_target_arguments,
    machine_load,
    number,
    open_target,
    run_and_report,
)

logger = logging.getLogger(__name__)

TARGET_RSS_RATIO = 1.20  # after / after warm-up, per worker (issue 9)
REQUEST_TIMEOUT_S = 180.0
SAMPLE_INTERVAL_S = 0.2  # fine enough to see a decode's peak
JPEG_NOISE_SIGMA = 12.0  # grey levels of sensor noise in the photo-like images


@dataclass(frozen=True)
class Probe:
    """One request to send: what it is, where, its body, and whether the service must accept it."""

    name: str
    path: str
    body: Body
    accept: bool  # True: it must get a 200; False: it must get a 4xx
    pixels: int = 0  # declared pixels, all images together

    @property
    def megabytes(self) -> float:
        return len(self.body.data) / MB


@dataclass(frozen=True)
class Limits:
    """The service's default limits (service/settings.py): the largest requests are built against them."""

    max_upload_bytes: int
    max_pixels: int
    max_request_bytes: int
    max_request_pixels: int
    max_batch_images: int
    max_json_bytes: int

    @classmethod
    def defaults(cls) -> Limits:
        from service.settings import Settings

        fields = Settings.model_fields
        return cls(**{name: fields[name].default for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class MemoryConfig:
    rounds: int = 3
    refused_repeats: int = 2  # each refused request, per round
    concurrency: int = 4  # requests in flight at once: two per worker with the default two workers
    settle_s: float = 5.0
    warmup_requests: int = 20  # of each kind of ordinary request
    malloc_trim_probe: bool = False
    reports_dir: Path = REPORTS_DIR
    name: str = "memory"
    scale: float = 1.0  # < 1 builds smaller "largest" requests: for a quick test, not for the measurement


# --- the requests ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _test_digits() -> np.ndarray:
    from training.data import load_subset

    return load_subset().x_test  # (1000, 28, 28) uint8, light ink on black; a few seconds to parse


def _digit(index: int = 0) -> np.ndarray:
    return _test_digits()[index]


def _paper_with_digit(width: int, height: int, digit: np.ndarray) -> np.ndarray:
    """(height, width) float32 grey paper with a gentle shading and a dark digit across 60 % of it."""
    side = int(min(width, height) * 0.6)
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255.0
    paper = np.full((height, width), 225.0, np.float32) + np.linspace(-15, 15, width, dtype=np.float32)[None, :]
    top, left = (height - side) // 2, (width - side) // 2
    paper[top:top + side, left:left + side] -= ink * 180.0
    return paper


def photo_jpeg(width: int, height: int, max_bytes: int, digit: np.ndarray, seed: int = 0) -> bytes:
    """A noisy RGB photo of a digit on paper, as a JPEG of the highest quality that stays within ``max_bytes``."""
    rng = np.random.default_rng(seed)
    paper = _paper_with_digit(width, height, digit)
    rgb = np.clip(paper[..., None] + rng.normal(0, JPEG_NOISE_SIGMA, (height, width, 3)).astype(np.float32), 0, 255)
    image = Image.fromarray(rgb.astype(np.uint8))
    best, low, high = b"", 5, 98
    while low <= high:  # the largest quality whose file fits
        quality = (low + high) // 2
        data = encode_image(np.asarray(image), "JPEG", quality=quality)
        if len(data) <= max_bytes:
            best, low = data, quality + 1
        else:
            high = quality - 1
    if not best:
        raise ValueError(f"No JPEG of {width}x{height} fits in {max_bytes:,} bytes.")
    return best


def padded_png(pixels: np.ndarray, max_bytes: int) -> bytes:
    """``pixels`` as a PNG, brought up to just under ``max_bytes`` with a private text chunk (ignored by decoders)."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)  # (h, w, 4) uint8: RGBA; (h, w) uint16: I;16
    image.save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    room = max_bytes - len(data) - 12 - 64  # a chunk's length, type and CRC; a margin
    if room <= 0:
        return data
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("padding", "x" * (room - len("padding") - 1))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1, pnginfo=info)
    return buffer.getvalue()


def bilevel_png(width: int, height: int, digit: np.ndarray) -> bytes:
    """A 1-bit PNG of a digit: a few KB that decode to ``width * height`` bytes."""
    paper = _paper_with_digit(width, height, digit)
    buffer = io.BytesIO()
    Image.fromarray(paper > 128).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A blank 1-bit PNG of ``width x height``, written row by row: kilobytes that declare (and would
    decode to) any number of pixels, without ever holding the image here."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def upload(field: str, data: bytes, kind: str, index: int = 0) -> tuple:
    extension, mime = {"jpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png")}[kind]
    return (field, f"digit{index}.{extension}", mime, data)


def infer_body(count: int, pad_to: int = 0, seed: int = 0) -> Body:
    """``count`` random (28, 28) uint8 digits as ``/infer`` JSON, padded with trailing spaces to ``pad_to`` bytes."""
    digits = np.random.default_rng(seed).integers(0, 256, (count, 28, 28)).tolist()
    data = json.dumps({"digits": digits}, separators=(",", ":")).encode()
    return Body(data + b" " * max(0, pad_to - len(data)), "application/json")


def build_probes(limits: Limits, scale: float = 1.0) -> list[Probe]:
    """The largest accepted request of each endpoint, and the refused ones (see the module docstring)."""
    digit = _digit()
    upload_bytes = int(limits.max_upload_bytes * scale) - 4096  # a margin below the limit
    side = int((limits.max_pixels * scale) ** 0.5)  # a square image just under the pixel limit
    pixels = side * side
    photo = photo_jpeg(side, side, upload_bytes, digit)
    paper = _paper_with_digit(side, side, digit)
    alpha = np.clip(255 - paper, 0, 255).astype(np.uint8)  # the ink, opaque; the paper, transparent
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., 3] = alpha
    rgba_png = padded_png(rgba, upload_bytes)
    grey16 = padded_png((paper * 257).astype(np.uint16), upload_bytes)
    bilevel = bilevel_png(side, side, digit)

    count = limits.max_batch_images
    per_image_pixels = int(limits.max_request_pixels * scale) // count
    batch_side = int(per_image_pixels ** 0.5)
    framing = 256  # a part's headers and boundary
    per_image_bytes = int(limits.max_request_bytes * scale) // count - framing
    batch_images = [photo_jpeg(batch_side, batch_side, per_image_bytes, _digit(index % 8), seed=index)
                    for index in range(8)]  # eight distinct images, cycled
    batch = multipart([upload("images", batch_images[i % 8], "jpeg", i) for i in range(count)])

    infer = infer_body(count)
    infer_padded = infer_body(count, pad_to=int(limits.max_json_bytes * scale) - 1024)

    bomb_side = int((limits.max_pixels * 2.5) ** 0.5)
    over_budget_side = int((limits.max_request_pixels / count * 2) ** 0.5)  # twice the request budget in all
    small = encode_image(digit, "PNG")
    accepted = [
        Probe("classify photo JPEG", "/classify", multipart([upload("image", photo, "jpeg")]), True, pixels),
        Probe("classify RGBA PNG", "/classify", multipart([upload("image", rgba_png, "png")]), True, pixels),
        Probe("classify 16-bit PNG", "/classify", multipart([upload("image", grey16, "png")]), True, pixels),
        Probe("classify 1-bit PNG", "/classify", multipart([upload("image", bilevel, "png")]), True, pixels),
        Probe("normalized photo JPEG", "/normalized", multipart([upload("image", photo, "jpeg")]), True, pixels),
        Probe("normalized 16-bit PNG", "/normalized", multipart([upload("image", grey16, "png")]), True, pixels),
        Probe(f"classify_batch {count} photo JPEGs", "/classify_batch", batch, True, count * batch_side ** 2),
        Probe(f"infer {count} digits", "/infer", infer, True, count * 784),
        Probe(f"infer {count} digits, padded", "/infer", infer_padded, True, count * 784),
    ]
    junk = np.random.default_rng(1).integers(0, 256, limits.max_upload_bytes + 128 * 1024, np.uint8).tobytes()
    over_bytes = photo + junk[: limits.max_upload_bytes + 128 * 1024 - len(photo)]  # past the limit and framing
    over_part = junk[: limits.max_request_bytes // count + 1024]  # whatever the scale: past the request limit
    over_request = multipart([upload("images", over_part, "jpeg", i) for i in range(count)])
    refused = [
        Probe("classify over the byte limit", "/classify", multipart([upload("image", over_bytes, "jpeg")]), False),
        Probe("classify 100 Mpx 1-bit PNG bomb", "/classify",
              multipart([upload("image", png_bomb(bomb_side, bomb_side), "png")]), False, bomb_side ** 2),
        Probe("classify_batch over the byte limit", "/classify_batch", over_request, False),
        Probe("classify_batch over the pixel budget", "/classify_batch", multipart(
            [upload("images", png_bomb(over_budget_side, over_budget_side), "png", i) for i in range(count)]),
            False, count * over_budget_side ** 2),
        Probe(f"classify_batch {count + 1} images", "/classify_batch",
              multipart([upload("images", small, "png", i) for i in range(count + 1)]), False),
        Probe("infer over the byte limit", "/infer", infer_body(count, pad_to=limits.max_json_bytes + 1024), False),
        Probe(f"infer {count + 1} digits", "/infer", infer_body(count + 1), False),
        Probe("infer truncated JSON", "/infer", Body(infer.data[: len(infer.data) // 2], "application/json"), False),
        Probe("infer values out of range", "/infer",
              Body(json.dumps({"digits": [[[256] * 28] * 28] * 4}).encode(), "application/json"), False),
        Probe("multipart without a boundary", "/classify",
              Body(multipart([upload("image", small, "png")]).data, "multipart/form-data"), False),
    ]
    return accepted + refused


# --- sending --------------------------------------------------------------------------------------


def send(url: str, probe: Probe) -> tuple[str, float]:
    """POST ``probe`` on a fresh connection; (its status, or what went wrong, and the seconds it took)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
    started = time.perf_counter()
    try:
        try:
            connection.request("POST", probe.path, body=probe.body.data,
                               headers={"Content-Type": probe.body.content_type})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent: its answer may be waiting
        response = connection.getresponse()
        response.read()
        return str(response.status), time.perf_counter() - started
    except TimeoutError:
        return "timeout", time.perf_counter() - started
    except (OSError, http.client.HTTPException) as error:
        return f"connection_{type(error).__name__}", time.perf_counter() - started
    finally:
        connection.close()


def status_ok(probe: Probe, status: str) -> bool:
    if probe.accept:
        return status == "200"
    return status.isdigit() and 400 <= int(status) < 500


def warm_up(url: str, count: int) -> None:
    """Ordinary traffic on every endpoint, so that first-use allocations are part of the baseline."""
    from loadtests.payloads import digit_uploads
    from training.data import load_subset

    data = load_subset()
    uploads = digit_uploads(data.x_test[:count], data.y_test[:count], kinds=("png", "jpeg"))
    batch = multipart([upload("images", item.image, "png", i) for i, item in enumerate(uploads[:16])])
    probes = [Probe("warm-up", path, item.body, True) for item in uploads for path in ("/classify", "/normalized")]
    probes += [Probe("warm-up", "/classify_batch", batch, True),
               Probe("warm-up", "/infer", infer_body(4), True)] * count
    with ThreadPoolExecutor(4) as pool:
        statuses = Counter(status for status, _ in pool.map(lambda probe: send(url, probe), probes))
    if set(statuses) != {"200"}:
        raise RuntimeError(f"The warm-up requests did not all succeed: {dict(statuses)}")


def steady_rss(watcher: Watcher, seconds: float = 2.0) -> dict[str, float]:
    """Each worker's RSS (MB): the median of a few readings over ``seconds``."""
    readings: dict[str, list[float]] = {}
    for _ in range(5):
        for label, rss in watcher.worker_rss_mb().items():
            readings.setdefault(label, []).append(rss)
        time.sleep(seconds / 5)
    return {label: statistics.median(values) for label, values in readings.items()}


def trim_workers(watcher: Watcher) -> dict[str, str]:
    """Call glibc's ``malloc_trim(0)`` inside each worker through gdb: what RSS is left is not free heap."""
    results = {}
    for label, worker in sorted(watcher.sample()["workers"].items()):
        # Only libc's symbols are loaded: reading TensorFlow's would take gdb minutes.
        done = subprocess.run(["gdb", "-p", str(worker["pid"]), "-batch", "-nx", "-iex", "set auto-load off",
                               "-iex", "set auto-solib-add off", "-ex", "sharedlibrary libc.so",
                               "-ex", "call (int) malloc_trim(0)"],
                              capture_output=True, text=True, timeout=120, check=False)
        results[label] = next((line for line in done.stdout.splitlines() if line.startswith("$1")),
                              f"gdb exit {done.returncode}: {done.stderr.strip()[-200:]}")
    return results


def run_memory(config: MemoryConfig, spec: TargetSpec) -> dict:
    from loadtests.bench import machine_info

    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine = {**machine_info(), "load_at_start": machine_load()}
    limits = Limits.defaults()
    logger.info("Building the largest requests (scale %g)", config.scale)
    probes = build_probes(limits, config.scale)
    accepted = [probe for probe in probes if probe.accept]
    refused = [probe for probe in probes if not probe.accept]
    results: dict[str, list[tuple[str, float]]] = {probe.name: [] for probe in probes}
    with open_target(spec) as target:
        watcher = Watcher(target.pid, target.port, interval=SAMPLE_INTERVAL_S)
        try:
            warm_up(target.url, config.warmup_requests)
            time.sleep(config.settle_s)
            after_warmup = steady_rss(watcher)
            logger.info("After warm-up: %s", {label: round(mb) for label, mb in after_warmup.items()})
            load_started = time.time()
            with ThreadPoolExecutor(config.concurrency) as pool:
                for round_index in range(config.rounds):
                    for probe in accepted + refused:
                        repeats = config.concurrency if probe.accept else config.refused_repeats
                        for status, seconds in pool.map(lambda p: send(target.url, p), [probe] * repeats):
                            results[probe.name].append((status, seconds))
                    logger.info("Round %d: %s", round_index + 1,
                                {label: round(mb) for label, mb in watcher.worker_rss_mb().items()})
            load_ended = time.time()
            time.sleep(config.settle_s)
            after = steady_rss(watcher)
            peak = {label: worker["rss_max_mb"]
                    for label, worker in watcher.window(load_started, time.time()).get("workers", {}).items()}
            trimmed, trim_calls = {}, {}
            if config.malloc_trim_probe:
                trim_calls = trim_workers(watcher)
                time.sleep(1.0)
                trimmed = steady_rss(watcher)
        finally:
            watcher.stop()
        source = target.source
    workers = {}
    for label in sorted(after_warmup):
        ratio = after.get(label, 0) / after_warmup[label] if after_warmup[label] else None
        workers[label] = {"after_warmup_mb": after_warmup[label], "peak_mb": peak.get(label),
                          "after_mb": after.get(label), "after_vs_warmup": ratio,
                          "after_malloc_trim_mb": trimmed.get(label), "malloc_trim_call": trim_calls.get(label),
                          "met": ratio is not None and ratio <= TARGET_RSS_RATIO}
    requests = []
    for probe in probes:
        statuses = Counter(status for status, _ in results[probe.name])
        seconds = [elapsed for _, elapsed in results[probe.name]]
        requests.append({"name": probe.name, "path": probe.path, "accept": probe.accept,
                         "body_mb": probe.megabytes, "declared_mpx": probe.pixels / 1e6,
                         "statuses": dict(statuses), "ok": all(status_ok(probe, s) for s in statuses),
                         "median_s": statistics.median(seconds) if seconds else None})
    missed = [f"Worker {label}'s RSS after is {worker['after_vs_warmup']:.2f}x its RSS after warm-up "
              f"({worker['after_mb']:.0f} MB against {worker['after_warmup_mb']:.0f} MB; "
              f"target ≤ {TARGET_RSS_RATIO:.2f}x)."
              for label, worker in workers.items() if not worker["met"]]
    missed += [f"{request['name']} ({request['path']}) got {request['statuses']}; it must get "
               f"{'200' if request['accept'] else 'a 4xx'}." for request in requests if not request["ok"]]
    machine.update(load_at_end=machine_load())
    return {"date": date, "source": source, "machine": machine, "limits": asdict(limits),
            "settings": {**asdict(config), "reports_dir": str(config.reports_dir), "target": spec.describe()},
            "target_rss_ratio": TARGET_RSS_RATIO, "workers": workers, "requests": requests,
            "load_seconds": load_ended - load_started, "passed": not missed, "missed": missed}


def render_markdown(report: dict) -> str:
    settings, machine = report["settings"], report["machine"]
    trim = any(worker["after_malloc_trim_mb"] is not None for worker in report["workers"].values())
    lines = [
        "# Memory after the largest requests",
        "",
        f"Measured {report['date']} against {report['source']} on {machine['cpu']} ({machine['logical_cpus']} logical "
        f"CPUs; load average {machine['load_at_start']['load_average'][0]:.2f} at the start). "
        f"{settings['rounds']} rounds of every request below, each accepted one {settings['concurrency']} at once "
        f"and each refused one {settings['refused_repeats']} times; RSS read {settings['settle_s']:g} s after warm-up "
        f"and {settings['settle_s']:g} s after the last request (median of five readings over 2 s)."
        + (f" Service environment: {settings['target']['env']}." if settings["target"]["env"] else ""),
        "",
        "| worker | after warm-up MB | peak MB | after MB | after / warm-up |"
        + (" after malloc_trim(0) MB |" if trim else "") + f" target ≤ {report['target_rss_ratio']:.2f} |",
        "|---|---:|---:|---:|---:|" + ("---:|" if trim else "") + "---|",
    ]
    for label, worker in report["workers"].items():
        lines.append(f"| {label} | {number(worker['after_warmup_mb'], 0)} | {number(worker['peak_mb'], 0)} "
                     f"| {number(worker['after_mb'], 0)} | {number(worker['after_vs_warmup'], 2)} |"
                     + (f" {number(worker['after_malloc_trim_mb'], 0)} |" if trim else "")
                     + f" {'met' if worker['met'] else '**missed**'} |")
    lines += ["", "| request | endpoint | body MB | declared Mpx | must get | got | median s |",
              "|---|---|---:|---:|---|---|---:|"]
    for request in report["requests"]:
        got = ", ".join(f"{status} x{count}" for status, count in sorted(request["statuses"].items()))
        lines.append(f"| {request['name']} | `{request['path']}` | {request['body_mb']:.2f} "
                     f"| {number(request['declared_mpx'], 1) if request['declared_mpx'] else '–'} "
                     f"| {'200' if request['accept'] else '4xx'} | {got}{'' if request['ok'] else ' **wrong**'} "
                     f"| {number(request['median_s'], 2)} |")
    lines.append("")
    if report["passed"]:
        lines.append("**Verdict: every worker's RSS came back within the target, and every status was right.**")
    else:
        lines += ["**Verdict: missed.**", ""] + [f"- {sentence}" for sentence in report["missed"]]
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[MemoryConfig, TargetSpec]:
    defaults = MemoryConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--refused-repeats", type=int, default=defaults.refused_repeats)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--settle-s", type=float, default=defaults.settle_s)
    parser.add_argument("--warmup-requests", type=int, default=defaults.warmup_requests)
    parser.add_argument("--malloc-trim-probe", action="store_true",
                        help="after the run, call malloc_trim(0) in each worker with gdb and read RSS again")
    parser.add_argument("--scale", type=float, default=defaults.scale,
                        help="build the largest requests at this fraction of the limits (tests only)")
    parser.add_argument("--reports-dir", type=Path,
                        default=Path(os.environ.get("MEMORY_REPORTS_DIR", defaults.reports_dir)))
    parser.add_argument("--name", default=defaults.name, help="write reports/<name>.{json,md}")
    add_target_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.concurrency < 1 or not 0 < args.scale <= 1:
        parser.error("--rounds and --concurrency must be ≥ 1, --scale in (0, 1].")
    config = MemoryConfig(rounds=args.rounds, refused_repeats=args.refused_repeats, concurrency=args.concurrency,
                          settle_s=args.settle_s, warmup_requests=args.warmup_requests,
                          malloc_trim_probe=args.malloc_trim_probe, reports_dir=args.reports_dir, name=args.name,
                          scale=args.scale)
    return config, TargetSpec.from_args(args)


def main(argv: list[str] | None = None) -> int:
    return run_and_report(argv, parse_args, run_memory, render_markdown)


if __name__ == "__main__":
    sys.exit(main())
