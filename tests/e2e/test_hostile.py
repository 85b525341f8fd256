"""Hostile and broken requests against a real ``bentoml serve``, over real sockets: every one is a 4xx with
the service's error body (or a 503 ``overloaded`` when the worker is full), none a 5xx, and none holds a
worker past its time limits.

The server runs one worker with small limits, so each budget can be reached cheaply and deterministically.
"""

from __future__ import annotations

import io
import http.client
import json
import socket
import time
import zlib
import struct
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests.server import start_server
from tests.uploads import encode

pytestmark = [pytest.mark.slow, pytest.mark.server]

LIMITS = {
    "DIGITSERVE_WORKERS": "1",
    "DIGITSERVE_MAX_CONCURRENCY": "2",
    "DIGITSERVE_BODY_TIMEOUT_S": "1",
    "DIGITSERVE_REQUEST_TIMEOUT_S": "5",
    "DIGITSERVE_MAX_JSON_BYTES": "4000000",
    "DIGITSERVE_MAX_UPLOAD_BYTES": "2000000",
    "DIGITSERVE_MAX_REQUEST_BYTES": "8000000",
    "DIGITSERVE_MAX_PIXELS": "30000000",
    "DIGITSERVE_MAX_REQUEST_PIXELS": "60000000",
    "DIGITSERVE_MAX_BATCH_IMAGES": "16",
    "DIGITSERVE_MAX_HEADER_BYTES": "16384",
    "DIGITSERVE_HEADER_TIMEOUT_S": "1",
}


@pytest.fixture(scope="module")
def server(trained):
    with start_server(env=LIMITS, timeout=90) as handle:
        yield handle


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def assert_error(response: httpx.Response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "reason"}
    assert isinstance(body["error"], str) and len(body["error"]) > 20
    if reason is not None:
        assert body["reason"] == reason, body
    return body


# --- raw HTTP, for what a polite client library will not send ----------------------------------------


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering
    seconds: float


def raw_exchange(url: str, payload: bytes, *, then_wait: float = 15.0) -> RawAnswer:
    """Send ``payload`` as is on a new connection and read one answer (and whether the server then closed).

    The payload is sent from a thread while the answer is read, as a client must when the server may answer
    (and close) before the whole body is sent.
    """
    parts = urlsplit(url)
    started = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port), timeout=then_wait) as sock:
        def send_all() -> None:
            try:
                sock.sendall(payload)
            except OSError:  # the server answered and closed before taking the whole body
                pass

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        seconds = time.perf_counter() - started
        sock.settimeout(3)
        try:
            closed = sock.recv(1) == b""
        except (TimeoutError, socket.timeout):
            closed = False
        except ConnectionResetError:
            closed = True
    return RawAnswer(status, headers, body, closed, seconds)


def request_head(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "b0undary") -> bytes:
    body = b""
    for name, filename, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def big_blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height white pixels, a few kilobytes however large it declares itself."""
    raw = (b"\x00" + b"\xff" * ((width + 7) // 8)) * height
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


# --- multipart that Starlette's parser refuses ----------------------------------------------------------


@pytest.mark.parametrize("content_type,body", [
    ("multipart/form-data", b"--x\r\n\r\n"),  # no boundary
    ("multipart/form-data; boundary=abc", multipart([("image", "d.png", b"x")], boundary="xyz")),  # mismatched
    ("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-data; name=\"image\"; "
     b"filename=\"d.png\"\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\nx\r\n--abc--\r\n"),  # oversized part header
    ("multipart/form-data; boundary=abc", b"--abc\r\ngarbage without headers\r\n--abc--\r\n"),
    ("multipart/form-data; boundary=abc", b""),
], ids=["no-boundary", "mismatched-boundary", "huge-part-header", "garbage", "empty"])
def test_broken_multipart_is_a_400(client, content_type, body):
    assert_error(client.post("/classify", content=body, headers={"Content-Type": content_type}), 400)


def test_more_parts_than_the_parser_takes_is_a_400(client):
    body = multipart([("images", f"{i}.png", b"x") for i in range(1_100)])
    response = client.post("/classify_batch", content=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert_error(response, 400)


def test_a_url_or_json_where_a_file_belongs_is_refused_and_never_fetched(client):
    assert_error(client.post("/classify", files={"image": (None, "http://127.0.0.1:9/x.png")}), 400, "url_not_allowed")
    assert_error(client.post("/classify", json={"image": "http://127.0.0.1:9/x.png"}), 415, "not_multipart")


# --- /infer: values and shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    {"digits": [[[-1]]]}, {"digits": [[[256] * 28] * 28]}, {"digits": []}, {"digits": None}, None, [],
    {"digits": [[[0.5] * 28] * 28]}, {"digits": [[0] * 28] * 5}, {"digits": [[[True] * 28] * 28]},
    {"digits": [[["7"] * 28] * 28]}, {"digits": [[[0] * 28] * 27]}, {"digits": [[[0] * 28] * 28], "extra": 1},
    {"digits": [[[10**30] * 28] * 28]},
], ids=lambda payload: json.dumps(payload)[:40])
def test_infer_refuses_anything_but_uint8_digits(client, payload):
    assert_error(client.post("/infer", json=payload), 400)


@pytest.mark.parametrize("text", [b"{\"digits\": [[[1e400]]]}", b"{\"digits\": [[[NaN]]]}", b"{", b"\xff\xfe", b""])
def test_infer_refuses_bad_json(client, text):
    assert_error(client.post("/infer", content=text, headers={"Content-Type": "application/json"}), 400)


def test_infer_refuses_a_single_unbatched_digit(client):
    """Shape (28, 28) instead of (n, 28, 28): 28 "digits" of one row each. Over this server's limit of 16
    digits it is a 413, under it a 400; it is never classified."""
    assert client.post("/infer", json={"digits": [[0] * 28] * 28}).status_code in (400, 413)


def test_infer_takes_integral_floats_as_json_schema_does(client):
    digit = np.zeros((28, 28), np.uint8)
    digit[8:20, 13:15] = 255
    response = client.post("/infer", json={"digits": [digit.astype(float).tolist()]})
    assert response.status_code == 200, response.text
    assert np.array(response.json()).shape == (1, 10)


def test_too_many_digits_is_a_413(client):
    assert_error(client.post("/infer", json={"digits": [[[0] * 28] * 28] * 17}), 413, "batch_too_large")


def test_infer_takes_only_json(client):
    assert_error(client.post("/infer", content=b"digits=1", headers={"Content-Type": "application/x-www-form-urlencoded"}),
                 415, "unsupported_media_type")


# --- byte limits, from the header and while streaming -----------------------------------------------------


@pytest.mark.parametrize("path,content_type", [
    ("/infer", "application/json"),
    ("/classify", "multipart/form-data; boundary=b0undary"),
    ("/classify_batch", "multipart/form-data; boundary=b0undary"),
    ("/normalized", "multipart/form-data; boundary=b0undary"),
])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server, path, content_type):
    answer = raw_exchange(server.url, request_head(path, {"Content-Type": content_type,
                                                          "Content-Length": str(229_000_000)}))
    assert answer.status == 413
    assert json.loads(answer.body)["reason"] == "too_large"


@pytest.mark.parametrize("path,content_type", [
    ("/infer", "application/json"),
    ("/classify", "multipart/form-data; boundary=b0undary"),
])
def test_a_streamed_body_over_the_limit_is_cut_off(server, path, content_type):
    """No Content-Length: the body is counted as it arrives and refused once it passes the limit."""
    start = (b'{"digits": [' if path == "/infer" else
             b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n\r\n')
    chunk = b"7," * 32_768  # 64 KiB
    chunks = [start] + [chunk] * 150  # 9.6 MB, over every limit of this server
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in chunks)
    answer = raw_exchange(server.url, request_head(path, {"Content-Type": content_type,
                                                          "Transfer-Encoding": "chunked"}) + chunked)
    assert answer.status == 413
    assert json.loads(answer.body)["reason"] == "too_large"
    assert answer.closed


def test_a_content_length_that_is_not_a_number_is_a_400(server):
    answer = raw_exchange(server.url, request_head("/infer", {"Content-Type": "application/json",
                                                              "Content-Length": "12abc"}) + b"{}")
    assert 400 <= answer.status < 500


def test_a_body_shorter_than_its_content_length_gets_a_408_and_the_connection_closes(server):
    body = b'{"digits": [[[0, 0'
    answer = raw_exchange(server.url, request_head("/infer", {"Content-Type": "application/json",
                                                              "Content-Length": "5000"}) + body)
    assert answer.status == 408
    assert json.loads(answer.body)["reason"] == "body_timeout"
    assert answer.headers["connection"] == "close" and answer.closed
    assert answer.seconds < float(LIMITS["DIGITSERVE_REQUEST_TIMEOUT_S"])  # the body timeout, not the request's


# --- request heads: bounded before any route sees them (service/connection.py) -------------------------------


def header_block(count: int, size: int) -> dict[str, str]:
    return {f"X-Pad-{i}": "a" * size for i in range(count)}


@pytest.mark.parametrize("head", [
    request_head("/readyz", {"X-Big": "a" * 1_000_000}, method="GET"),  # one header of 1 MB
    request_head("/readyz", header_block(2_000, 20), method="GET"),  # many small ones, 60 KB together
    request_head("/readyz?" + "q" * 100_000, {}, method="GET"),  # a 100 KB request line
    request_head("/classify", {"Content-Type": "multipart/form-data; boundary=b0undary", "Content-Length": "10",
                               "Cookie": "c" * 40_000}),
], ids=["one-huge-header", "many-headers", "huge-url", "huge-cookie-on-a-post"])
def test_a_head_over_the_limit_is_a_431_and_the_connection_closes(server, head):
    answer = raw_exchange(server.url, head)
    assert answer.status == 431
    assert json.loads(answer.body)["reason"] == "header_too_large"
    assert answer.headers["connection"] == "close" and answer.closed


def test_a_head_just_under_the_limit_is_served(client):
    response = client.get("/readyz", headers={"Cookie": "c" * 15_000})
    assert response.status_code == 200


def test_a_huge_head_costs_the_worker_no_memory(server):
    """64 MB of one header, sent as fast as the socket takes it: refused after the first 16 KiB; the rest is
    read and dropped, never kept (before: a 256 MB header grew a worker by 360 MB and was answered 200)."""
    import psutil

    workers = [p for p in psutil.Process(server.pid).children(recursive=True) if "worker" in " ".join(p.cmdline())]
    before = sum(worker.memory_info().rss for worker in workers)
    answer = raw_exchange(server.url, request_head("/readyz", {}, method="GET")[:-2] + b"X-Big: " + b"a" * 64_000_000)
    grown = sum(worker.memory_info().rss for worker in workers) - before
    assert answer.status == 431
    assert grown < 16 * 2**20, f"the worker grew by {grown / 2**20:.0f} MB"


def test_a_head_that_stops_arriving_gets_a_408_and_the_connection_closes(server):
    answer = raw_exchange(server.url, b"GET /readyz HTTP/1.1\r\nHost: test\r\nX-Half: ")
    assert answer.status == 408
    assert json.loads(answer.body)["reason"] == "header_timeout"
    assert answer.closed
    assert answer.seconds < float(LIMITS["DIGITSERVE_HEADER_TIMEOUT_S"]) + 2


def test_a_connection_that_sends_nothing_is_closed(server):
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        started = time.perf_counter()
        assert sock.recv(1) == b""  # closed without an answer: there was no request to answer
        assert time.perf_counter() - started < float(LIMITS["DIGITSERVE_HEADER_TIMEOUT_S"]) + 2


def test_a_kept_alive_connection_may_idle_between_requests(server):
    """The head clock runs only while a head arrives: a client that waits longer than it between two
    requests on one connection is served both times."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    sockets = []
    try:
        for _ in range(2):
            # http.client reads each answer whole (one recv may hold only part of it) and keeps the
            # connection open between the two requests.
            connection.request("GET", "/readyz")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            sockets.append(connection.sock)
            time.sleep(float(LIMITS["DIGITSERVE_HEADER_TIMEOUT_S"]) * 1.5)
    finally:
        connection.close()
    assert sockets[0] is sockets[1], "the second request went over a new connection"


@pytest.mark.parametrize("payload", [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                     b"GET /readyz HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n"],
                         ids=["garbage", "http-9.9", "tls-hello", "header-without-colon"])
def test_bytes_that_are_not_http_get_a_400_with_the_error_body(server, payload):
    answer = raw_exchange(server.url, payload)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body)["reason"] == "malformed_http"
    assert answer.closed


def test_a_body_the_parser_cannot_read_gets_a_400_with_the_error_body(server):
    """A chunk size that is not hexadecimal, after a head that was fine (before: the connection closed
    with no answer at all, and the log held a traceback)."""
    head = request_head("/infer", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    answer = raw_exchange(server.url, head + b"zz\r\n{}\r\n0\r\n\r\n")
    assert answer.status == 400
    assert json.loads(answer.body)["reason"] == "malformed_http"
    assert answer.closed


class _Replay(io.BytesIO):
    """What a connection received, as a socket stand-in for http.client, which reads one answer from it per
    HTTPResponse (makefile() is the stream itself, and stays open when an answer is read)."""

    def makefile(self, *args, **kwargs):
        return self

    def close(self) -> None:
        pass


@pytest.mark.parametrize("bad", [b"GARBAGE\r\n\r\n",
                                 request_head("/infer", {"Content-Type": "application/json",
                                                         "Transfer-Encoding": "chunked"}) + b"zz\r\n{}\r\n"],
                         ids=["bad-head", "bad-body"])
def test_requests_pipelined_before_bad_bytes_are_answered_before_the_400(server, subset_data, bad):
    """Three requests sent at once, the last one broken: the first two are answered, in order, then the
    400, then the connection closes (before: it closed at once, and the two answers were lost)."""
    digits = json.dumps({"digits": subset_data.x_test[:1].tolist()}).encode()
    good = request_head("/infer", {"Content-Type": "application/json", "Content-Length": str(len(digits))}) + digits
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(good + request_head("/v2/health/ready", {}, method="GET") + bad)
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
    replay, answers = _Replay(received), []
    while replay.tell() < len(received):
        answer = http.client.HTTPResponse(replay)  # type: ignore[arg-type]
        answer.begin()
        answers.append((answer.status, answer.read()))
    assert [status for status, _ in answers] == [200, 200, 400]
    assert len(json.loads(answers[0][1])) == 1 and json.loads(answers[1][1]) == {"ready": True}
    assert json.loads(answers[2][1])["reason"] == "malformed_http"


def test_a_client_that_leaves_with_requests_pipelined_is_no_error(server, client, subset_data):
    """Three requests sent at once, then the connection closed before any answer: uvicorn told only the
    newest that the client had left, and the others wrote to a closed socket (a traceback each)."""
    digits = json.dumps({"digits": subset_data.x_test[:1].tolist()}).encode()
    good = request_head("/infer", {"Content-Type": "application/json", "Content-Length": str(len(digits))}) + digits
    tracebacks = server.log_tail(5_000_000).count("Traceback")
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(good * 3)  # one connection: one request at a time, well inside the concurrency limit
    time.sleep(2)  # the requests run on without their client
    assert client.post("/infer", content=digits, headers={"Content-Type": "application/json"}).status_code == 200
    assert server.log_tail(5_000_000).count("Traceback") == tracebacks, server.log_tail(3000)


def test_head_refusals_are_counted(server, client):
    def counts() -> dict[str, float]:
        found: dict[str, float] = {}
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("digitserve_rejected_inputs_total{") and 'protocol="http"' in line:
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                found[reason] = found.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    before = counts()
    assert raw_exchange(server.url, request_head("/readyz", {"X-Big": "a" * 100_000}, method="GET")).status == 431
    assert raw_exchange(server.url, b"GARBAGE\r\n\r\n").status == 400
    after = counts()
    assert after["header_too_large"] == before.get("header_too_large", 0) + 1
    assert after["malformed_http"] == before.get("malformed_http", 0) + 1


# --- every route, every method ------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,status,reason", [
    ("GET", "/no/such/route", 404, "not_found"),
    ("POST", "/%00", 404, "not_found"),
    ("GET", "/classify", 405, "method_not_allowed"),
    ("DELETE", "/infer", 405, "method_not_allowed"),
    ("POST", "/readyz", 405, "method_not_allowed"),
    ("PUT", "/model", 405, "method_not_allowed"),
])
def test_unknown_routes_and_methods_have_the_error_shape(client, method, path, status, reason):
    assert_error(client.request(method, path), status, reason)


@pytest.mark.parametrize("path", ["/v2", "/v2/health/ready", "/v2/models/mnist_cnn", "/model", "/metrics", "/ui",
                                  "/readyz"])
def test_head_is_get_without_the_body(client, path):
    """Every GET route takes HEAD, as RFC 9110 asks of every server (before: a 405 on the FastAPI routes)."""
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_head_on_a_post_route_is_still_a_405(client):
    response = client.head("/classify")
    assert response.status_code == 405 and response.content == b""


@pytest.mark.parametrize("path", ["/v2", "/classify", "/no/such/route"])
def test_a_websocket_handshake_gets_the_error_shape(client, path):
    """No route takes a WebSocket (before: uvicorn's bare 403 with an empty body)."""
    response = client.get(path, headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert "WebSocket" in assert_error(response, 404, "not_found")["error"]


def test_pickle_is_refused_on_every_route(client):
    for path in ("/classify", "/infer", "/model", "/nowhere"):
        response = client.post(path, content=b"\x80\x04K\x01.", headers={"Content-Type": "application/vnd.bentoml+pickle"})
        assert_error(response, 415, "pickle_not_allowed")


# --- pixel budgets -------------------------------------------------------------------------------------


def test_a_batch_over_the_request_pixel_budget_is_refused_before_decoding(client):
    """Each image is within the per-image limit; together they are not (3 x 25 Mpx > 60 Mpx)."""
    image = big_blank_png(5000, 5000)
    assert len(image) < 200_000
    files = [("images", (f"{i}.png", image, "image/png")) for i in range(3)]
    body = assert_error(client.post("/classify_batch", files=files), 422, "too_many_pixels")
    assert "60,000,000" in body["error"]


def test_an_image_over_the_pixel_limit_is_refused(client):
    assert_error(client.post("/classify", files={"image": ("big.png", big_blank_png(6000, 6000))}), 422, "too_many_pixels")


# --- overload ------------------------------------------------------------------------------------------------


def test_a_full_worker_answers_503_overloaded_at_once_and_recovers(server, client, subset_data):
    """Two stalled uploads fill the worker's two slots (DIGITSERVE_MAX_CONCURRENCY=2); the next request is
    refused at once with Retry-After, and once the slots are free requests are served again."""
    parts = urlsplit(server.url)
    stalled = []
    try:
        for _ in range(2):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            sock.sendall(request_head("/classify", {"Content-Type": "multipart/form-data; boundary=b0undary",
                                                    "Content-Length": "100000"}) + b"--b0undary\r\n")
            stalled.append(sock)
        time.sleep(0.3)  # both are admitted and waiting for their bodies
        response = client.post("/classify", files={"image": ("d.png", encode(subset_data.x_test[0], "PNG"))})
        assert_error(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1"
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.perf_counter() + 10
    while True:
        response = client.post("/classify", files={"image": ("d.png", encode(subset_data.x_test[0], "PNG"))})
        if response.status_code == 200 or time.perf_counter() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200, response.text


# --- afterwards ------------------------------------------------------------------------------------------


def test_no_request_above_earned_a_5xx_other_than_overloaded(client):
    """Read back from the service's own metrics: every answer it gave in this module, by status."""
    statuses: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("digitserve_http_requests_total{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            statuses[status] = statuses.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    server_errors = {status: count for status, count in statuses.items() if status.startswith("5") and count}
    assert set(server_errors) <= {"503"}, statuses
    assert statuses.get("503", 0) <= 1  # the one deliberate overload


def test_the_log_holds_no_traceback(server):
    log = server.log_tail(5_000_000)
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-4000:]
