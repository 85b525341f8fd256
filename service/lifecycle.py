"""Graceful drain: what a worker does between SIGTERM and its exit, so that no accepted request is lost.

``bentoml serve`` passes a SIGTERM on to every worker at once (circus, its process manager, waits for
them). Uvicorn alone would then close the listening socket and every connection without a parsed request
at once; a client whose request was on its way saw its connection reset. Instead each worker:

1. turns not ready at once: ``/readyz`` and ``/v2/health/ready`` answer 503, and every answer carries
   ``Connection: close``, so keep-alive clients reconnect (and a load balancer stops sending);
2. keeps serving for ``DIGITSERVE_DRAIN_DELAY_S``, the time a load balancer needs to notice;
3. stops new connections at the listening socket itself, while those already waiting in its queue are
   still accepted: a filter on the socket drops new connection requests (a client's SYN), so the kernel
   accepts no more; once the socket closes, the client's retry is refused;
4. serves every request already accepted, until no request has arrived for ``QUIET_S`` and none is in
   progress (at most ``DIGITSERVE_REQUEST_TIMEOUT_S``);
5. hands over to uvicorn's own shutdown, which now finds only idle connections, and exits.

``bentoml serve`` exits 0 once every worker has.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import struct
import time
from typing import Callable

logger = logging.getLogger(__name__)

QUIET_S = 1.0  # no new request for this long (and none in progress): every queued connection has been served

# A classic BPF socket filter for a listening TCP socket: drop segments whose flags are SYN without ACK (a
# new connection), pass everything else (the handshakes already under way). Offsets are into the TCP header.
_BPF_LD_B_ABS, _BPF_ALU_AND_K, _BPF_JEQ_K, _BPF_RET_K = 0x30, 0x54, 0x15, 0x06
_DROP_NEW_CONNECTIONS = (
    (_BPF_LD_B_ABS, 0, 0, 13),  # A = the TCP flags byte
    (_BPF_ALU_AND_K, 0, 0, 0x12),  # A &= SYN | ACK
    (_BPF_JEQ_K, 0, 1, 0x02),  # SYN alone?
    (_BPF_RET_K, 0, 0, 0),  # yes: drop
    (_BPF_RET_K, 0, 0, 0xFFFFFFFF),  # no: pass
)
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)


class Activity:
    """Requests in progress and the time of the last arrival, kept by the guard middleware."""

    def __init__(self) -> None:
        self.in_progress = 0
        self.last_arrival = time.monotonic()
        self.draining = False

    def started(self) -> None:
        self.in_progress += 1
        self.last_arrival = time.monotonic()

    def finished(self) -> None:
        self.in_progress -= 1

    def quiet_for(self) -> float:
        return 0.0 if self.in_progress else time.monotonic() - self.last_arrival


activity = Activity()  # this worker's; one event loop per worker, so no lock


def refuse_new_connections() -> int:
    """Make every listening TCP socket of this process drop new connection requests; return how many.

    The sockets are shared with the other workers and with ``bentoml serve`` (one socket, several file
    descriptors), so this stops new connections for all of them. Linux only; elsewhere nothing is done.
    """
    try:
        import psutil

        listening = [c.fd for c in psutil.Process().net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.fd >= 0]
    except Exception:  # no permission to list sockets: the drain goes on without the filter
        logger.warning("Could not list the listening sockets; new connections are not stopped early.", exc_info=True)
        return 0
    program = b"".join(struct.pack("HBBI", *instruction) for instruction in _DROP_NEW_CONNECTIONS)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(_DROP_NEW_CONNECTIONS), ctypes.addressof(buffer))  # struct sock_fprog
    done = 0
    for fd in listening:
        duplicate = socket.socket(fileno=os.dup(fd))
        try:
            duplicate.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            done += 1
        except OSError:
            logger.warning("Could not filter listening socket %d; new connections are not stopped early.", fd,
                           exc_info=True)
        finally:
            duplicate.close()
    return done


class Drain:
    """This worker's SIGTERM handling: the steps in the module docstring, then ``shutdown``."""

    def __init__(self, drain_delay_s: float, max_wait_s: float, on_draining: Callable[[], None]) -> None:
        self.drain_delay_s = drain_delay_s
        self.max_wait_s = max_wait_s
        self.on_draining = on_draining
        self._shutdown: Callable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Take SIGTERM over from uvicorn (which installed its handler before the service started), keeping
        uvicorn's handler as the last step. Call from the worker's main thread, inside its event loop."""
        self._loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):  # not under uvicorn (an in-process test): nothing to hand over to
            return
        self._shutdown = previous
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if activity.draining:
            return
        activity.draining = True
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.run(signum, frame)))

    async def run(self, signum: int = signal.SIGTERM, frame=None) -> None:
        started = time.monotonic()
        self.on_draining()
        logger.info("SIGTERM: not ready now; serving for %.1f s more (DIGITSERVE_DRAIN_DELAY_S)", self.drain_delay_s)
        await asyncio.sleep(self.drain_delay_s)
        filtered = refuse_new_connections()
        logger.info("No new connections (%d listening socket(s) filtered); serving those already accepted", filtered)
        deadline = time.monotonic() + self.max_wait_s
        while activity.quiet_for() < QUIET_S and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        logger.info("Drained after %.1f s; shutting down", time.monotonic() - started)
        if self._shutdown is not None:
            self._shutdown(signum, frame)
