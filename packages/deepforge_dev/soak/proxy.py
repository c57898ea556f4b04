"""A small fault-injecting TCP proxy on loopback, for the soak run.

One :class:`FaultProxy` stands in front of one ``(host, port)`` (the WebGME server, the S3 server): clients
connect to ``127.0.0.1:<proxy.port>`` and every connection is forwarded byte for byte to the upstream, until a
fault is switched on, live, with :meth:`FaultProxy.set_fault`:

``"none"``
    Forward unchanged, both ways, with half-close (HTTP keep-alive, boto3's connection pool and socket.io's
    websocket all pass through as they are).
``"drop"``
    New connections are accepted and closed at once (the client sees the connection closed before any
    answer); open connections stop forwarding (what they send is discarded: a partition, seen by the client as
    a read timeout), or with ``open="close"`` are closed.  A connection that was black-holed has a gap in its
    byte stream, so it is closed when the fault changes.  ``count=N``: drop the next N new connections, then
    go back to ``"none"``.
``"delay"``
    ``seconds=S``: every chunk read from either side after the switch is forwarded S seconds after it arrived
    (latency, pipelined: throughput stays, the order of bytes is kept).
``"reset"``
    Open connections are ended at once with a TCP RST (``SO_LINGER`` 0, both sides), and new ones as soon as
    they carry their first bytes: the client sees ``ConnectionResetError``.  ``count=N``: reset N connections
    in all, then go back to ``"none"`` (a reset burst).

:meth:`FaultProxy.reset_all` resets every open connection once without changing the fault, and
:meth:`FaultProxy.stats` counts connections, bytes and faults applied.  When the upstream refuses a connection
(a server being restarted), the client's connection is reset, the closest a proxy can come to "refused".

Standard library only: one accept thread plus one thread per connection (non-blocking sockets under
``poll``, so neither direction can stall the other); :meth:`FaultProxy.stop` closes every socket and joins
every thread.  Why not a ready-made one: Toxiproxy is a Go server (not installable with pip) and its Python
clients (``toxiproxy-python``, unmaintained since 2019) only drive that server; an in-process proxy needs no
extra binary, starts in milliseconds, and its faults are switched synchronously from the soak driver.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import select
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

FAULT_KINDS = ("none", "drop", "delay", "reset")
_PARAMS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "drop": frozenset({"count", "open"}),
    "delay": frozenset({"seconds"}),
    "reset": frozenset({"count"}),
}
_CHUNK = 64 * 1024
_MAX_PENDING = 1 << 20  # bytes per direction waiting for the destination before the source is read again
_POLL_S = 0.05  # how often an idle thread looks at the stop flag and the fault
_JOIN_S = 10.0


@dataclasses.dataclass(frozen=True)
class ProxyStats:
    """Counters of one proxy since :meth:`FaultProxy.start` (``as_dict()`` for a JSON report)."""

    fault: str  #: the fault now in force
    accepted: int  #: connections accepted (dropped ones included)
    open: int  #: connections open now
    bytes_up: int  #: bytes forwarded client -> upstream
    bytes_down: int  #: bytes forwarded upstream -> client
    dropped: int  #: new connections closed at accept under ``"drop"``
    blackholed: int  #: open connections that stopped forwarding under ``"drop"``
    closed_by_fault: int  #: open connections closed under ``"drop"`` with ``open="close"`` or after a black hole
    delayed: int  #: connections that had at least one chunk delayed
    reset: int  #: connections ended with an RST by a fault or :meth:`FaultProxy.reset_all`
    upstream_failures: int  #: connections whose upstream connect failed (the client got an RST)
    faults_set: dict[str, int]  #: :meth:`FaultProxy.set_fault` calls by kind (``reset_all`` counts as ``"reset_all"``)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Fault:
    kind: str = "none"
    seconds: float = 0.0
    count: int | None = None  # connections left before going back to "none"; None: until changed
    open: str = "blackhole"


def _rst(sock: socket.socket | None) -> None:
    """Close with an RST instead of a FIN (``SO_LINGER`` on, zero seconds)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Direction:
    """One way of a connection: what was read from ``src`` and waits (until its due time) for ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        self.src, self.dst, self.up = src, dst, up
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.pending = 0
        self.eof = False  # src sent FIN
        self.shut = False  # dst got our FIN

    def due(self, now: float) -> bool:
        return bool(self.queue) and self.queue[0][0] <= now


class _Link:
    """One proxied connection, run by its own thread."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, number: int) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.reset_requested = False
        self.close_requested = False
        self.blackholed = False
        self.delayed = False
        self.thread = threading.Thread(target=self._run, name=f"FaultProxy:{proxy.port}:link{number}", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def _run(self) -> None:
        try:
            self._forward()
        except Exception:  # pragma: no cover - a bug here must not kill the proxy silently
            log.exception("fault proxy link failed")
            self._reset()
        finally:
            self.proxy._forget(self)

    def _close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()

    def _reset(self) -> None:
        _rst(self.client)
        _rst(self.upstream)

    def _forward(self) -> None:
        try:
            self.upstream = socket.create_connection(self.proxy.upstream, timeout=self.proxy.connect_timeout)
        except OSError as exc:
            log.debug("fault proxy: upstream %s:%s refused: %s", *self.proxy.upstream, exc)
            self.proxy._count("upstream_failures")
            _rst(self.client)
            return
        self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.setblocking(False)
        self.upstream.setblocking(False)
        ways = (_Direction(self.client, self.upstream, True), _Direction(self.upstream, self.client, False))
        poller = select.poll()
        fds = {self.client.fileno(): self.client, self.upstream.fileno(): self.upstream}
        for fd in fds:
            poller.register(fd, 0)
        while True:
            if self.proxy._stopping.is_set() or self.close_requested:
                self._close()
                return
            if self.reset_requested:
                self._reset()
                return
            now = time.monotonic()
            events = {fd: 0 for fd in fds}
            timeout = _POLL_S
            for way in ways:
                if not way.eof and way.pending < _MAX_PENDING:
                    events[way.src.fileno()] |= select.POLLIN
                if way.due(now):
                    events[way.dst.fileno()] |= select.POLLOUT
                elif way.queue:
                    timeout = min(timeout, max(0.0, way.queue[0][0] - now))
            for fd, mask in events.items():
                poller.modify(fd, mask)
            ready = dict(poller.poll(timeout * 1000))
            if any(mask & select.POLLERR for mask in ready.values()):  # a peer reset us: pass the reset on
                self._reset()
                return
            for way in ways:
                readable = ready.get(way.src.fileno(), 0) & (select.POLLIN | select.POLLHUP | select.POLLERR)
                if readable and not way.eof and not self._read(way):
                    return
                writable = ready.get(way.dst.fileno(), 0) & (select.POLLOUT | select.POLLERR)
                if writable and way.due(time.monotonic()) and not self._write(way):
                    return
                if way.eof and not way.queue and not way.shut:
                    way.shut = True
                    with contextlib.suppress(OSError):
                        way.dst.shutdown(socket.SHUT_WR)
            if all(way.shut for way in ways):
                self._close()
                return

    # ------------------------------------------------------------------ data
    def _read(self, way: _Direction) -> bool:
        """Read one chunk from ``way.src``; False when the link is over (closed or reset here)."""
        try:
            data = way.src.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:  # reset by the peer: pass the reset on
            self._reset()
            return False
        if not data:
            way.eof = True
            return True
        if self.blackholed:
            return True
        if self.proxy._take("reset"):
            self.proxy._count("reset")
            self._reset()
            return False
        fault = self.proxy._fault
        due = time.monotonic()
        if fault.kind == "delay":
            due += fault.seconds
            if not self.delayed:
                self.delayed = True
                self.proxy._count("delayed")
        way.queue.append((due, data))
        way.pending += len(data)
        return True

    def _write(self, way: _Direction) -> bool:
        due, data = way.queue.popleft()
        try:
            sent = way.dst.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._reset()
            return False
        if sent < len(data):
            way.queue.appendleft((due, data[sent:]))
        way.pending -= sent
        self.proxy._count("bytes_up" if way.up else "bytes_down", sent)
        return True


class FaultProxy:
    """A TCP proxy on ``listen_host:listen_port`` (a free port by default) in front of ``upstream``.

    ``start()`` returns the port it listens on (also :attr:`port`); ``with FaultProxy(...) as proxy:`` starts
    and stops it.  Faults are switched live with :meth:`set_fault` (see the module docstring for the kinds).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.upstream = (upstream[0], int(upstream[1]))
        self.listen_host = listen_host
        self.connect_timeout = connect_timeout
        self.port = listen_port
        self._lock = threading.Lock()
        self._fault = _Fault()
        self._links: set[_Link] = set()
        self._counters: collections.Counter[str] = collections.Counter()
        self._faults_set: collections.Counter[str] = collections.Counter()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    @classmethod
    def for_url(cls, url: str, **options: Any) -> FaultProxy:
        """A proxy in front of the host and port of ``url`` (``http://127.0.0.1:8888`` -> that server)."""
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"FaultProxy: no host in URL {url!r}")
        return cls((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), **options)

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by this proxy's (path and query kept)."""
        parts = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{self.listen_host}:{self.port}"))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        if self._acceptor is not None:
            raise RuntimeError("FaultProxy already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.listen_host, self.port))
            listener.listen(128)
            listener.settimeout(_POLL_S)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._stopping.clear()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"FaultProxy:{self.port}:accept", daemon=True)
        self._acceptor.start()
        log.debug("fault proxy 127.0.0.1:%d -> %s:%d", self.port, *self.upstream)
        return self.port

    def stop(self) -> None:
        """Stop accepting, close every connection and join every thread (idempotent)."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_S)
        if self._listener is not None:
            self._listener.close()
        self._join(self._snapshot())
        if self._acceptor is not None and self._acceptor.is_alive():  # pragma: no cover - never seen
            log.warning("fault proxy on port %d: accept thread still alive after stop", self.port)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults
    def set_fault(self, kind: str, **params: Any) -> None:
        """Switch the fault for every connection from now on (see the module docstring)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"FaultProxy.set_fault: unknown kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
        unknown = set(params) - _PARAMS[kind]
        if unknown:
            allowed = ", ".join(sorted(_PARAMS[kind])) or "none"
            raise ValueError(f"FaultProxy.set_fault({kind!r}): unknown parameter(s) {sorted(unknown)} ({allowed})")
        count = params.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError(f"FaultProxy.set_fault({kind!r}): count must be a positive integer, not {count!r}")
        fault = _Fault(kind=kind, count=count)
        if kind == "delay":
            seconds = params.get("seconds")
            if not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ValueError(f"FaultProxy.set_fault('delay'): seconds must be a positive number, not {seconds!r}")
            fault = dataclasses.replace(fault, seconds=float(seconds))
        if kind == "drop":
            open_ = params.get("open", "blackhole")
            if open_ not in ("blackhole", "close"):
                raise ValueError(f"FaultProxy.set_fault('drop'): open must be 'blackhole' or 'close', not {open_!r}")
            fault = dataclasses.replace(fault, open=open_)
        to_join: list[_Link] = []
        with self._lock:
            self._faults_set[kind] += 1
            self._fault = fault
            for link in self._links:
                if kind == "drop" and fault.open == "blackhole" and not link.blackholed:
                    link.blackholed = True
                    self._counters["blackholed"] += 1
                elif (kind == "drop" and fault.open == "close") or (kind != "drop" and link.blackholed):
                    link.close_requested = True
                    self._counters["closed_by_fault"] += 1
                    to_join.append(link)
            if kind == "reset":
                for link in list(self._links):
                    if link.close_requested or not self._take_locked("reset"):
                        continue
                    link.reset_requested = True
                    self._counters["reset"] += 1
                    to_join.append(link)
        self._join(to_join)

    def reset_all(self) -> int:
        """RST every open connection now (the fault stays as it is); returns how many were reset."""
        with self._lock:
            self._faults_set["reset_all"] += 1
            links = [link for link in self._links if not link.close_requested]
            for link in links:
                link.reset_requested = True
            self._counters["reset"] += len(links)
        self._join(links)
        return len(links)

    @property
    def fault(self) -> str:
        return self._fault.kind

    def stats(self) -> ProxyStats:
        with self._lock:
            c = self._counters
            return ProxyStats(
                fault=self._fault.kind,
                accepted=c["accepted"],
                open=len(self._links),
                bytes_up=c["bytes_up"],
                bytes_down=c["bytes_down"],
                dropped=c["dropped"],
                blackholed=c["blackholed"],
                closed_by_fault=c["closed_by_fault"],
                delayed=c["delayed"],
                reset=c["reset"],
                upstream_failures=c["upstream_failures"],
                faults_set=dict(self._faults_set),
            )

    # ------------------------------------------------------------------ internals
    def _accept_loop(self) -> None:
        assert self._listener is not None
        number = 0
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            client.settimeout(None)
            with self._lock:
                self._counters["accepted"] += 1
                if self._take_locked("drop"):
                    self._counters["dropped"] += 1
                    client.close()
                    continue
                number += 1
                link = _Link(self, client, number)
                self._links.add(link)
            link.thread.start()

    def _take(self, kind: str) -> bool:
        with self._lock:
            return self._take_locked(kind)

    def _take_locked(self, kind: str) -> bool:
        """Whether the fault in force is ``kind``; uses one of its ``count`` (back to "none" after the last)."""
        fault = self._fault
        if fault.kind != kind:
            return False
        if fault.count is not None:
            self._fault = _Fault() if fault.count <= 1 else dataclasses.replace(fault, count=fault.count - 1)
        return True

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _snapshot(self) -> list[_Link]:
        with self._lock:
            return list(self._links)

    @staticmethod
    def _join(links: Iterable[_Link]) -> None:
        current = threading.current_thread()
        for link in links:
            if link.thread is not current and link.thread.ident is not None:
                link.thread.join(_JOIN_S)
