"""Which TCP connections are SMTP sessions, and who is the client in each.

The flow table sits between packet decoding and reassembly.  It decides, per
4-tuple, whether to follow a connection (a known SMTP port, or -- with banner
detection -- a server that greets with ``220``), which side is the client
(the SYN's sender; else the side not on the SMTP port; else the side that did
not send the banner), and when the same 4-tuple starts a new connection.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from pcapsmtp.packets import ACK, FIN, RST, SYN, Segment, TooBig

DEFAULT_PORTS = frozenset({25, 465, 587})
IMPLICIT_TLS_PORTS = frozenset({465})

# With banner detection, how many segments of an unknown flow we keep while waiting for
# its greeting; a flow that shows no ``220`` by then is ignored.  Enough for a SOCKS5 or
# HTTP CONNECT tunnel's round trips (and their ACKs) before the 220.
PROBE_SEGMENTS = 16

Key = tuple[str, int, str, int]

_FIN_RST = FIN | RST


@dataclass
class Selection:
    """What the user asked to follow."""

    ports: frozenset[int] = DEFAULT_PORTS
    implicit_tls_ports: frozenset[int] = IMPLICIT_TLS_PORTS
    any_port: bool = False  # find SMTP on any port by its 220 banner
    # Set when nothing was found on the SMTP ports and the sessions reported were then
    # found by their greeting: the report says so, not only the options.
    by_greeting_fallback: bool = False


@dataclass
class _Probe:
    """A flow on a non-SMTP port that might still turn out to be SMTP."""

    segments: list[Segment] = field(default_factory=list)


def flow_key(seg: Segment) -> Key:
    """Same key for both directions of a connection."""
    a = (seg.src, seg.sport)
    b = (seg.dst, seg.dport)
    return (*a, *b) if a <= b else (*b, *a)  # type: ignore[return-value]


def _looks_like_banner(payload: bytes) -> bool:
    """A 220 greeting, or a proxy's tunnel answer with the greeting behind it in the same
    segment (``HTTP/1.1 200 ...\r\n\r\n220 mx ESMTP``)."""
    if payload[:7] == b"HTTP/1.":
        end = payload.find(b"\r\n\r\n", 0, 4096)
        payload = payload[end + 4:] if end >= 0 else b""
    return len(payload) >= 4 and payload[:3] == b"220" and payload[3:4] in (b" ", b"-")


def choose_client(seg: Segment, ports: frozenset[int]) -> tuple[tuple[str, int], tuple[str, int]]:
    """Client and server endpoints for the first segment seen of a connection."""
    src, dst = (seg.src, seg.sport), (seg.dst, seg.dport)
    flags = seg.flags
    if flags & SYN and not flags & ACK:
        return src, dst
    if flags & SYN and flags & ACK:
        return dst, src
    if seg.dport in ports and seg.sport not in ports:
        return src, dst
    if seg.sport in ports and seg.dport not in ports:
        return dst, src
    if _looks_like_banner(seg.payload):
        return dst, src
    # Both or neither on an SMTP port: the lower port is the service.
    return (src, dst) if seg.dport <= seg.sport else (dst, src)


class FlowTable:
    """Routes segments to per-connection handlers made by ``factory``.

    ``factory(client, server, first_segment)`` returns an object with
    ``add(seg)``, ``add_too_big(msg)`` and ``closed_at`` (capture time at which the
    connection closed, or None); the table only decides identity and lifetime.
    ``closed_at`` may change from None only while a segment with FIN or RST is
    added, and then never again: ``pop_closed`` takes the connections from a heap
    ordered by it, filled as they close.
    """

    def __init__(self, selection: Selection, factory: Callable[..., object]) -> None:
        self.selection = selection
        self.factory = factory
        self.active: dict[Key, object] = {}
        # Both directions' (src, sport, dst, dport) -> the connection in ``active``: one
        # tuple and one lookup per segment instead of ``flow_key``'s ordering of endpoints.
        self._route: dict[Key, object] = {}
        self._probes: dict[Key, _Probe] = {}
        # Closed connections as (closed_at, opening number, key, connection), a heap,
        # and the number each connection in ``active`` was opened with (its place in
        # ``active``).  pop_closed scanned all of ``active`` every 2048 frames; in the
        # benchmarks nearly all of it (1,140 of 1,185 on average in bench-300000) is
        # closed connections waiting out the grace, so only a heap avoids the scan.
        self._closed: list[tuple[float, int, Key, object]] = []
        self._order: dict[Key, int] = {}
        self._queued: set[int] = set()  # opening numbers in ``_closed``
        self._opened = 0
        self.too_big_unmatched = 0  # ICMP too-big messages about no followed connection

    def add(self, seg: Segment) -> tuple[object, ...]:
        """Feed one segment; returns the connections it displaced (to be finished).

        A tuple, not a generator (one generator per packet), and one lookup of the
        segment's own 4-tuple: with reassembly's inlined hot path, both over the
        100k-frame benchmark's 101k segments 0.40 -> 0.31 s CPU.  The displaced
        connection is out of the table before the new one opens.
        """
        conn = self._route.get((seg.src, seg.sport, seg.dst, seg.dport))
        if conn is not None:
            flags = seg.flags
            if not flags & SYN or not _starts_new_connection(seg, conn):
                conn.add(seg)  # type: ignore[attr-defined]
                if flags & _FIN_RST:
                    self._closing(flow_key(seg), conn)
                return ()
            key = flow_key(seg)
            self._remove(key)
            self._start(key, seg)
            return (conn,)
        self._start(None, seg)
        return ()

    def add_too_big(self, msg: TooBig) -> None:
        """An ICMP too-big goes to the connection its quoted segment belongs to.  One about
        a connection not followed (another port, not opened yet, finished, or a banner
        probe still undecided) is only counted: an ICMP message never opens a session."""
        conn = self._route.get((msg.src, msg.sport, msg.dst, msg.dport))
        if conn is None:
            self.too_big_unmatched += 1
        else:
            conn.add_too_big(msg)  # type: ignore[attr-defined]

    def _start(self, key: Key | None, seg: Segment) -> None:
        """A segment of no followed connection: open one, or probe for a banner."""
        ports = self.selection.ports
        if seg.sport in ports or seg.dport in ports:
            self._open(key or flow_key(seg), seg, [seg])
        elif self.selection.any_port:
            self._probe(key or flow_key(seg), seg)

    def _remove(self, key: Key) -> object:
        """Take a connection out of ``active`` and out of the routes of both directions."""
        conn = self.active.pop(key)
        del self._order[key]
        self._route.pop(key, None)
        self._route.pop((key[2], key[3], key[0], key[1]), None)
        return conn

    def _open(self, key: Key, first: Segment, segments: list[Segment]) -> None:
        client, server = choose_client(first, self.selection.ports)
        conn = self.factory(client, server, first)
        self.active[key] = conn
        self._opened += 1
        self._order[key] = self._opened
        self._route[key] = self._route[(key[2], key[3], key[0], key[1])] = conn
        for s in segments:
            conn.add(s)  # type: ignore[attr-defined]
            if s.flags & _FIN_RST:
                self._closing(key, conn)

    def _closing(self, key: Key, conn: object) -> None:
        """After a FIN or RST: queue the connection if it is closed now (once)."""
        closed_at = conn.closed_at  # type: ignore[attr-defined]
        order = self._order[key]
        if closed_at is not None and order not in self._queued:
            self._queued.add(order)
            heapq.heappush(self._closed, (closed_at, order, key, conn))

    def _probe(self, key: Key, seg: Segment) -> None:
        probe = self._probes.setdefault(key, _Probe())
        probe.segments.append(seg)
        if _looks_like_banner(seg.payload):
            del self._probes[key]
            first = probe.segments[0]
            if not first.flags & SYN:
                first = seg  # no handshake seen: the banner tells who serves
            self._open(key, first, probe.segments)
        elif len(probe.segments) >= PROBE_SEGMENTS or seg.flags & (FIN | RST):
            del self._probes[key]

    def pop_closed(self, now: float, grace: float) -> list[object]:
        """Connections closed more than ``grace`` seconds of capture time ago, in the
        order they were opened (the order of ``active``)."""
        heap, order = self._closed, self._order
        done = []
        while heap and now - heap[0][0] > grace:
            _, n, key, _ = heapq.heappop(heap)
            self._queued.discard(n)
            if order.get(key) == n:  # still open (not displaced or taken out since)
                done.append((n, key))
        done.sort()
        return [self._remove(key) for _, key in done]

    def pop_idle(self, now: float, idle: float) -> list[object]:
        """Connections with no packet for ``idle`` seconds (live mode)."""
        done = [k for k, c in self.active.items() if now - c.last_time > idle]  # type: ignore
        return [self._remove(k) for k in done]

    def drain(self) -> list[object]:
        """Everything still open: the capture ended."""
        conns = list(self.active.values())
        self.active.clear()
        self._route.clear()
        self._probes.clear()
        self._closed.clear()
        self._queued.clear()
        self._order.clear()
        return conns


def _starts_new_connection(seg: Segment, conn: object) -> bool:
    """A fresh SYN on a 4-tuple whose previous connection is over (port reuse)."""
    if not (seg.flags & SYN) or seg.flags & ACK:
        return False
    return bool(getattr(conn, "closed_at", None) is not None or getattr(conn, "has_data", False)) \
        and seg.seq != getattr(conn, "client_isn", seg.seq)
