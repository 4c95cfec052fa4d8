"""TCP reassembly per direction, keeping where every byte came from.

INTERFACE (implemented by the reassembly work):

    conn = Connection(client=("192.0.2.1", 40000), server=("198.51.100.2", 25))
    for ev in conn.add(segment): ...     # segment: packets.Segment of either direction
    for ev in conn.finish(): ...         # end of capture: flush, report what is missing
    conn.stats                           # per-direction counters

Direction is "C" (client to server) or "S" (server to client).  Stream offsets
count payload bytes from the first byte after the SYN (ISN + 1); when the SYN
was not captured, from the first byte seen in that direction.

Events come out in capture order.  A ``Data`` event is the next contiguous
bytes of one direction: its offset is always exactly where the previous Data
or Gap of that direction ended.  Every Data carries the frame and time of the
segment the bytes came from; a segment delivered late (out of order) keeps its
own frame number.

What the events guarantee, and the judgement calls behind them:

- Per direction, Data and Gap tile the stream from offset 0 without holes or
  overlaps: every byte appears once, as Data (first copy seen wins) or as Gap.
- Flag events come at the segment's own time.  SYN/SYN-ACK sit at offset 0, a FIN
  at the end of the data it carries (after that Data when it was in order; at
  once, before any missing bytes, when it was not), an RST at its own sequence
  number.  ``repeat`` marks the same flag sent again by that direction.
- Gaps come from: an ACK beyond what we delivered ("acked-unseen"), the
  out-of-order buffer overflowing ("out-of-order-flush"), ``finish`` ("end-of-
  capture", also for bytes missing before a FIN), snaplen cuts ("snaplen") and,
  at ``finish``, the sender's own later sequence numbers ("sent-unseen").
- An ACK-revealed hole is held ACK_HOLD seconds of capture time before it is
  declared: real captures (suricata-verify issue-4220 1flowB, arkime
  smtp-decrypted) record the receiver's ACK microseconds before the data it
  acknowledges.  Bytes that arrive within the hold are delivered; after it they
  are Retransmissions.  So a Gap may be emitted a little after the frame it names.
- Retransmission: bytes already delivered or already buffered.  Overlap: such
  bytes that differ from the first copy (only comparable within the last
  TAIL_KEEP delivered bytes).
- Keep-alives (0 or 1 byte at next - 1) and zero-window probes (1 byte at next
  while the peer advertises window 0, or Linux's keep-alive-shaped probe) are
  counted, not delivered.  A probe byte the receiver turns out to have kept (an
  ACK covers it, or data follows it) is delivered then, with its own frame.
- Without a SYN, a segment without payload only sets a provisional base (a
  keep-alive sits one byte early); the first data segment fixes it.  Without a
  SYN, a segment arriving before the first seen one counts as a retransmission.
- Memory per direction is bounded: MAX_BUFFER out-of-order bytes, TAIL_KEEP
  (up to twice that between trims) delivered bytes, PROVENANCE_KEEP frames.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

from pcapsmtp.packets import ACK, FIN, RST, SYN, Segment


@dataclass(slots=True)
class Data:
    direction: str
    offset: int
    data: bytes
    frame: int
    time: float


@dataclass(slots=True)
class Gap:
    """Bytes that the stream must contain but the capture never saw."""

    direction: str
    offset: int
    length: int
    frame: int  # the frame that revealed the gap (ACK beyond, later data, FIN, or end)
    time: float
    reason: str  # "acked-unseen", "out-of-order-flush", "end-of-capture", "snaplen",
    #              "sent-unseen" (the sender's later seq shows bytes never captured)


@dataclass(slots=True)
class Flag:
    """Every SYN, SYN-ACK, FIN or RST segment as seen on the wire."""

    direction: str
    kind: str  # "SYN", "SYN-ACK", "FIN", "RST"
    frame: int
    time: float
    offset: int  # stream offset at which it sits (FIN: after the last byte)
    repeat: bool = False  # the same flag sent again by that direction (a retry)


@dataclass(slots=True)
class Retransmission:
    direction: str
    frame: int
    time: float
    offset: int
    length: int
    original_frame: int | None  # frame that first carried these bytes, when still known


@dataclass(slots=True)
class Overlap:
    """A retransmitted or overlapping segment whose bytes DIFFER from the first copy.

    First data wins for the stream; this event keeps the evidence.
    """

    direction: str
    frame: int
    time: float
    offset: int
    first: bytes  # what the stream holds
    second: bytes  # what the later segment carried for the same offsets
    first_frame: int | None


@dataclass
class DirectionStats:
    segments: int = 0
    bytes: int = 0  # stream bytes delivered as Data (each byte once; gaps not included)
    retransmissions: int = 0
    out_of_order: int = 0
    overlaps_differing: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    keepalives: int = 0
    zero_windows: int = 0
    window_probes: int = 0
    syn_retries: int = 0  # SYNs (or SYN-ACKs) sent again
    duplicates: int = 0  # a segment with data/SYN/FIN captured twice (not in segments)


@dataclass
class ConnectionStats:
    C: DirectionStats = field(default_factory=DirectionStats)
    S: DirectionStats = field(default_factory=DirectionStats)


StreamEvent = Data | Gap | Flag | Retransmission | Overlap


# --------------------------------------------------------------------------------------------
# Implementation
# --------------------------------------------------------------------------------------------

_NEVER = float("inf")
_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_SLOW_FLAGS = SYN | FIN | RST
_SYN_FIN = SYN | FIN

MAX_BUFFER = 4 << 20
"""Out-of-order bytes held per direction before we give up waiting and declare a Gap."""

TAIL_KEEP = 256 << 10
"""Delivered bytes remembered per direction, only to compare retransmissions against."""

PROVENANCE_KEEP = 4096
"""Delivered segments whose frame we remember (bounds memory when segments are tiny)."""

DUPLICATE_WITHIN = 0.001
"""A segment identical to the connection's previous one within this many seconds (see
_same_packet for which segments are asked) is the same packet captured twice (``tcpdump
-i any`` sees a bridged packet on the bridge and on its port; mergecap of overlapping
captures), not a retransmission: no TCP stack resends that fast (Linux's minimum RTO is
200 ms, its tail-loss probe at least 10 ms)."""

ACK_HOLD = 0.5
"""Seconds of capture time an ACK-revealed hole waits for its bytes before it becomes a Gap."""

MAX_ACK_JUMP = 1 << 30
"""An ACK further than this beyond what we delivered is garbage, not lost bytes: ignored.
(1 GiB is the largest window TCP window scaling can advertise.)"""

# A buffered out-of-order piece: (offset, length, data or None for snaplen-cut bytes, frame, time).
_Piece = tuple[int, int, "bytes | None", int, float]


class _Direction:
    """Reassembly state of one direction.

    ``next`` is the stream offset of the next byte we expect; ``next_seq`` the same position as
    a 32-bit sequence number, so the common case is one integer comparison.  Offsets are
    unbounded Python ints: sequence numbers are unwrapped relative to ``next``, which makes the
    2**32 wrap (and streams longer than 4 GiB) a non-event.
    """

    __slots__ = (
        "name", "stats", "base_known", "tentative", "next", "next_seq", "window", "buf",
        "buf_bytes", "chunks", "chunk_offs", "tail_start", "prov_offs", "prov_frames",
        "syn_seen", "fin",
        "rst_seen", "probe", "fast", "acks", "sent_upto", "pending",
    )

    def __init__(self, name: str, stats: DirectionStats) -> None:
        self.name = name
        self.stats = stats
        self.base_known = False
        # The base came from a segment without payload (pure ACK, keep-alive, RST): a keep-alive
        # sits one byte early, so the first real data may move the base.
        self.tentative = False
        self.next = 0
        self.next_seq = -1  # never equals a real sequence number until the base is known
        self.window = -1  # last raw window this direction advertised; -1 = not seen yet
        self.buf: list[_Piece] = []  # out-of-order pieces, disjoint, sorted, all beyond next
        self.buf_bytes = 0
        # The last delivered bytes, [tail_start, next), kept as the delivered chunks (the
        # first may begin before tail_start) and their offsets.  Appending to a bytearray
        # instead cost 0.1 s of FlowTable+Connection's 0.3 s on the 100k-frame benchmark
        # (copies and page faults as it grew and shrank); a reference per chunk is free,
        # and the bytes are only looked at for a retransmission.
        self.chunks: list[bytes] = []
        self.chunk_offs: list[int] = []
        self.tail_start = 0
        self.prov_offs: list[int] = []  # offsets where delivered Data started (within tail)
        self.prov_frames: list[int] = []  # ... and their frames
        self.syn_seen = False
        self.fin: tuple[int, int, float] | None = None  # (offset, frame, time) of first FIN
        self.rst_seen = False
        self.probe: tuple[int, bytes, int, float] | None = None  # held zero-window probe byte
        self.fast = False  # no buffered data, no probe, firm base: in-order segments go fast
        self.acks = False  # the other direction's ACKs can be read against our base
        # (offset, frame, time): the furthest sequence number this side has used, even on a
        # segment without data -- a bare ACK with seq beyond what we saw proves bytes were
        # sent that the capture never got (the record lost between client and server).
        self.sent_upto: tuple[int, int, float] | None = None
        # An ACK-revealed hole not declared yet: (acked offset, frame, time of that ACK).
        self.pending: tuple[int, int, float] | None = None

    def refresh(self) -> None:
        """Recompute the cached flags the hot path tests, after any slow-path change."""
        firm = self.base_known and not self.tentative
        self.acks = firm
        self.fast = firm and not self.buf and self.probe is None

    def pristine(self) -> bool:
        """Nothing delivered, declared or held yet: the base may still move."""
        return self.next == 0 and not self.buf and self.probe is None

    def set_base(self, seq: int, tentative: bool) -> None:
        self.base_known = True
        self.tentative = tentative
        self.next = 0
        self.next_seq = seq & _MASK

    def unwrap(self, seq: int) -> int:
        """Stream offset of ``seq``: the nearest one to ``next`` modulo 2**32."""
        return self.next + (((seq - self.next_seq + _HALF) & _MASK) - _HALF)

    def original_frame(self, offset: int) -> int | None:
        """Frame that first delivered ``offset``, when it is still within the kept tail."""
        if offset < self.tail_start:
            return None
        i = bisect_right(self.prov_offs, offset) - 1
        return self.prov_frames[i] if i >= 0 else None  # i < 0: provenance already dropped

    def delivered(self, lo: int, hi: int) -> bytes | None:
        """Delivered bytes [lo, hi) clipped to the kept tail (None when nothing is left)."""
        lo = max(lo, self.tail_start)
        hi = min(hi, self.next)
        if lo >= hi:
            return None
        chunks, offs = self.chunks, self.chunk_offs
        i = bisect_right(offs, lo) - 1
        out = []
        pos = lo
        while pos < hi:
            base = offs[i]
            chunk = chunks[i]
            out.append(chunk[pos - base : hi - base])
            pos = base + len(chunk)
            i += 1
        return b"".join(out)

    @property
    def tail(self) -> bytes:
        """The kept delivered bytes, [tail_start, next)."""
        return self.delivered(self.tail_start, self.next) or b""

    def trim_tail(self, keep: int) -> None:
        """Forget delivered bytes older than ``keep`` and provenance beyond its own bound."""
        cut = self.next - self.tail_start - keep
        if cut > 0:
            self.tail_start += cut
            i = bisect_right(self.chunk_offs, self.tail_start) - 1
            if i > 0:
                del self.chunks[:i]
                del self.chunk_offs[:i]
        if len(self.chunks) > PROVENANCE_KEEP:  # tiny segments: one chunk, one copy
            self.chunks[:] = [b"".join(self.chunks)]
            del self.chunk_offs[1:]
        i = bisect_right(self.prov_offs, self.tail_start) - 1
        i = max(i, len(self.prov_offs) - PROVENANCE_KEEP)
        if i > 0:
            del self.prov_offs[:i]
            del self.prov_frames[:i]

    def forget_tail(self) -> None:
        """After a Gap the tail would no longer be contiguous: start it afresh."""
        self.chunks.clear()
        self.chunk_offs.clear()
        self.tail_start = self.next
        self.prov_offs.clear()
        self.prov_frames.clear()


def _same_packet(a: Segment, b: Segment) -> bool:
    """``b`` is ``a`` captured again (see DUPLICATE_WITHIN).  Asked of segments with data,
    SYN or FIN, and of others (pure ACKs, RSTs) only when they carry a non-zero IPv4
    identification: a stack sends identical pure ACKs and RSTs itself (duplicate ACKs, an
    RST for each segment after a close), but with a new identification each (Linux counts
    per connection; 0 is what some stacks put in every packet, so it proves nothing)."""
    return (b.time - a.time < DUPLICATE_WITHIN and a.seq == b.seq and a.ack == b.ack
            and a.flags == b.flags and a.window == b.window and a.sport == b.sport
            and a.src == b.src and a.payload == b.payload and a.missing == b.missing
            and a.ip_id == b.ip_id)


class Connection:
    """Both directions of one TCP connection, turned into ordered stream events.

    ``add`` returns the events a segment causes (possibly none) and ``finish`` those the end
    of the capture reveals.  Events of one direction satisfy the module invariant: each Data
    or Gap starts exactly where the previous one of that direction ended, so a consumer can
    concatenate Data and account for every missing byte with Gap.

    Gap rule for ACKs (documented because it can be wrong): when one side ACKs beyond what the
    other side delivered, the hole is held for ACK_HOLD seconds of capture time (real captures
    record ACKs just before the data they cover); then each hole up to the ACK becomes a Gap,
    ending where buffered data starts.  Data later than the hold shows as a Retransmission.
    """

    __slots__ = ("client", "server", "stats", "_caddr", "_cport", "_c", "_s", "_max_buffer",
                 "_tail_keep", "_tail_trim", "_deadline", "_last")

    def __init__(
        self,
        client: tuple[str, int],
        server: tuple[str, int],
        *,
        max_buffer: int = MAX_BUFFER,
        tail_keep: int = TAIL_KEEP,
    ) -> None:
        self.client = client
        self.server = server
        self.stats = ConnectionStats()
        self._caddr, self._cport = client
        self._c = _Direction("C", self.stats.C)
        self._s = _Direction("S", self.stats.S)
        self._max_buffer = max_buffer
        self._tail_keep = tail_keep
        # Trim only when the tail reaches twice what we keep: amortises the trimming.
        self._tail_trim = 2 * tail_keep
        self._deadline = _NEVER  # capture time after which a held ACK-revealed hole is declared
        self._last: Segment | None = None  # the previous segment, either direction

    # -- public ---------------------------------------------------------------------------

    def add(self, seg: Segment) -> list[StreamEvent]:
        """Feed one segment of either direction; return the events it causes, in order.

        The in-order case is handled here with ``_deliver`` inlined (keep the two in step).
        Measured with flows.FlowTable.add returning a tuple: both over the 100k-frame
        benchmark's 101k segments 0.40 -> 0.31 s CPU.
        """
        if seg.sport == self._cport and seg.src == self._caddr:
            d, o = self._c, self._s
        else:
            d, o = self._s, self._c
        d.stats.segments += 1
        events: list[StreamEvent] = []
        time = seg.time
        if time > self._deadline:
            self._expire(time, events)
        flags = seg.flags
        window = seg.window
        prev, self._last = self._last, seg
        if prev is not None and prev.seq == seg.seq \
                and (seg.payload or flags & _SYN_FIN or seg.ip_id > 0) and _same_packet(prev, seg):
            d.stats.segments -= 1
            d.stats.duplicates += 1
            return events
        if (
            flags & _SLOW_FLAGS
            or seg.seq != d.next_seq
            or not d.fast
            or seg.missing
            or not window
            or not o.window
        ):
            self._slow(d, o, seg, events)
            return events
        # Hot path: an in-order segment (or pure ACK) of an established direction.
        d.window = window
        if flags & ACK and o.acks:
            diff = (seg.ack - o.next_seq) & _MASK
            if diff and diff < _HALF:
                self._ack(o, seg, events)
        payload = seg.payload
        if payload:
            # _deliver, inlined (keep the two in step): see this method's docstring
            nxt = d.next
            frame = seg.frame
            events.append(Data(d.name, nxt, payload, frame, time))
            n = len(payload)
            d.next = nxt + n
            d.next_seq = (d.next_seq + n) & _MASK
            d.stats.bytes += n
            offs = d.prov_offs
            offs.append(nxt)
            d.prov_frames.append(frame)
            d.chunks.append(payload)
            d.chunk_offs.append(nxt)
            if nxt + n - d.tail_start > self._tail_trim or len(offs) > 2 * PROVENANCE_KEEP:
                d.trim_tail(self._tail_keep)
        return events

    def finish(self) -> list[StreamEvent]:
        """End of capture: declare every hole still open, then deliver what waited behind it."""
        events: list[StreamEvent] = []
        for d in (self._c, self._s):
            self._declare_pending(d, events)
            fin_beyond = d.fin is not None and d.fin[0] > d.next
            if (d.buf or fin_beyond) and d.probe is not None and d.probe[0] == d.next:
                self._deliver_probe(d, events)  # more bytes followed: the probe byte was data
            while d.buf:
                off, _, _, frame, time = d.buf[0]
                self._gap(d, off - d.next, frame, time, "end-of-capture", events)
                self._drain(d, events)
            if d.fin is not None and d.fin[0] > d.next:
                self._gap(d, d.fin[0] - d.next, d.fin[1], d.fin[2], "end-of-capture", events)
            if d.sent_upto is not None:
                off, frame, time = d.sent_upto
                if d.fin is not None:
                    off = min(off, d.fin[0])  # a FIN uses one sequence number, not data
            if d.sent_upto is not None and off > d.next:
                self._gap(d, off - d.next, frame, time, "sent-unseen", events)
            d.refresh()
        return events

    def stream_offset(self, direction: str, seq: int) -> int | None:
        """Stream offset of sequence number ``seq`` in ``direction`` ("C" or "S"), as the
        events count it; None while that direction's base is not known.  For what names
        a segment by its sequence number alone (the one an ICMP message quotes)."""
        d = self._c if direction == "C" else self._s
        return d.unwrap(seq) if d.base_known else None

    # -- slow path ------------------------------------------------------------------------

    def _slow(self, d: _Direction, o: _Direction, seg: Segment, events: list) -> None:
        """Everything but an in-order segment: flags, bases, holes, old or early bytes."""
        flags = seg.flags
        payload = seg.payload
        if flags & SYN:
            self._syn(d, seg, events)
        elif not d.base_known or (d.tentative and payload and d.pristine()):
            d.set_base(seg.seq, tentative=not payload and not flags & FIN)
        if flags & RST:
            events.append(
                Flag(d.name, "RST", seg.frame, seg.time, d.unwrap(seg.seq), d.rst_seen)
            )
            d.rst_seen = True
            d.refresh()
            return
        if seg.window:
            d.window = seg.window
        else:
            d.window = 0
            d.stats.zero_windows += 1
        if flags & ACK and o.acks:
            self._ack(o, seg, events)
        off = d.unwrap(seg.seq + 1 if flags & SYN else seg.seq)
        length = len(payload) + seg.missing
        if off > d.next and off - d.next <= MAX_ACK_JUMP and (
                d.sent_upto is None or off > d.sent_upto[0]):
            d.sent_upto = (off, seg.frame, seg.time)
        if not flags & (SYN | FIN) and length <= 1 and off == d.next - 1:
            # Keep-alive (0 or 1 byte one before next), or Linux's zero-window probe alike.
            if o.window == 0:
                d.stats.window_probes += 1
            else:
                d.stats.keepalives += 1
        elif length:
            self._payload(d, o, seg, off, events)
        if flags & FIN:
            end = off + length
            events.append(Flag(d.name, "FIN", seg.frame, seg.time, end, d.fin is not None))
            if d.fin is None:
                d.fin = (end, seg.frame, seg.time)
        d.refresh()

    def _syn(self, d: _Direction, seg: Segment, events: list) -> None:
        """A SYN or SYN-ACK: (re)set the base unless data already depends on it."""
        repeat = d.syn_seen
        if repeat:
            d.stats.syn_retries += 1
        d.syn_seen = True
        if not d.base_known or (d.pristine() and (seg.seq + 1) & _MASK != d.next_seq):
            d.set_base(seg.seq + 1, tentative=False)
        elif d.tentative and d.pristine():
            d.tentative = False
        kind = "SYN-ACK" if seg.flags & ACK else "SYN"
        events.append(Flag(d.name, kind, seg.frame, seg.time, d.unwrap(seg.seq + 1), repeat))

    def _ack(self, o: _Direction, seg: Segment, events: list) -> None:
        """``seg`` ACKs direction ``o``: bytes acked but never seen become Gaps."""
        acked = o.unwrap(seg.ack)
        if o.fin is not None and acked > o.fin[0]:
            acked = o.fin[0]  # the ACK of the FIN itself is not data
        if not o.next < acked <= o.next + MAX_ACK_JUMP:
            return
        if o.probe is not None and o.probe[0] == o.next:
            self._deliver_probe(o, events)  # the ACK covers the probe byte: it was data
            o.refresh()
        if acked <= o.next:
            return
        p = o.pending
        if p is None:
            o.pending = (acked, seg.frame, seg.time)
            self._deadline = min(self._deadline, seg.time + ACK_HOLD)
        elif acked > p[0]:
            o.pending = (acked, p[1], p[2])

    def _expire(self, now: float, events: list) -> None:
        """Declare the ACK-revealed holes whose hold has run out by capture time ``now``."""
        deadline = _NEVER
        for d in (self._c, self._s):
            p = d.pending
            if p is None:
                continue
            if now > p[2] + ACK_HOLD:
                self._declare_pending(d, events)
            else:
                deadline = min(deadline, p[2] + ACK_HOLD)
        self._deadline = deadline

    def _declare_pending(self, d: _Direction, events: list) -> None:
        """What an ACK proved was sent and the capture still lacks becomes Gap."""
        p = d.pending
        if p is None:
            return
        d.pending = None
        acked = p[0]
        if d.fin is not None and acked > d.fin[0]:
            acked = d.fin[0]  # the ACK was of a FIN captured after it: not data
        if acked > d.next:
            self._fill_hole(d, acked, p[1], p[2], "acked-unseen", events)
            d.refresh()

    def _fill_hole(
        self, d: _Direction, upto: int, frame: int, time: float, reason: str, events: list
    ) -> None:
        """Advance ``d`` to ``upto``, delivering buffered data and declaring Gaps between."""
        while d.next < upto:
            if d.probe is not None and d.probe[0] == d.next:
                self._deliver_probe(d, events)  # the peer took the probe byte after all
                continue
            if d.buf and d.buf[0][0] <= d.next:
                self._drain(d, events)  # cannot happen while the invariants hold; never loop
                continue
            limit = min(upto, d.buf[0][0]) if d.buf else upto
            self._gap(d, limit - d.next, frame, time, reason, events)
            self._drain(d, events)

    def _payload(
        self, d: _Direction, o: _Direction, seg: Segment, off: int, events: list
    ) -> None:
        """Place a segment's bytes [off, off + len + missing): old, in order, or early."""
        payload = seg.payload
        missing = seg.missing
        nxt = d.next
        if o.window == 0 and len(payload) == 1 and not missing and off == nxt:
            # Zero-window probe: the receiver usually drops it and the byte comes again.
            d.stats.window_probes += 1
            d.probe = (off, payload, seg.frame, seg.time)
            return
        end = off + len(payload) + missing
        if off < nxt:
            self._old(d, seg, off, min(end, nxt), events)
            if end <= nxt:
                return
            cut = nxt - off
            if cut >= len(payload):
                missing -= cut - len(payload)
                payload = b""
            else:
                payload = payload[cut:]
            off = nxt
        if off == nxt and not d.buf:
            if payload:
                self._deliver(d, payload, seg.frame, seg.time, events)
            if missing:
                self._gap(d, missing, seg.frame, seg.time, "snaplen", events)
            if d.probe is not None and d.probe[0] < d.next:
                d.probe = None
            return
        fresh = False
        if payload:
            fresh = self._insert(d, off, len(payload), payload, seg, events)
        if missing:
            fresh = self._insert(d, off + len(payload), missing, None, seg, events) or fresh
        if fresh and off > nxt:
            d.stats.out_of_order += 1
        self._drain(d, events)
        while d.buf_bytes > self._max_buffer:
            self._fill_hole(d, d.buf[0][0], seg.frame, seg.time, "out-of-order-flush", events)

    def _old(self, d: _Direction, seg: Segment, off: int, end: int, events: list) -> None:
        """Bytes [off, end) were already delivered: a Retransmission, maybe an Overlap."""
        d.stats.retransmissions += 1
        events.append(
            Retransmission(d.name, seg.frame, seg.time, off, end - off, d.original_frame(off))
        )
        captured_end = min(end, off + len(seg.payload))
        first = d.delivered(off, captured_end)
        if first is None:
            return
        lo = captured_end - len(first)
        second = seg.payload[lo - off : captured_end - off]
        if first != second:
            d.stats.overlaps_differing += 1
            events.append(
                Overlap(d.name, seg.frame, seg.time, lo, first, second, d.original_frame(lo))
            )

    def _insert(
        self, d: _Direction, off: int, length: int, data: bytes | None, seg: Segment, events: list
    ) -> bool:
        """Buffer [off, off + length) where no earlier segment already is (first wins).

        Returns whether any new byte was buffered; a full duplicate is a Retransmission.
        """
        buf = d.buf
        end = off + length
        i = bisect_left(buf, (off,))
        if i and buf[i - 1][0] + buf[i - 1][1] > off:
            i -= 1
        cursor = off
        fresh: list[tuple[int, int]] = []
        first_frame = None
        while i < len(buf) and buf[i][0] < end:
            b_off, b_len, b_data, b_frame, _ = buf[i]
            if first_frame is None:
                first_frame = b_frame
            b_end = b_off + b_len
            if b_off > cursor:
                fresh.append((cursor, b_off))
            lo, hi = max(b_off, cursor), min(b_end, end)
            if data is not None and b_data is not None and lo < hi:
                first = b_data[lo - b_off : hi - b_off]
                second = data[lo - off : hi - off]
                if first != second:
                    d.stats.overlaps_differing += 1
                    events.append(Overlap(d.name, seg.frame, seg.time, lo, first, second, b_frame))
            cursor = max(cursor, b_end)
            i += 1
        if cursor < end:
            fresh.append((cursor, end))
        if not fresh:
            if data is not None:
                d.stats.retransmissions += 1
                events.append(
                    Retransmission(d.name, seg.frame, seg.time, off, length, first_frame)
                )
            return False
        for lo, hi in fresh:
            piece = None if data is None else data[lo - off : hi - off]
            insort(buf, (lo, hi - lo, piece, seg.frame, seg.time))
            if piece is not None:
                d.buf_bytes += hi - lo
        return True

    def _drain(self, d: _Direction, events: list) -> None:
        """Deliver buffered pieces that now continue the stream."""
        buf = d.buf
        i = 0
        while i < len(buf) and buf[i][0] <= d.next:
            off, length, data, frame, time = buf[i]
            i += 1
            if data is not None:
                d.buf_bytes -= length
            cut = d.next - off  # > 0 only if an invariant broke; stay correct anyway
            if cut >= length:
                continue
            if data is None:
                self._gap(d, length - cut, frame, time, "snaplen", events)
            else:
                self._deliver(d, data[cut:] if cut else data, frame, time, events)
        if i:
            del buf[:i]
        if d.probe is not None and d.probe[0] < d.next:
            d.probe = None

    # -- primitives -----------------------------------------------------------------------

    def _deliver(self, d: _Direction, data: bytes, frame: int, time: float, events: list) -> None:
        """Emit the next contiguous bytes and remember them (bounded) for later comparison."""
        nxt = d.next
        events.append(Data(d.name, nxt, data, frame, time))
        n = len(data)
        d.next = nxt + n
        d.next_seq = (d.next_seq + n) & _MASK
        d.stats.bytes += n
        d.prov_offs.append(nxt)
        d.prov_frames.append(frame)
        d.chunks.append(data)
        d.chunk_offs.append(nxt)
        if nxt + n - d.tail_start > self._tail_trim or len(d.prov_offs) > 2 * PROVENANCE_KEEP:
            d.trim_tail(self._tail_keep)

    def _deliver_probe(self, d: _Direction, events: list) -> None:
        _, data, frame, time = d.probe  # type: ignore[misc]
        d.probe = None
        self._deliver(d, data, frame, time, events)
        self._drain(d, events)

    def _gap(
        self, d: _Direction, length: int, frame: int, time: float, reason: str, events: list
    ) -> None:
        """Declare ``length`` unseen bytes at ``next`` so later offsets stay true."""
        events.append(Gap(d.name, d.next, length, frame, time, reason))
        d.next += length
        d.next_seq = (d.next_seq + length) & _MASK
        d.stats.gaps += 1
        d.stats.gap_bytes += length
        d.forget_tail()
