"""``pcapsmtp compare CLIENT.pcap SERVER.pcap``: which side lost (or changed) what.

One capture answers "what did this end see"; two captures of the same session, one
near each end, answer "what did the path do": the record the client sent and the
server never got, the banner a proxy masked, the full-size segments a black hole ate.

How it works, and the judgement calls behind it:

- Each file goes through the normal pipeline (so each side keeps its own verdict),
  with a recording builder that also keeps, per direction, the delivered segments
  (offset, length, frame, time, CRC), the gaps, the retransmissions and the first
  PREFIX_KEEP bytes.  Memory stays bounded: no whole bodies, MAX_SEGMENTS per direction.
- Sessions are matched by a score: equal initial sequence numbers (NAT usually keeps
  them), equal endpoints (NAT changes some, a proxy most), and equal bytes at equal
  offsets in the first CONTENT_PROBE bytes of each direction (what survives a proxy).
  Pairs too far apart in time (after the clocks' estimated offset) are not candidates;
  the best-scoring pairs win, one to one, nearest in time on ties.
- Streams are aligned by stream offset (ISN + 1 on each side).  A proxy that keeps
  lengths (a PIX fixup masks in place) aligns; one that changes lengths shows as a
  stream that diverges, said as such rather than as a flood of changed bytes.
- For each direction the sending side's capture is upstream: bytes it has that the
  receiving side's capture never got are lost; bytes both have but that differ were
  rewritten; a segment boundary one side has where the other has continuous bytes
  means the path re-cut the stream.
- The clock offset is NTP's estimate: the smallest one-way time of the same segment,
  both ways, split evenly; the error is half the smallest round trip.
"""

from __future__ import annotations

import json
import sys
import zlib
from bisect import bisect_right
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import click

from pcapsmtp import __version__, rules
from pcapsmtp.analyze import Analysis, Pipeline, run_reader
from pcapsmtp.capture import open_capture
from pcapsmtp.dissect import SessionBuilder
from pcapsmtp.flows import DEFAULT_PORTS, Selection
from pcapsmtp.jsonable import escape
from pcapsmtp.packets import ACK, SYN, Segment
from pcapsmtp.reassembly import Data, Gap, Retransmission
from pcapsmtp.render.common import utc
from pcapsmtp.timeline import Event, Session, endpoint

PREFIX_KEEP = 64 << 10
"""Bytes kept per direction to compare content; beyond it only per-segment CRCs."""

MAX_SEGMENTS = 20000
"""Delivered segments remembered per direction (a 28 MB body at full size)."""

CONTENT_PROBE = 512
"""Bytes per direction compared when scoring whether two sessions are the same one."""

CONTENT_MATCH = 0.8
"""Content similarity that matches sessions without equal sequence numbers (a proxy).
The lab's proxied pair scores 0.89; different sessions of one client to one server
at most 0.71."""

MATCH_WINDOW = 300.0
"""Seconds (after the estimated clock offset) two sessions' starts may differ and match."""

MERGE_DISTANCE = 4
"""Differing bytes this close together are one rewrite, not several."""

MAX_CHANGED = 100
"""Rewrites kept per direction; the rest are counted."""

MAX_LISTED = 12
"""Findings of one kind listed per direction; the rest are counted."""

WIDTH = 100

SCHEMA = "pcapsmtp-compare/1"


# -- recording ------------------------------------------------------------------------------


@dataclass(slots=True)
class Piece:
    offset: int
    length: int
    frame: int
    time: float
    crc: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass
class DirRecord:
    """What one capture saw of one direction: enough to align, never the whole stream."""

    pieces: list[Piece] = field(default_factory=list)
    gaps: list[tuple[int, int, int, str]] = field(default_factory=list)  # offset, len, frame, why
    retrans: list[tuple[int, int, int, float]] = field(default_factory=list)  # off, len, fr, t
    prefix: bytearray = field(default_factory=bytearray)  # stream bytes [0, len), gaps as 0
    dropped: int = 0  # pieces not kept beyond MAX_SEGMENTS
    _starts: list[int] = field(default_factory=list, repr=False)  # piece offsets, for bisect

    def take(self, ev: Any) -> None:
        if isinstance(ev, Data):
            self._data(ev)
        elif isinstance(ev, Gap):
            self.gaps.append((ev.offset, ev.length, ev.frame, ev.reason))
            self._fill(ev.offset, bytes(min(ev.length, max(0, PREFIX_KEEP - ev.offset))))
        elif isinstance(ev, Retransmission) and len(self.retrans) < MAX_SEGMENTS:
            self.retrans.append((ev.offset, ev.length, ev.frame, ev.time))

    def _data(self, ev: Data) -> None:
        if len(self.pieces) < MAX_SEGMENTS:
            self.pieces.append(Piece(ev.offset, len(ev.data), ev.frame, ev.time,
                                     zlib.crc32(ev.data)))
        else:
            self.dropped += 1
        if ev.offset < PREFIX_KEEP:
            self._fill(ev.offset, ev.data[: PREFIX_KEEP - ev.offset])

    def _fill(self, offset: int, data: bytes) -> None:
        if data and offset == len(self.prefix):
            self.prefix += data

    def _offsets(self) -> list[int]:
        if len(self._starts) != len(self.pieces):
            self._starts = [p.offset for p in self.pieces]
        return self._starts

    def piece_at(self, offset: int) -> Piece | None:
        """The delivered segment holding ``offset`` (pieces are sorted and disjoint)."""
        i = bisect_right(self._offsets(), offset) - 1
        if i >= 0 and self.pieces[i].offset <= offset < self.pieces[i].end:
            return self.pieces[i]
        return None

    def pieces_in(self, lo: int, hi: int) -> list[Piece]:
        """Delivered segments overlapping [lo, hi), found by bisection (streams can be long)."""
        i = max(0, bisect_right(self._offsets(), lo) - 1)
        out = []
        while i < len(self.pieces) and self.pieces[i].offset < hi:
            if self.pieces[i].end > lo:
                out.append(self.pieces[i])
            i += 1
        return out


@dataclass
class ConnRecord:
    isn: dict[str, int | None] = field(default_factory=lambda: {"C": None, "S": None})
    dirs: dict[str, DirRecord] = field(default_factory=lambda: {"C": DirRecord(),
                                                                "S": DirRecord()})


class _RecordingBuilder(SessionBuilder):
    """The usual timeline builder, also keeping the per-direction record for alignment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = ConnRecord()

    def add(self, seg: Segment) -> None:
        if seg.flags & SYN:
            d = "C" if (seg.src, seg.sport) == self.session.client else "S"
            if bool(seg.flags & ACK) == (d == "S") and self.record.isn[d] is None:
                self.record.isn[d] = seg.seq
        super().add(seg)

    def _stream_event(self, ev: Any) -> None:
        if isinstance(ev, Data | Gap | Retransmission):
            self.record.dirs[ev.direction].take(ev)
        super()._stream_event(ev)


class _RecordingPipeline(Pipeline):
    def __init__(self, selection: Selection) -> None:
        super().__init__(selection)
        self.records: dict[int, ConnRecord] = {}

    def _new_builder(self, client: tuple[str, int], server: tuple[str, int],
                     first: Any) -> SessionBuilder:
        sid = self._next_id
        self._next_id += 1
        implicit = server[1] in self.selection.implicit_tls_ports
        builder = _RecordingBuilder(sid, client, server, first, implicit)
        self.records[sid] = builder.record
        return builder


@dataclass
class Side:
    """One capture, analysed, with the alignment record of each session."""

    role: str  # "client" or "server": where the capture was taken
    analysis: Analysis
    records: dict[int, ConnRecord]

    def session(self, sid: int) -> Session:
        return next(s for s in self.analysis.sessions if s.id == sid)


def read_side(path: str, role: str, selection: Selection) -> Side:
    """Analyse one capture as ``analyze`` does, keeping what alignment needs."""
    pipeline = _RecordingPipeline(selection)
    with open_capture(path) as reader:
        run_reader(pipeline, reader)
        info = reader.info
    sessions = pipeline.close()
    result = Analysis(capture=info, decode=pipeline.decoder.stats, selection=selection,
                      sessions=sessions)
    result.findings = rules.diagnose_capture(sessions)
    return Side(role, result, pipeline.records)


# -- matching -------------------------------------------------------------------------------


def _similarity(a: bytes, b: bytes) -> tuple[int, int]:
    """(equal bytes, compared bytes) at equal offsets."""
    n = min(len(a), len(b))
    return sum(1 for x, y in zip(a[:n], b[:n], strict=True) if x == y), n


def content_similarity(a: ConnRecord, b: ConnRecord) -> float | None:
    """Share of equal bytes at equal offsets in both directions' starts; None: no data.

    Weighted by how alike the kept lengths are: two sessions from one client to one
    server share banner, EHLO and MAIL FROM, and differ mostly in how long they go on.
    """
    same = 0.0
    total = 0
    for d in ("C", "S"):
        pa, pb = a.dirs[d].prefix, b.dirs[d].prefix
        s, n = _similarity(bytes(pa[:CONTENT_PROBE]), bytes(pb[:CONTENT_PROBE]))
        longer = max(len(pa), len(pb))
        same += s * (min(len(pa), len(pb)) / longer if longer else 1.0)
        total += n
    return same / total if total >= 16 else None


@dataclass
class MatchScore:
    score: float
    isn: bool
    content: float | None
    how: list[str]


def match_score(sa: Session, ra: ConnRecord, sb: Session, rb: ConnRecord) -> MatchScore | None:
    """How sure we are that ``sa`` and ``sb`` are the same session; None: not a candidate."""
    how: list[str] = []
    score = 0.0
    isn = False
    for d in ("C", "S"):
        if ra.isn[d] is not None and ra.isn[d] == rb.isn[d]:
            score += 3
            isn = True
    if isn:
        how.append("ISN")
    same_ends = [sa.server == sb.server, sa.client == sb.client]
    score += sum(same_ends)
    if all(same_ends):
        how.append("addresses")
    elif any(same_ends):
        how.append("server" if same_ends[0] else "client")
    sim = content_similarity(ra, rb)
    if sim is not None:
        score += 4 * sim
        if sim >= CONTENT_MATCH:
            how.append(f"content {sim:.0%}")
    data_less = sim is None
    if not (isn or (sim is not None and sim >= CONTENT_MATCH)
            or (data_less and sa.server[1] == sb.server[1] and any(same_ends))):
        return None
    return MatchScore(score, isn, sim, how)


@dataclass
class Match:
    a: Session  # client-side capture
    b: Session  # server-side capture
    score: MatchScore


def match_sessions(a: Side, b: Side) -> tuple[list[Match], list[Session], list[Session]]:
    """One-to-one pairs, then what only the client side and only the server side saw."""
    cands = []
    for sa in a.analysis.sessions:
        for sb in b.analysis.sessions:
            ms = match_score(sa, a.records[sa.id], sb, b.records[sb.id])
            if ms is not None:
                cands.append((sa, sb, ms))
    strong = [sb.first_time - sa.first_time for sa, sb, ms in cands
              if ms.isn or (ms.content or 0) >= 0.9]
    shift = median(strong) if strong else 0.0
    cands = [c for c in cands if abs(c[1].first_time - c[0].first_time - shift) <= MATCH_WINDOW]
    cands.sort(key=lambda c: (-c[2].score, abs(c[1].first_time - c[0].first_time - shift),
                              c[0].id, c[1].id))
    used_a: set[int] = set()
    used_b: set[int] = set()
    matches = []
    for sa, sb, ms in cands:
        if sa.id not in used_a and sb.id not in used_b:
            used_a.add(sa.id)
            used_b.add(sb.id)
            matches.append(Match(sa, sb, ms))
    matches.sort(key=lambda m: m.a.id)
    only_a = [s for s in a.analysis.sessions if s.id not in used_a]
    only_b = [s for s in b.analysis.sessions if s.id not in used_b]
    return matches, only_a, only_b


# -- clock ----------------------------------------------------------------------------------


@dataclass
class Clock:
    """Server-capture time = client-capture time + offset (± error)."""

    offset: float
    error: float | None  # half the smallest round trip; None when only one way was seen
    samples: int


def _one_way(up: DirRecord, down: DirRecord) -> tuple[float | None, int]:
    """Smallest (downstream time - upstream time) of a segment both captured, and how many."""
    there = {(p.offset, p.length): p.time for p in down.pieces}
    diffs = [there[(p.offset, p.length)] - p.time for p in up.pieces
             if (p.offset, p.length) in there]
    return (min(diffs) if diffs else None), len(diffs)


def clock_of(matches: list[Match], a: Side, b: Side) -> Clock | None:
    """NTP's estimate over all matched sessions: the tightest pair of one-way times wins."""
    best: Clock | None = None
    total = 0
    for m in matches:
        ra, rb = a.records[m.a.id], b.records[m.b.id]
        to_server, n1 = _one_way(ra.dirs["C"], rb.dirs["C"])  # offset + delay
        to_client, n2 = _one_way(rb.dirs["S"], ra.dirs["S"])  # -offset + delay
        total += n1 + n2
        if to_server is not None and to_client is not None:
            clock = Clock((to_server - to_client) / 2, max(0.0, (to_server + to_client) / 2), 0)
        elif to_server is not None or to_client is not None:
            clock = Clock(to_server if to_server is not None else -to_client, None, 0)  # type: ignore
        else:
            continue
        if best is None or _tighter(clock, best):
            best = clock
    if best is None:
        return None
    best.samples = total
    return best


def _tighter(new: Clock, old: Clock) -> bool:
    if old.error is None:
        return new.error is not None
    return new.error is not None and new.error < old.error


# -- alignment ------------------------------------------------------------------------------


def _known(d: DirRecord) -> list[tuple[int, int]]:
    """Merged [lo, hi) ranges this capture delivered."""
    out: list[tuple[int, int]] = []
    for p in d.pieces:
        if out and out[-1][1] >= p.offset:
            out[-1] = (out[-1][0], max(out[-1][1], p.end))
        else:
            out.append((p.offset, p.end))
    return out


def _subtract(ranges: list[tuple[int, int]], minus: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in ranges:
        cur = lo
        for mlo, mhi in minus:
            if mhi <= cur or mlo >= hi:
                continue
            if mlo > cur:
                out.append((cur, mlo))
            cur = max(cur, mhi)
        if cur < hi:
            out.append((cur, hi))
    return out


def _intersect(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    i = j = 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if lo < hi:
            out.append((lo, hi))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


@dataclass
class Lost:
    offset: int
    length: int
    up_frames: list[int]  # upstream frames that first carried the bytes
    up_time: float  # when they first left (upstream capture's clock)
    resent: int  # retransmissions of them upstream
    last_resent_frame: int | None
    down_gap: tuple[int, str] | None  # downstream frame that revealed the hole, and why
    segment_sizes: list[int]  # sizes of the upstream segments that carried them


@dataclass
class Changed:
    offset: int
    before: bytes  # upstream (as sent)
    after: bytes  # downstream (as received)
    up_frames: list[int]
    down_frames: list[int]
    boundary: bool  # a segment boundary falls inside or at the edge of the change


@dataclass
class Recut:
    offset: int  # a boundary only one side has
    up_frame: int
    down_frame: int
    upstream_has_it: bool


@dataclass
class DirectionDiff:
    direction: str
    compared: int = 0  # bytes known on both sides and compared
    lost: list[Lost] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    recut: list[Recut] = field(default_factory=list)
    unseen_upstream: int = 0  # bytes the receiver got that the sender's capture missed
    diverged_at: int | None = None  # offset from which the streams are not the same bytes
    crc_mismatch: list[int] = field(default_factory=list)  # offsets beyond the prefix
    changed_more: int = 0  # differing runs beyond MAX_CHANGED, counted only
    small_passed: bool = False  # a segment smaller than every lost one, sent later, arrived


def align(direction: str, up: DirRecord, down: DirRecord) -> DirectionDiff:
    """Compare one direction as sent (upstream capture) and as received (downstream)."""
    diff = DirectionDiff(direction)
    up_k, down_k = _known(up), _known(down)
    both = _intersect(up_k, down_k)
    diff.compared = sum(hi - lo for lo, hi in both)
    diff.lost = [_lost(up, down, lo, hi) for lo, hi in _subtract(up_k, down_k)]
    diff.small_passed = _small_passed(up, diff.lost, down_k)
    diff.unseen_upstream = sum(hi - lo for lo, hi in _subtract(down_k, up_k))
    _compare_bytes(diff, up, down, both)
    _compare_cuts(diff, up, down, both)
    return diff


def _small_passed(up: DirRecord, lost: list[Lost], down_k: list[tuple[int, int]]) -> bool:
    """Whether a later, smaller segment got through where bigger ones did not (MTU)."""
    sizes = [s for x in lost for s in x.segment_sizes]
    if not sizes:
        return False
    first = min(x.offset for x in lost)
    return any(p.offset > first and p.length < min(sizes)
               and _intersect([(p.offset, p.end)], down_k) for p in up.pieces)


def _lost(up: DirRecord, down: DirRecord, lo: int, hi: int) -> Lost:
    pieces = up.pieces_in(lo, hi)
    resent = [r for r in up.retrans if r[0] < hi and r[0] + r[1] > lo]
    gap = next(((g[2], g[3]) for g in down.gaps if g[0] < hi and g[0] + g[1] > lo), None)
    return Lost(lo, hi - lo, [p.frame for p in pieces], pieces[0].time if pieces else 0.0,
                len(resent), resent[-1][2] if resent else None, gap,
                [p.length for p in pieces])


def _compare_bytes(diff: DirectionDiff, up: DirRecord, down: DirRecord,
                   both: list[tuple[int, int]]) -> None:
    """Runs of differing bytes within the kept prefix; per-segment CRCs beyond it."""
    runs: list[list[int]] = []
    for lo, hi in both:
        hi_p = min(hi, PREFIX_KEEP, len(up.prefix), len(down.prefix))
        for chunk in range(lo, hi_p, 256):
            end = min(chunk + 256, hi_p)
            if up.prefix[chunk:end] != down.prefix[chunk:end]:
                _runs_in(up.prefix, down.prefix, chunk, end, runs)
    changed_bytes = sum(hi - lo for lo, hi in runs)
    if changed_bytes > 64 and changed_bytes * 4 > diff.compared:
        diff.diverged_at = runs[0][0]
        return
    for lo, hi in runs[:MAX_CHANGED]:
        diff.changed.append(_changed(up, down, lo, hi))
    diff.changed_more = max(0, len(runs) - MAX_CHANGED)
    there = {(p.offset, p.length): p.crc for p in down.pieces if p.end > PREFIX_KEEP}
    diff.crc_mismatch = [p.offset for p in up.pieces if p.end > PREFIX_KEEP
                         and there.get((p.offset, p.length), p.crc) != p.crc]


def _runs_in(a: bytearray, b: bytearray, lo: int, hi: int, runs: list[list[int]]) -> None:
    """Extend ``runs`` with the differing bytes of [lo, hi), merging near neighbours."""
    for i in range(lo, hi):
        if a[i] != b[i]:
            if runs and i - runs[-1][1] <= MERGE_DISTANCE:
                runs[-1][1] = i + 1
            else:
                runs.append([i, i + 1])


def _changed(up: DirRecord, down: DirRecord, lo: int, hi: int) -> Changed:
    def frames(d: DirRecord) -> list[int]:
        return [p.frame for p in d.pieces_in(lo, hi)]

    starts = [p.offset for d in (up, down) for p in d.pieces_in(lo - 1, hi + 1)]
    boundary = any(lo <= s <= hi for s in starts)
    return Changed(lo, bytes(up.prefix[lo:hi]), bytes(down.prefix[lo:hi]), frames(up),
                   frames(down), boundary)


def _compare_cuts(diff: DirectionDiff, up: DirRecord, down: DirRecord,
                  both: list[tuple[int, int]]) -> None:
    """Segment boundaries inside bytes both sides have, that only one side has."""
    starts = [lo for lo, _ in both]

    def inside(offset: int) -> bool:
        i = bisect_right(starts, offset - 1) - 1
        return i >= 0 and both[i][0] < offset < both[i][1]

    up_cuts = {p.offset: p.frame for p in up.pieces if inside(p.offset)}
    down_cuts = {p.offset: p.frame for p in down.pieces if inside(p.offset)}
    for off in sorted(set(up_cuts) ^ set(down_cuts)):
        u, d = up.piece_at(off), down.piece_at(off)
        diff.recut.append(Recut(off, u.frame if u else 0, d.frame if d else 0, off in up_cuts))


# -- findings and the path verdict ----------------------------------------------------------


@dataclass
class PairReport:
    match: Match
    directions: dict[str, DirectionDiff]
    proxied: bool  # different TCP connections on the two sides
    findings: list[dict[str, Any]]
    verdict: dict[str, Any]


def _side_name(direction: str, upstream: bool) -> tuple[str, str]:
    """(sender, where-it-was-captured) words for a direction's upstream or downstream."""
    sender = "client" if direction == "C" else "server"
    if upstream:
        return sender, f"{sender} capture"
    other = "server" if direction == "C" else "client"
    return other, f"{other} capture"


def _describe(session: Session, direction: str, offset: int) -> tuple[str, Event | None]:
    """What the bytes at ``offset`` were, from the timeline that has them."""
    cover = [e for e in session.events if e.direction == direction and "start" in e.fields
             and e.fields["start"] <= offset < max(e.fields["end"], e.fields["start"] + 1)]
    if not cover:
        return "bytes", None
    ev = cover[0]
    if ev.kind == "tls-app-data":
        firsts = [e for e in session.events if e.direction == direction
                  and e.kind == "tls-app-data"]
        first = firsts and firsts[0] is ev
        return ("first TLS record" if first else "TLS record"), ev
    if ev.kind == "smtp-body":
        return "message body bytes", ev
    if ev.kind == "smtp-auth-data":
        return "AUTH data", ev
    return repr(ev.text), ev


def _secret(ev: Event | None) -> bool:
    """Bytes a report never shows: AUTH exchanges and message bodies are counted only."""
    if ev is None:
        return False
    return ev.kind in ("smtp-body", "smtp-auth-data") or ev.fields.get("verb") == "AUTH"


def _frames(frames: list[int]) -> str:
    if not frames:
        return "?"
    uniq = sorted(set(frames))
    if len(uniq) > 2 and uniq[-1] - uniq[0] == len(uniq) - 1:
        return f"{uniq[0]}-{uniq[-1]}"
    return ",".join(str(f) for f in uniq[:8]) + (",..." if len(uniq) > 8 else "")


def _close_after(m: Match, clock: Clock | None, t_client: float) -> str:
    """Who closed first after client-capture time ``t_client``, and how long after."""
    off = clock.offset if clock else 0.0
    closes = []
    for sess, shift, where in ((m.a, 0.0, "client capture"), (m.b, off, "server capture")):
        for e in sess.of_kind("tcp-fin", "tcp-rst"):
            if e.fields.get("repeat"):
                continue
            closes.append((e.time - shift, e, where))
    closes = [c for c in closes if c[0] >= t_client]
    if not closes:
        return "neither side closed within the captures"
    t, e, where = min(closes, key=lambda c: (c[0], c[2]))
    who = "client" if e.direction == "C" else "server"
    how = "FIN" if e.kind == "tcp-fin" else "RST"
    return f"the {who} closed {t - t_client:.1f} s later ({how}, frame {e.frame}, {where})"


def _lost_findings(m: Match, diff: DirectionDiff, upstream: Session, clock: Clock | None,
                   down_end: float | None) -> list[dict[str, Any]]:
    out = []
    d = diff.direction
    sender, up_where = _side_name(d, True)
    receiver, down_where = _side_name(d, False)
    off = clock.offset if clock else 0.0
    for lost in diff.lost:
        what, _ = _describe(upstream, d, lost.offset)
        sent_at = lost.up_time if d == "C" else lost.up_time - off  # client-capture clock
        down_t = lost.up_time + (off if d == "C" else -off)
        after_end = down_end is not None and down_t > down_end
        resent = (f", sent again {lost.resent} time(s) up to frame {lost.last_resent_frame}"
                  if lost.resent else "")
        gap = (f"; the {down_where} shows the hole at frame {lost.down_gap[0]} "
               f"({lost.down_gap[1]})" if lost.down_gap else "")
        text = (f"{lost.length:,} bytes from the {sender} at stream offset {lost.offset:,} "
                f"({what}) left at frame {_frames(lost.up_frames)} ({up_where}){resent}, and "
                + (f"came after the {down_where} ended" if after_end
                   else f"never reached the {receiver}{gap}"))
        out.append({"kind": "lost" if not after_end else "after-capture-end", "direction": d,
                    "offset": lost.offset, "length": lost.length, "what": what,
                    "client_frames" if d == "C" else "server_frames": lost.up_frames,
                    "retransmissions": lost.resent, "sent": sent_at,
                    "segment_sizes": lost.segment_sizes, "text": text})
    return out


def _line_around(data: bytes, lo: int, hi: int) -> bytes:
    start = data.rfind(b"\n", 0, lo) + 1
    end = data.find(b"\n", hi)
    return data[start:end if end >= 0 else len(data)].rstrip(b"\r")


def _changed_findings(diff: DirectionDiff, up: DirRecord, down: DirRecord,
                      upstream: Session) -> list[dict[str, Any]]:
    out = []
    d = diff.direction
    sender = "client" if d == "C" else "server"
    for ch in diff.changed:
        what, ev = _describe(upstream, d, ch.offset)
        hi = ch.offset + len(ch.before)
        if _secret(ev):
            shown = f"{len(ch.before)} bytes of {what} (not shown)"
        else:
            line_up = _line_around(bytes(up.prefix), ch.offset, hi)
            line_down = _line_around(bytes(down.prefix), ch.offset, hi)
            shown = (f"{escape(ch.before)!r} became {escape(ch.after)!r}: "
                     f"{escape(line_up, 80)!r} arrived as {escape(line_down, 80)!r}")
        cut = " (at a segment boundary)" if ch.boundary else ""
        cf, sf = (ch.up_frames, ch.down_frames) if d == "C" else (ch.down_frames, ch.up_frames)
        text = (f"{sender} bytes at offset {ch.offset:,}{cut}: {shown} "
                f"(client frame {_frames(cf)}, server frame {_frames(sf)})")
        out.append({"kind": "changed", "direction": d, "offset": ch.offset,
                    "length": len(ch.before), "boundary": ch.boundary,
                    "before": None if _secret(ev) else escape(ch.before),
                    "after": None if _secret(ev) else escape(ch.after),
                    "client_frames": cf, "server_frames": sf, "text": text})
    return out


def _reply_findings(m: Match) -> list[dict[str, Any]]:
    """Banner and EHLO reply as each end saw them: a different server or a proxy answering."""
    out = []
    for name, pick in (("banner", _banner), ("EHLO reply", _ehlo_reply)):
        ea, eb = pick(m.a), pick(m.b)
        if ea is None or eb is None:
            continue
        la, lb = ea.fields.get("lines", []), eb.fields.get("lines", [])
        if la == lb:
            continue
        text = (f"the {name} differs: the server sent {_reply_text(eb)!r} (server frame "
                f"{eb.frame}), the client got {_reply_text(ea)!r} (client frame {ea.frame})")
        ca, cb = ea.fields.get("capabilities", []), eb.fields.get("capabilities", [])
        gone, new = [c for c in cb if c not in ca], [c for c in ca if c not in cb]
        if gone or new:
            text += (f"; keywords the client never saw: {', '.join(gone) or 'none'}; "
                     f"appeared on the way: {', '.join(new) or 'none'}")
        out.append({"kind": "reply-differs", "what": name, "server_sent": lb,
                    "client_got": la, "keywords_lost": gone, "keywords_added": new,
                    "client_frame": ea.frame, "server_frame": eb.frame, "text": text})
    return out


def _banner(s: Session) -> Event | None:
    return next((e for e in s.of_kind("smtp-reply") if e.fields.get("answers") == "CONNECT"),
                None)


def _ehlo_reply(s: Session) -> Event | None:
    return next((e for e in s.of_kind("smtp-reply") if e.fields.get("answers") == "EHLO"
                 and not e.tls), None)


def _reply_text(e: Event) -> str:
    lines = e.fields.get("lines", [])
    code = e.fields.get("code")
    if len(lines) == 1:
        return f"{code} {lines[0]}"
    return f"{code}-{lines[0]} ... ({len(lines)} lines)" if lines else e.text


def compare_pair(m: Match, a: Side, b: Side, clock: Clock | None) -> PairReport:
    """Align both directions of one matched session and say what the path did."""
    ra, rb = a.records[m.a.id], b.records[m.b.id]
    dirs = {"C": align("C", ra.dirs["C"], rb.dirs["C"]),
            "S": align("S", rb.dirs["S"], ra.dirs["S"])}
    proxied = m.a.client != m.b.client and not m.score.isn
    findings: list[dict[str, Any]] = []
    ends = {"C": b.analysis.capture.last, "S": a.analysis.capture.last}
    for d, up_sess in (("C", m.a), ("S", m.b)):
        findings += _lost_findings(m, dirs[d], up_sess, clock, ends[d])
    findings += _changed_findings(dirs["C"], ra.dirs["C"], rb.dirs["C"], m.a)
    findings += _changed_findings(dirs["S"], rb.dirs["S"], ra.dirs["S"], m.b)
    findings += _reply_findings(m)
    findings += _other_findings(dirs)
    return PairReport(m, dirs, proxied, findings, _verdict(m, dirs, findings, clock, proxied))


def _other_findings(dirs: dict[str, DirectionDiff]) -> list[dict[str, Any]]:
    out = []
    for d, diff in dirs.items():
        sender = "client" if d == "C" else "server"
        if diff.diverged_at is not None:
            out.append({"kind": "diverged", "direction": d, "offset": diff.diverged_at,
                        "text": f"the {sender}'s stream differs from offset "
                                f"{diff.diverged_at:,} on (not an in-place rewrite: a proxy "
                                "that changed lengths, or not the same session)"})
        for off in diff.crc_mismatch[:MAX_LISTED]:
            out.append({"kind": "changed", "direction": d, "offset": off, "length": None,
                        "text": f"{sender} segment at offset {off:,} (beyond the "
                                f"{PREFIX_KEEP // 1024} KiB compared byte by byte) differs"})
        if diff.recut:
            r = diff.recut[0]
            one, other = ("client", "server") if (d == "C") == r.upstream_has_it else \
                ("server", "client")
            out.append({"kind": "recut", "direction": d, "count": len(diff.recut),
                        "offsets": [x.offset for x in diff.recut[:MAX_LISTED]],
                        "text": f"the {sender}'s bytes are cut into segments differently on the "
                                f"two sides at {len(diff.recut)} place(s), first at offset "
                                f"{r.offset:,} (a boundary in the {one} capture, frame "
                                f"{r.up_frame if r.upstream_has_it else r.down_frame}, not in "
                                f"the {other} capture): a proxy, a reassembling firewall, or "
                                "segmentation offload at a capture point"})
        if diff.unseen_upstream:
            out.append({"kind": "unseen-upstream", "direction": d,
                        "length": diff.unseen_upstream,
                        "text": f"{diff.unseen_upstream:,} {sender} bytes arrived that the "
                                f"{sender} capture itself missed (capture loss at that end)"})
    return out


def _verdict(m: Match, dirs: dict[str, DirectionDiff], findings: list[dict[str, Any]],
             clock: Clock | None, proxied: bool) -> dict[str, Any]:
    lost = [f for f in findings if f["kind"] == "lost"]
    changed = [f for f in findings if f["kind"] in ("changed", "reply-differs", "diverged")]
    proxy = (" The two sides are different TCP connections (other ports and sequence "
             "numbers): a proxy is in the path.") if proxied else ""
    if lost:
        return _lost_verdict(m, dirs, lost, clock, proxy)
    if changed:
        masked = any(_masking(f) for f in findings if f["kind"] == "changed")
        places = len([f for f in findings if f["kind"] == "changed"])
        sig = (" X- and asterisk-masking is the signature of a Cisco PIX/ASA SMTP fixup "
               "('fixup smtp' / 'inspect esmtp').") if masked else ""
        first = next((f for f in findings if f["kind"] == "changed"), changed[0])
        return {"code": "path-rewrite",
                "summary": f"A middlebox changed bytes in flight ({places} place(s)); first: "
                           f"{first['text']}.{sig}{proxy}"}
    if any(f["kind"] == "recut" for f in findings):
        return {"code": "path-resegmented",
                "summary": "Every byte arrived unchanged, but cut into segments differently: "
                           f"something in the path reassembles and re-sends the stream.{proxy}"}
    n = dirs["C"].compared + dirs["S"].compared
    return {"code": "path-clean",
            "summary": f"Nothing lost or changed: the {n:,} bytes both captures hold are the "
                       f"same on both sides.{proxy}"}


def _masking(f: dict[str, Any]) -> bool:
    after = f.get("after") or ""
    return bool(after) and set(after) <= {"X", "*"}


def _lost_verdict(m: Match, dirs: dict[str, DirectionDiff], lost: list[dict[str, Any]],
                  clock: Clock | None, proxy: str) -> dict[str, Any]:
    first = min(lost, key=lambda f: f["sent"])
    who = "client" if first["direction"] == "C" else "server"
    where = f"{who} capture"
    frames = [fr for f in lost if f["direction"] == first["direction"]
              for fr in f.get(f"{who}_frames", [])]
    sizes = [s for f in lost if f["direction"] == first["direction"] for s in f["segment_sizes"]]
    close = _close_after(m, clock, first["sent"])
    if sizes and min(sizes) >= 1200 and dirs[first["direction"]].small_passed:
        return {"code": "path-pmtu-blackhole",
                "summary": f"{len(sizes)} full-size {who} segment(s) ({max(sizes):,} bytes) left "
                           f"the {who} at frame {_frames(frames)} ({where}) and never reached "
                           f"the other end, while smaller segments did: a path-MTU black hole "
                           f"(ICMP 'fragmentation needed' filtered); {close}.{proxy}"}
    n = sum(f["length"] for f in lost)
    resent = (f", was sent again {first['retransmissions']} time(s)"
              if first["retransmissions"] else "")
    more = f" ({n:,} bytes lost in all)" if len(lost) > 1 else ""
    return {"code": "path-lost",
            "summary": f"The {who}'s {first['what']} ({first['length']:,} bytes at stream offset "
                       f"{first['offset']:,}) left the {who} at frame "
                       f"{_frames(first[f'{who}_frames'])} ({where}){resent} and never reached "
                       f"the {'server' if who == 'client' else 'client'}{more}; {close}.{proxy}"}


# -- the whole comparison -------------------------------------------------------------------


@dataclass
class Comparison:
    a: Side
    b: Side
    clock: Clock | None
    pairs: list[PairReport]
    only_client_side: list[Session]
    only_server_side: list[Session]


def compare_captures(client_path: str, server_path: str,
                     selection: Selection | None = None) -> Comparison:
    """Read both captures, match their sessions and align every matched pair."""
    selection = selection or Selection()
    a = read_side(client_path, "client", selection)
    b = read_side(server_path, "server", selection)
    matches, only_a, only_b = match_sessions(a, b)
    clock = clock_of(matches, a, b)
    pairs = [compare_pair(m, a, b, clock) for m in matches]
    return Comparison(a, b, clock, pairs, only_a, only_b)


# -- rendering ------------------------------------------------------------------------------


def _wrap(text: str, first: str, rest: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=True, break_on_hyphens=False) or [first.rstrip()]


def _capture_line(label: str, side: Side) -> list[str]:
    info = side.analysis.capture
    span = ""
    if info.first is not None and info.last is not None:
        span = f", {utc(info.first)} to {utc(info.last)} UTC"
    return _wrap(f"{label}: {info.file}  ({info.packets:,} packets{span}, "
                 f"{len(side.analysis.sessions)} SMTP session(s))", "", "  ")


def _clock_text(clock: Clock | None) -> str:
    if clock is None:
        return "clock offset: unknown (no segment seen on both sides)"
    err = f" ± {clock.error:.6f} s" if clock.error is not None else " (one way only: plus the " \
        "path delay)"
    return (f"clock offset: server capture = client capture {clock.offset:+.6f} s{err}, "
            f"from {clock.samples:,} segment(s) seen on both sides")


def render_text(c: Comparison) -> str:
    out = [f"pcapsmtp {__version__} compare"]
    out += _capture_line("client side", c.a)
    out += _capture_line("server side", c.b)
    out += _wrap(_clock_text(c.clock), "", "  ")
    out.append("")
    out += _table(c)
    for p in c.pairs:
        out.append("")
        out += _pair_block(p)
    for label, sessions in (("only in the client capture", c.only_client_side),
                            ("only in the server capture", c.only_server_side)):
        for s in sessions:
            out.append("")
            out += _wrap(f"Session {s.id} {label}: {endpoint(s.client)} → {endpoint(s.server)}  "
                         f"{s.verdict.code}: the other capture holds no session matching it "
                         "(addresses, sequence numbers, content and time compared).",
                         "", "  ")
    return "\n".join(out) + "\n"


def _table(c: Comparison) -> list[str]:
    from tabulate import tabulate

    rows = []
    for p in c.pairs:
        m = p.match
        rows.append([f"{m.a.id}", f"{endpoint(m.a.client)}", f"{m.b.id}",
                     f"{endpoint(m.b.client)}", "+".join(m.score.how) or "-",
                     p.verdict["code"]])
    for s in c.only_client_side:
        rows.append([f"{s.id}", endpoint(s.client), "-", "-", "-", "only-client-side"])
    for s in c.only_server_side:
        rows.append(["-", "-", f"{s.id}", endpoint(s.client), "-", "only-server-side"])
    if not rows:
        return ["No SMTP sessions in either capture."]
    return tabulate(rows, headers=["cli#", "client side", "srv#", "server side", "matched by",
                                   "path"], tablefmt="simple", disable_numparse=True).splitlines()


def _pair_block(p: PairReport) -> list[str]:
    m = p.match
    out = _wrap(f"Client session {m.a.id} ({endpoint(m.a.client)} → {endpoint(m.a.server)}, "
                f"{m.a.verdict.code}) = server session {m.b.id} ({endpoint(m.b.client)} → "
                f"{endpoint(m.b.server)}, {m.b.verdict.code})", "", "  ")
    out += _wrap(f"{p.verdict['code']}: {p.verdict['summary']}", "  ", "    ")
    for f in p.findings:
        out += _wrap(f"- {f['text']}", "    ", "      ")
    return out


def render_json(c: Comparison) -> str:
    doc = {
        "schema": SCHEMA,
        "version": __version__,
        "client_capture": _capture_json(c.a),
        "server_capture": _capture_json(c.b),
        "clock": None if c.clock is None else {"offset": c.clock.offset, "error": c.clock.error,
                                               "samples": c.clock.samples},
        "matched": [_pair_json(p) for p in c.pairs],
        "only_client_side": [_session_json(s) for s in c.only_client_side],
        "only_server_side": [_session_json(s) for s in c.only_server_side],
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _capture_json(side: Side) -> dict[str, Any]:
    info = side.analysis.capture
    return {"file": info.file, "packets": info.packets, "first": info.first,
            "last": info.last, "sessions": len(side.analysis.sessions)}


def _session_json(s: Session) -> dict[str, Any]:
    return {"id": s.id, "client": endpoint(s.client), "server": endpoint(s.server),
            "verdict": s.verdict.code if s.verdict else None}


def _pair_json(p: PairReport) -> dict[str, Any]:
    return {"client_side": _session_json(p.match.a), "server_side": _session_json(p.match.b),
            "matched_by": p.match.score.how, "score": round(p.match.score.score, 3),
            "proxied": p.proxied, "verdict": p.verdict, "findings": p.findings,
            "compared_bytes": {d: x.compared for d, x in p.directions.items()}}


# -- command --------------------------------------------------------------------------------


@click.command()
@click.argument("client_capture", metavar="CLIENT.pcap")
@click.argument("server_capture", metavar="SERVER.pcap")
@click.option("-f", "--format", "fmt", type=click.Choice(("text", "json")), default="text",
              show_default=True, help="text to read and paste; json for scripts.")
@click.option("-p", "--port", "ports", multiple=True, metavar="PORT[,PORT]",
              help="Also follow these TCP ports (25, 465 and 587 always are).")
@click.option("--debug", is_flag=True, hidden=True)
def compare(client_capture: str, server_capture: str, fmt: str, ports: tuple[str, ...],
            debug: bool) -> None:
    """Compare a capture taken near the client with one taken near the server.

    Matches the sessions of both (addresses and ports, allowing for NAT; sequence
    numbers; timing; content), aligns each direction's bytes and says what one side
    sent that the other never received, which bytes a middlebox changed, where the
    segments were cut differently, and the clock offset between the captures.
    Exit status: 0 compared, 1 an input could not be read, 2 usage error.
    """
    from pcapsmtp.cli import _guarded, _ports

    selection = Selection(ports=frozenset(DEFAULT_PORTS | _ports(ports) | {465}))

    @_guarded
    def run(debug: bool = False) -> None:
        result = compare_captures(client_capture, server_capture, selection)
        click.echo(render_json(result) if fmt == "json" else render_text(result), nl=False)

    run(debug=debug)
    sys.exit(0)
