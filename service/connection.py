"""Limits on a request's head (its request line and headers), which uvicorn reads before any ASGI code runs.

uvicorn's httptools protocol keeps a head of any size, for as long as it takes to arrive (uvicorn issues
#157 and #1684: httptools has no setting for it; h11 has ``h11_max_incomplete_event_size``, which vLLM's
advisory GHSA-rxc4-3w6r-4v47 is about). Measured here before this module: one 256 MB header grew a worker
by 360 MB and was answered 200, and a client that sent half a head and stopped held its connection open
for good. ``service.guard`` cannot help: it only sees a request once its head is complete.

``HeadLimitedProtocol`` is uvicorn's httptools protocol with three changes, each answered with the
service's error body (``{"error", "reason"}``) and counted in ``digitserve_rejected_inputs_total``
(protocol ``http``):

- a head longer than ``DIGITSERVE_MAX_HEADER_BYTES`` (64 KiB): 431 ``header_too_large``; at most one read
  (256 KiB) past the limit is ever held;
- a head not complete ``DIGITSERVE_HEADER_TIMEOUT_S`` (10 s) after its first byte: 408 ``header_timeout``;
  a new connection that sends nothing for as long is closed without an answer;
- a head the parser cannot read: 400 ``malformed_http`` (uvicorn answers plain text);
- a body the parser cannot read (a chunk size that is not hexadecimal): the same 400, for that request
  (uvicorn closed the connection without an answer).

Either way the connection closes, as it must: the rest of that request is read and dropped for
``LINGER_S``, never parsed. A refusal waits its turn: requests that arrived whole before the bad bytes on
the same connection (pipelined) are answered first, then the refusal (uvicorn closed the connection at
once, dropping their answers and logging a traceback for each). Between requests on a kept-alive
connection no clock runs here (uvicorn's keep-alive timeout closes an idle one).

``install(settings)`` makes this class uvicorn's "auto" HTTP protocol in the process. A BentoML worker
imports the service module, which calls it, before it builds its uvicorn ``Config``, so every worker's
connections go through it.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from http import HTTPStatus

import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service import errors
from service.metrics import domain_metrics
from service.settings import Settings

LINGER_S = 2.0  # after a refusal, how long the rest of the request is read and dropped before the connection closes
PROTOCOL_LABEL = "http"  # the rejected counter's protocol label for refusals made before any route is known


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that bounds each request head in bytes and in time."""

    max_head_bytes = 64 * 1024  # install() sets both from the settings
    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # bytes read while this head was arriving (bounds what the parser holds)
        self._in_head = False  # between a message's first byte and the end of its headers
        self._head_fields = 0  # bytes of this head's request target and headers, as the parser hands them over
        self._head_clock: asyncio.TimerHandle | None = self.loop.call_later(self.head_timeout_s, self._head_too_slow)
        self._refused = False
        self._running: RequestResponseCycle | None = None  # the request whose app runs (uvicorn keeps only the newest)
        self._refusal_due: errors.ServiceError | None = None  # to send once the answers still owed are sent

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        # uvicorn tells only the newest request that the client left; with pipelining, the one running and
        # those queued would write to a closed transport (a RuntimeError and a traceback for each).
        for cycle in (self._running, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the rest of a refused request: read and dropped (see _refuse)
            return
        super().data_received(data)  # the parser's callbacks below run inside this call
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:  # a head still arriving, already too long
                self._refuse(self._too_large())

    # The parser's callbacks. After a refusal the parser may still be reading the same bytes (a pipelined
    # body or request): none of it reaches uvicorn.

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._in_head, self._head_bytes, self._head_fields = True, 0, 0
        if self._head_clock is None:
            self._head_clock = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._head_fields += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += len(name) + len(value) + 4  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._stop_head_clock()
        if self._head_fields > self.max_head_bytes:  # a head that arrived within one read
            self._refuse(self._too_large())
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        """An answer is sent: the next pipelined request runs; after the last one owed, a refusal goes out."""
        if not self._refused or self.pipeline:
            super().on_response_complete()
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        refusal, self._refusal_due = self._refusal_due, None
        if refusal is None:  # the request with the bad bytes had already been answered (an early 413, say)
            self.transport.close()
        else:
            self._answer_and_close(refusal)

    def send_400_response(self, msg: str) -> None:
        """The parser could not read the request (uvicorn's own answer is plain text)."""
        self._refuse(errors.MalformedHttp("The request is not valid HTTP/1.1 (it could not be parsed)."))

    def _head_too_slow(self) -> None:
        self._head_clock = None
        if self._in_head:
            self._refuse(errors.HeaderTimeout(
                f"The request line and headers did not arrive within {self.head_timeout_s:g} s "
                "(DIGITSERVE_HEADER_TIMEOUT_S)."))
        elif not self.transport.is_closing():  # the clock connection_made started: not a byte has come
            self.transport.close()

    def _too_large(self) -> errors.HeaderTooLarge:
        return errors.HeaderTooLarge(f"The request line and headers are over {self.max_head_bytes} bytes "
                                     "(DIGITSERVE_MAX_HEADER_BYTES).")

    def _stop_head_clock(self) -> None:
        if self._head_clock is not None:
            self._head_clock.cancel()
            self._head_clock = None

    def _refuse(self, error: errors.ServiceError) -> None:
        """Answer ``error`` and end the connection, once every answer owed before it is sent.

        The bad bytes are a new request's head, or the body of the newest request (``self.cycle``, still
        waiting for more of it). That request is never answered by its app: if it has not run yet it never
        will, and if it runs, its app hears the client leave; the refusal is its answer. Unless its app has
        already started an answer (an early 413): that one stands, and the connection closes after it."""
        self._in_head = False
        self._stop_head_clock()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True  # from here on, nothing this connection sends reaches uvicorn
        domain_metrics().rejected.labels(reason=error.reason, protocol=PROTOCOL_LABEL).inc()
        refusal: errors.ServiceError | None = error
        broken = self.cycle if self.cycle is not None and self.cycle.more_body else None
        if broken is not None and broken.response_started:
            refusal = None  # its app answered before its body was all there (a 415, say): that answer stands
        elif broken is not None:
            self.pipeline = deque(queued for queued in self.pipeline if queued[0] is not broken)
            broken.disconnected = True  # its receive() now says so, and whatever it sends goes nowhere
            broken.message_event.set()
        owed = self.pipeline or (self._running is not None and not self._running.response_complete
                                 and not self._running.disconnected)
        if owed:
            self._refusal_due = refusal
        elif refusal is None:
            self.transport.close()
        else:
            self._answer_and_close(refusal)

    def _answer_and_close(self, error: errors.ServiceError) -> None:
        """Send ``error`` and end the connection.

        Closing at once while the client is still sending would make the kernel answer its next bytes with
        a reset, which can destroy the answer before the client reads it. So the write side is shut and
        whatever else arrives is read and dropped for up to ``LINGER_S`` (nginx's lingering close)."""
        self.transport.write(error_response(error, self.server_state.default_headers))
        if not self.transport.can_write_eof():
            self.transport.close()
        else:
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)


def error_response(error: errors.ServiceError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole HTTP/1.1 answer for ``error``: status line, headers (``connection: close``), JSON body."""
    body = json.dumps(error.to_dict(), separators=(",", ":")).encode()
    status = HTTPStatus(error.status_code)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}".encode("latin-1")]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(), b"connection: close"]
    lines += [f"{name.lower()}: {value}".encode("latin-1") for name, value in error.headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def install(settings: Settings) -> None:
    """Make ``HeadLimitedProtocol``, with ``settings``' limits, uvicorn's "auto" HTTP protocol here."""
    HeadLimitedProtocol.max_head_bytes = settings.max_header_bytes
    HeadLimitedProtocol.head_timeout_s = settings.header_timeout_s
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:{HeadLimitedProtocol.__name__}"
