"""TCP reassembly: every byte once, in stream order, with its frame; every hole named."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pcapsmtp.packets import ACK, FIN, PSH, RST, SYN, Segment
from pcapsmtp.reassembly import (
    Connection,
    Data,
    Flag,
    Gap,
    Overlap,
    Retransmission,
    StreamEvent,
)

CLIENT = ("192.0.2.1", 40000)
SERVER = ("198.51.100.2", 25)
CISN = 1000  # client ISN: client offset 0 is seq 1001
SISN = 5000  # server ISN: server offset 0 is seq 5001


def seg(
    frame: int,
    direction: str,
    seq: int,
    ack: int = 0,
    flags: int = ACK,
    payload: bytes = b"",
    *,
    window: int = 65535,
    missing: int = 0,
) -> Segment:
    """A segment of direction "C" or "S"; time is frame / 10 so it is easy to check."""
    src, dst = (CLIENT, SERVER) if direction == "C" else (SERVER, CLIENT)
    return Segment(
        frame, frame / 10, src[0], src[1], dst[0], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
        flags, window, payload, missing,
    )


def check_invariant(events: list[StreamEvent]) -> None:
    """Each direction's Data/Gap start at 0 and each starts where the previous one ended."""
    nxt = {"C": 0, "S": 0}
    for ev in events:
        if isinstance(ev, Data):
            assert ev.data, ev
            assert ev.offset == nxt[ev.direction], ev
            nxt[ev.direction] += len(ev.data)
        elif isinstance(ev, Gap):
            assert ev.length > 0, ev
            assert ev.offset == nxt[ev.direction], ev
            nxt[ev.direction] += ev.length


def run(segments: list[Segment], conn: Connection | None = None) -> list[StreamEvent]:
    """Feed all segments, then finish; check the offset invariant on everything emitted."""
    conn = conn or Connection(CLIENT, SERVER)
    events: list[StreamEvent] = []
    for s in segments:
        events += conn.add(s)
    events += conn.finish()
    check_invariant(events)
    return events


def stream(events: list[StreamEvent], direction: str) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data) and e.direction == direction)


def of(events: list[StreamEvent], kind: type, direction: str | None = None) -> list:
    return [e for e in events if isinstance(e, kind) and direction in (None, e.direction)]


def handshake() -> list[Segment]:
    return [
        seg(1, "C", CISN, 0, SYN),
        seg(2, "S", SISN, CISN + 1, SYN | ACK),
        seg(3, "C", CISN + 1, SISN + 1),
    ]


# -- normal dialogue ------------------------------------------------------------------------


def test_handshake_and_dialogue_exact_bytes() -> None:
    c, s = CISN + 1, SISN + 1
    banner, ehlo, reply, quit_, bye = (
        b"220 mx.example ESMTP\r\n", b"EHLO client.example\r\n", b"250 mx.example\r\n",
        b"QUIT\r\n", b"221 bye\r\n",
    )
    segs = handshake() + [
        seg(4, "S", s, c, ACK | PSH, banner),
        seg(5, "C", c, s + len(banner), ACK | PSH, ehlo),
        seg(6, "S", s + len(banner), c + len(ehlo), ACK | PSH, reply),
        seg(7, "C", c + len(ehlo), s + 38, ACK | PSH, quit_),
        seg(8, "S", s + 38, c + 27, ACK | PSH | FIN, bye),
        seg(9, "C", c + 27, s + 48, ACK | FIN),
        seg(10, "S", s + 48, c + 28, ACK),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == ehlo + quit_
    assert stream(events, "S") == banner + reply + bye
    assert [(e.direction, e.kind, e.frame, e.offset) for e in of(events, Flag)] == [
        ("C", "SYN", 1, 0), ("S", "SYN-ACK", 2, 0), ("S", "FIN", 8, 47), ("C", "FIN", 9, 27),
    ]
    # The FIN comes right after the data it carries.
    i = events.index(of(events, Flag, "S")[1])
    assert events[i - 1] == Data("S", 38, bye, 8, 0.8)
    assert [(e.direction, e.offset, e.frame) for e in of(events, Data)] == [
        ("S", 0, 4), ("C", 0, 5), ("S", 22, 6), ("C", 21, 7), ("S", 38, 8),
    ]
    assert not of(events, Gap) and not of(events, Retransmission)
    assert conn.stats.C.bytes == 27 and conn.stats.S.bytes == 47
    assert conn.stats.C.segments == 5 and conn.stats.S.segments == 5


# -- retransmission, reordering, overlap ----------------------------------------------------


def test_retransmission_counted_not_duplicated() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"MAIL FROM:<a@b>\r\n"),
        seg(5, "C", c, SISN + 1, ACK, b"MAIL FROM:<a@b>\r\n"),
        seg(6, "C", c + 17, SISN + 1, ACK, b"RCPT TO:<c@d>\r\n"),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
    assert of(events, Retransmission) == [Retransmission("C", 5, 0.5, 0, 17, 4)]
    assert not of(events, Overlap)
    assert conn.stats.C.retransmissions == 1


def _copied(segments: list[Segment], delay: float) -> list[Segment]:
    """Every segment followed by an identical copy ``delay`` seconds later (frames renumbered)."""
    out: list[Segment] = []
    for s in segments:
        for t in (s.time, s.time + delay):
            out.append(Segment(len(out) + 1, t, s.src, s.sport, s.dst, s.dport, s.seq, s.ack,
                               s.flags, s.window, s.payload, s.missing))
    return out


def test_a_packet_captured_twice_is_no_retransmission() -> None:
    """tcpdump -i any on a bridge host sees each packet on the bridge and on its port,
    microseconds apart: the stream and its flags are those of one copy, the copies of
    data/SYN/FIN segments are counted as duplicates, and identical RSTs (which a stack
    does send twice) stay RSTs."""
    c, s = CISN + 1, SISN + 1
    once = handshake() + [
        seg(4, "S", s, c, ACK | PSH, b"220 mx\r\n"),
        seg(5, "C", c, s + 8, ACK | PSH, b"QUIT\r\n"),
        seg(6, "S", s + 8, c + 6, ACK | PSH | FIN, b"221 bye\r\n"),
        seg(7, "C", c + 6, s + 18, ACK | FIN),
        seg(8, "C", c + 7, 0, RST, window=0),
    ]
    plain = run(once)
    conn = Connection(CLIENT, SERVER)
    twice = run(_copied(once, 0.00002), conn)
    assert stream(twice, "C") == b"QUIT\r\n" and stream(twice, "S") == b"220 mx\r\n221 bye\r\n"
    assert not of(twice, Retransmission)
    flags = [(e.direction, e.kind, e.repeat) for e in of(twice, Flag)]
    assert flags == [(e.direction, e.kind, e.repeat) for e in of(plain, Flag)] + [
        ("C", "RST", True)]  # the copied RST: a second RST, as the stack would send
    # SYN, data+FIN... copied: C has SYN, QUIT, FIN; S has SYN-ACK, 220, 221+FIN
    assert (conn.stats.C.duplicates, conn.stats.S.duplicates) == (3, 3)
    assert (conn.stats.C.segments, conn.stats.S.segments) == (7, 3)  # incl. ACKs, RSTs


def test_the_same_segment_later_than_a_millisecond_is_a_retransmission() -> None:
    c = CISN + 1
    segs = handshake() + [seg(4, "C", c, SISN + 1, ACK, b"QUIT\r\n")]
    conn = Connection(CLIENT, SERVER)
    events = run(_copied(segs, 0.002), conn)
    assert len(of(events, Retransmission)) == 1 and conn.stats.C.duplicates == 0
    assert [(e.kind, e.repeat) for e in of(events, Flag, "C")] == [("SYN", False), ("SYN", True)]


def test_reordering_delivers_in_stream_order_with_own_frames() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c + 10, SISN + 1, ACK, b"KLMNOPQRST"),
        seg(5, "C", c + 20, SISN + 1, ACK, b"UVWXYZ"),
        seg(6, "C", c, SISN + 1, ACK, b"ABCDEFGHIJ"),
    ]
    conn = Connection(CLIENT, SERVER)
    events = conn.add(segs[0]) + conn.add(segs[1]) + conn.add(segs[2])
    assert conn.add(segs[3]) == [] and conn.add(segs[4]) == []  # buffered, nothing yet
    late = conn.add(segs[5])
    assert [(e.offset, e.data, e.frame, e.time) for e in late] == [
        (0, b"ABCDEFGHIJ", 6, 0.6), (10, b"KLMNOPQRST", 4, 0.4), (20, b"UVWXYZ", 5, 0.5),
    ]
    check_invariant(events + late + conn.finish())
    assert conn.stats.C.out_of_order == 2 and conn.stats.C.retransmissions == 0


def test_overlap_with_same_bytes_delivers_only_new_part() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"DATA\r\n"),
        seg(5, "C", c + 2, SISN + 1, ACK, b"TA\r\nSubject: x\r\n"),  # re-segmented resend
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"DATA\r\nSubject: x\r\n"
    assert of(events, Data)[1] == Data("C", 6, b"Subject: x\r\n", 5, 0.5)
    assert of(events, Retransmission) == [Retransmission("C", 5, 0.5, 2, 4, 4)]
    assert not of(events, Overlap) and conn.stats.C.overlaps_differing == 0


def test_overlap_with_different_bytes_keeps_first_and_reports_both() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"RCPT TO:<a@b>\r\n"),
        seg(5, "C", c, SISN + 1, ACK, b"XXXX TO:<a@b>\r\nQUIT\r\n"),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"RCPT TO:<a@b>\r\nQUIT\r\n"
    assert of(events, Overlap) == [
        Overlap("C", 5, 0.5, 0, b"RCPT TO:<a@b>\r\n", b"XXXX TO:<a@b>\r\n", 4)
    ]
    assert conn.stats.C.overlaps_differing == 1


def test_overlap_among_buffered_segments_first_wins() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c + 4, SISN + 1, ACK, b"EFGH"),
        seg(5, "C", c + 6, SISN + 1, ACK, b"xxIJ"),  # differs on the 2 bytes it shares
        seg(6, "C", c + 4, SISN + 1, ACK, b"EFGH"),  # pure duplicate of a buffered segment
        seg(7, "C", c, SISN + 1, ACK, b"ABCD"),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"ABCDEFGHIJ"
    assert of(events, Overlap) == [Overlap("C", 5, 0.5, 6, b"GH", b"xx", 4)]
    assert of(events, Retransmission) == [Retransmission("C", 6, 0.6, 4, 4, 4)]
    assert [(e.offset, e.frame) for e in of(events, Data)] == [(0, 7), (4, 4), (8, 5)]


def test_in_order_segment_does_not_overwrite_earlier_buffered_bytes() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c + 4, SISN + 1, ACK, b"EFGH"),
        seg(5, "C", c, SISN + 1, ACK, b"ABCDefgh"),
    ]
    events = run(segs)
    assert stream(events, "C") == b"ABCDEFGH"
    assert of(events, Overlap) == [Overlap("C", 5, 0.5, 4, b"EFGH", b"efgh", 4)]


def test_retransmission_older_than_kept_tail_has_no_comparison() -> None:
    c = CISN + 1
    conn = Connection(CLIENT, SERVER, tail_keep=8)
    segs = handshake() + [
        seg(4 + i, "C", c + 10 * i, SISN + 1, ACK, bytes([65 + i]) * 10) for i in range(5)
    ]
    segs.append(seg(9, "C", c, SISN + 1, ACK, b"z" * 10))  # differs, but long forgotten
    events = run(segs, conn)
    assert of(events, Retransmission) == [Retransmission("C", 9, 0.9, 0, 10, None)]
    assert not of(events, Overlap)
    assert len(conn._c.tail) <= 16  # bounded: never more than twice what we keep


# -- gaps -----------------------------------------------------------------------------------


def test_gap_revealed_by_ack_then_data_continues() -> None:
    s = SISN + 1
    segs = handshake() + [
        seg(4, "S", s, CISN + 1, ACK, b"220 ready\r\n"),  # 11 bytes
        # frame with server bytes 11..30 lost by the capture
        seg(5, "C", CISN + 1, s + 31, ACK),  # client ACKs 31: those 20 bytes existed
        seg(6, "S", s + 31, CISN + 1, ACK, b"250 ok\r\n"),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert of(events, Gap) == [Gap("S", 11, 20, 5, 0.5, "acked-unseen")]
    assert of(events, Data, "S")[-1] == Data("S", 31, b"250 ok\r\n", 6, 0.6)
    assert conn.stats.S.gaps == 1 and conn.stats.S.gap_bytes == 20


def test_ack_revealed_gap_is_declared_once_the_hold_runs_out() -> None:
    s = SISN + 1
    conn = Connection(CLIENT, SERVER)
    for x in handshake():
        conn.add(x)
    assert conn.add(seg(4, "S", s, CISN + 1, ACK, b"220 ready\r\n")) == [
        Data("S", 0, b"220 ready\r\n", 4, 0.4)
    ]
    assert conn.add(seg(5, "C", CISN + 1, s + 31)) == []  # held: the bytes may be late
    assert conn.add(seg(6, "S", s + 31, CISN + 1, ACK, b"250 ok\r\n")) == []  # after the hole
    # frame 20 is 1.5 s after the ACK (ACK_HOLD is 0.5 s): the hole is declared first
    assert conn.add(seg(20, "C", CISN + 1, s + 39)) == [
        Gap("S", 11, 20, 5, 0.5, "acked-unseen"),
        Data("S", 31, b"250 ok\r\n", 6, 0.6),
    ]
    late = conn.add(seg(21, "S", s + 11, CISN + 1, ACK, b"x" * 20))  # too late: not data
    assert late == [Retransmission("S", 21, 2.1, 11, 20, None)]
    assert conn.finish() == []


def test_data_captured_just_after_its_ack_is_delivered_not_a_gap() -> None:
    """Seen in real captures: the receiver's ACK is recorded microseconds before the data."""
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"A" * 10),
        seg(5, "S", SISN + 1, c + 30),  # ACKs 30 bytes; only 10 captured so far
        seg(6, "C", c + 10, SISN + 1, ACK, b"B" * 10),
        seg(7, "C", c + 20, SISN + 1, ACK, b"C" * 10),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"A" * 10 + b"B" * 10 + b"C" * 10
    assert not of(events, Gap) and conn.stats.C.retransmissions == 0


def test_sender_seq_beyond_captured_data_is_a_sent_unseen_gap_at_finish() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"EHLO a\r\n"),
        # "MAIL FROM:<x@y>\r\n" (17 bytes) lost before the capture point, never ACKed
        seg(5, "C", c + 25, SISN + 1),  # the client's bare ACK already uses seq 25
    ]
    events = run(segs)
    assert of(events, Gap) == [Gap("C", 8, 17, 5, 0.5, "sent-unseen")]


def test_ack_beyond_stops_at_buffered_data() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c + 5, SISN + 1, ACK, b"FGHIJ"),
        seg(5, "S", SISN + 1, c + 15, ACK),  # acks 15: gap 0..5, FGHIJ, gap 10..15
    ]
    events = run(segs)
    assert [(type(e).__name__, e.offset) for e in events if isinstance(e, (Data, Gap))] == [
        ("Gap", 0), ("Data", 5), ("Gap", 10),
    ]
    assert of(events, Gap)[1].length == 5


def test_ack_of_fin_is_not_a_gap() -> None:
    s = SISN + 1
    segs = handshake() + [
        seg(4, "S", s, CISN + 1, ACK | FIN, b"421 bye\r\n"),
        seg(5, "C", CISN + 1, s + 10, ACK),  # acks the 9 bytes and the FIN
    ]
    events = run(segs)
    assert not of(events, Gap)


def test_ack_of_fin_captured_before_the_fin_is_not_a_gap() -> None:
    """arkime smtp-decrypted: the server's FIN-ACK acks the client's FIN, recorded after it."""
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"QUIT\r\n"),
        seg(5, "S", SISN + 1, c + 7, ACK | FIN),  # acks 6 bytes + the FIN not yet seen
        seg(6, "C", c + 6, SISN + 2, ACK | FIN),
    ]
    events = run(segs)
    assert not of(events, Gap)


def test_gap_at_finish_for_buffered_data_after_hole() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"EHLO "),
        seg(5, "C", c + 9, SISN + 1, ACK, b"example\r\n"),  # bytes 5..8 never captured
    ]
    conn = Connection(CLIENT, SERVER)
    events = [e for s in segs for e in conn.add(s)]
    assert not of(events, Gap)  # still waiting: the hole may yet be filled
    tail = conn.finish()
    assert tail == [
        Gap("C", 5, 4, 5, 0.5, "end-of-capture"),
        Data("C", 9, b"example\r\n", 5, 0.5),
    ]
    check_invariant(events + tail)


def test_fin_beyond_missing_bytes_reported_at_once_gap_at_finish() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"QUIT"),
        seg(5, "C", c + 6, SISN + 1, ACK | FIN),  # "\r\n" lost, FIN at offset 6
    ]
    conn = Connection(CLIENT, SERVER)
    assert [e for s in segs[:4] for e in conn.add(s)][-1] == Data("C", 0, b"QUIT", 4, 0.4)
    assert conn.add(segs[4]) == [Flag("C", "FIN", 5, 0.5, 6)]
    assert conn.finish() == [Gap("C", 4, 2, 5, 0.5, "end-of-capture")]


def test_snaplen_cut_payload_then_gap_then_next_data() -> None:
    s = SISN + 1
    segs = handshake() + [
        seg(4, "S", s, CISN + 1, ACK, b"250-mx", missing=94),  # 100 on the wire, 6 kept
        seg(5, "S", s + 100, CISN + 1, ACK, b"250 OK\r\n"),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert [e for e in events if isinstance(e, (Data, Gap))] == [
        Data("S", 0, b"250-mx", 4, 0.4),
        Gap("S", 6, 94, 4, 0.4, "snaplen"),
        Data("S", 100, b"250 OK\r\n", 5, 0.5),
    ]
    assert conn.stats.S.gap_bytes == 94


def test_snaplen_cut_segment_out_of_order() -> None:
    s = SISN + 1
    segs = handshake() + [
        seg(4, "S", s + 4, CISN + 1, ACK, b"ab", missing=3),
        seg(5, "S", s, CISN + 1, ACK, b"0123"),
    ]
    events = run(segs)
    assert [(type(e).__name__, e.offset, e.frame) for e in events
            if isinstance(e, (Data, Gap))] == [("Data", 0, 5), ("Data", 4, 4), ("Gap", 6, 4)]


# -- sequence numbers -----------------------------------------------------------------------


def test_sequence_wrap_around() -> None:
    isn = 2**32 - 3  # offset 0 is 2**32 - 2; the stream crosses 0 after 2 bytes
    segs = [
        seg(1, "C", isn, 0, SYN),
        seg(2, "S", SISN, isn + 1, SYN | ACK),
        seg(3, "C", isn + 1, SISN + 1, ACK, b"ABCD"),  # seq 2**32-2 .. 1
        seg(4, "C", isn + 9, SISN + 1, ACK, b"IJ"),  # seq 6: early
        seg(5, "C", isn + 5, SISN + 1, ACK, b"EFGH"),  # seq 2: fills the hole
        seg(6, "C", isn + 3, SISN + 1, ACK, b"CD"),  # seq 0: a retransmission
        seg(7, "S", SISN + 1, isn + 11, ACK),  # acks all, across the wrap: no gap
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"ABCDEFGHIJ"
    assert [(e.offset, e.frame) for e in of(events, Data)] == [(0, 3), (4, 5), (8, 4)]
    assert of(events, Retransmission) == [Retransmission("C", 6, 0.6, 2, 2, 3)]
    assert not of(events, Gap)


def test_missing_syn_starts_at_first_seen_seq() -> None:
    segs = [
        seg(1, "S", 77777, 3333, ACK, b"250 2.1.0 Ok\r\n"),
        seg(2, "C", 3333, 77777 + 14, ACK, b"RCPT TO:<x@y>\r\n"),
        seg(3, "S", 77777 + 14, 3333 + 15, ACK, b"250 2.1.5 Ok\r\n"),
    ]
    events = run(segs)
    assert [(e.direction, e.offset, e.frame) for e in of(events, Data)] == [
        ("S", 0, 1), ("C", 0, 2), ("S", 14, 3),
    ]
    assert not of(events, Flag) and not of(events, Gap)


def test_missing_syn_pure_ack_first_does_not_fix_the_base_on_a_keepalive() -> None:
    segs = [
        seg(1, "C", 999, 500),  # keep-alive at next - 1, seen before anything else
        seg(2, "C", 1000, 500, ACK, b"NOOP\r\n"),
    ]
    events = run(segs)
    assert of(events, Data) == [Data("C", 0, b"NOOP\r\n", 2, 0.2)]
    assert not of(events, Gap)


# -- keep-alives and windows ----------------------------------------------------------------


def test_keepalives_counted_not_delivered() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"NOOP\r\n"),
        seg(5, "C", c + 5, SISN + 1, ACK, b"\n"),  # 1-byte keep-alive at next - 1
        seg(6, "C", c + 5, SISN + 1, ACK),  # 0-byte keep-alive at next - 1
        seg(7, "S", SISN + 1, c + 6, ACK),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"NOOP\r\n"
    assert conn.stats.C.keepalives == 2
    assert conn.stats.C.retransmissions == 0 and not of(events, Retransmission)


def test_zero_window_and_probe() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"abcd"),
        seg(5, "S", SISN + 1, c + 4, ACK, window=0),  # server's buffer is full
        seg(6, "C", c + 4, SISN + 1, ACK, b"e"),  # 1-byte probe: not data (yet)
        seg(7, "C", c + 4, SISN + 1, ACK, b"e"),  # probed again
        seg(8, "S", SISN + 1, c + 4, ACK, window=8192),
        seg(9, "C", c + 4, SISN + 1, ACK, b"efgh"),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == b"abcdefgh"
    assert of(events, Data)[-1] == Data("C", 4, b"efgh", 9, 0.9)
    assert conn.stats.S.zero_windows == 1
    assert conn.stats.C.window_probes == 2 and conn.stats.C.retransmissions == 0


def test_probe_byte_accepted_by_receiver_is_delivered_not_a_gap() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c, SISN + 1, ACK, b"abcd"),
        seg(5, "S", SISN + 1, c + 4, ACK, window=0),
        seg(6, "C", c + 4, SISN + 1, ACK, b"e"),
        seg(7, "S", SISN + 1, c + 5, ACK, window=100),  # the receiver kept the probe byte
        seg(8, "C", c + 5, SISN + 1, ACK, b"fgh"),
    ]
    events = run(segs)
    assert stream(events, "C") == b"abcdefgh" and not of(events, Gap)
    assert of(events, Data)[1] == Data("C", 4, b"e", 6, 0.6)


# -- flags ----------------------------------------------------------------------------------


def test_syn_retries_without_answer() -> None:
    segs = [seg(f, "C", CISN, 0, SYN) for f in (1, 2, 3)]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert events == [
        Flag("C", "SYN", 1, 0.1, 0, False),
        Flag("C", "SYN", 2, 0.2, 0, True),
        Flag("C", "SYN", 3, 0.3, 0, True),
    ]
    assert conn.stats.C.syn_retries == 2 and conn.stats.S.segments == 0


def test_syn_ack_retransmitted_is_repeat() -> None:
    segs = [seg(1, "C", CISN, 0, SYN)] + [seg(f, "S", SISN, CISN + 1, SYN | ACK) for f in (2, 3)]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert [(e.kind, e.repeat) for e in events] == [
        ("SYN", False), ("SYN-ACK", False), ("SYN-ACK", True),
    ]
    assert conn.stats.S.syn_retries == 1


def test_syn_answered_by_rst() -> None:
    segs = [seg(1, "C", CISN, 0, SYN), seg(2, "S", 0, CISN + 1, RST | ACK, window=0)]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert events[1] == Flag("S", "RST", 2, 0.2, 0, False)
    assert conn.stats.S.zero_windows == 0  # an RST's window means nothing


def test_fin_and_rst_with_direction_and_offsets() -> None:
    c, s = CISN + 1, SISN + 1
    segs = handshake() + [
        seg(4, "S", s, c, ACK, b"220 hi\r\n"),
        seg(5, "C", c, s + 8, ACK | FIN, b"QUIT\r\n"),
        seg(6, "C", c, s + 8, ACK | FIN, b"QUIT\r\n"),  # FIN retransmitted with its data
        seg(7, "S", s + 8, c + 7, RST | ACK),
        seg(8, "S", s + 8, 0, RST),
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert of(events, Flag)[2:] == [
        Flag("C", "FIN", 5, 0.5, 6, False),
        Flag("C", "FIN", 6, 0.6, 6, True),
        Flag("S", "RST", 7, 0.7, 8, False),
        Flag("S", "RST", 8, 0.8, 8, True),
    ]
    assert events[events.index(of(events, Flag)[2]) - 1] == Data("C", 0, b"QUIT\r\n", 5, 0.5)
    assert conn.stats.C.retransmissions == 1


def test_rst_before_missing_bytes_reported_immediately() -> None:
    c = CISN + 1
    segs = handshake() + [
        seg(4, "C", c + 10, SISN + 1, ACK, b"late"),
    ]
    conn = Connection(CLIENT, SERVER)
    for s in segs:
        conn.add(s)
    assert conn.add(seg(5, "C", c + 14, SISN + 1, RST | ACK)) == [
        Flag("C", "RST", 5, 0.5, 14, False)
    ]


# -- bounds ---------------------------------------------------------------------------------


def test_out_of_order_buffer_cap_declares_gap_and_flushes() -> None:
    c = CISN + 1
    conn = Connection(CLIENT, SERVER, max_buffer=25)
    events: list[StreamEvent] = []
    for s in handshake():
        events += conn.add(s)
    events += conn.add(seg(4, "C", c, SISN + 1, ACK, b"0123456789"))
    # bytes 10..19 lost; 20..49 arrive: the third segment brings the buffer to 30 > 25
    events += conn.add(seg(5, "C", c + 20, SISN + 1, ACK, b"K" * 10))
    events += conn.add(seg(6, "C", c + 30, SISN + 1, ACK, b"L" * 10))
    assert not of(events, Gap)
    flushed = conn.add(seg(7, "C", c + 40, SISN + 1, ACK, b"M" * 10))
    assert flushed == [
        Gap("C", 10, 10, 7, 0.7, "out-of-order-flush"),
        Data("C", 20, b"K" * 10, 5, 0.5),
        Data("C", 30, b"L" * 10, 6, 0.6),
        Data("C", 40, b"M" * 10, 7, 0.7),
    ]
    assert conn._c.buf_bytes == 0
    check_invariant(events + flushed + conn.finish())


# -- property -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=400),
    isn=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 300, 2**32 - 1)),
    seed=st.integers(0, 2**32 - 1),
    extra=st.integers(0, 12),
)
def test_any_segmentation_and_order_reassembles_exactly(
    data: bytes, isn: int, seed: int, extra: int
) -> None:
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 20))))
    bounds = list(zip([0, *cuts], [*cuts, len(data)], strict=True))
    for _ in range(extra):  # duplicates and re-segmented overlapping resends, same bytes
        lo = rnd.randrange(len(data))
        bounds.append((lo, rnd.randint(lo + 1, len(data))))
    rnd.shuffle(bounds)
    segs = [seg(1, "C", isn, 0, SYN)]
    segs += [
        seg(i + 2, "C", isn + 1 + lo, SISN + 1, ACK, data[lo:hi])
        for i, (lo, hi) in enumerate(bounds)
    ]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert stream(events, "C") == data
    assert not of(events, Gap) and not of(events, Overlap)
    for ev in of(events, Data):  # each byte's provenance is a segment that carried it
        lo, hi = bounds[ev.frame - 2]
        assert lo <= ev.offset and ev.offset + len(ev.data) <= hi


def test_implausible_ack_is_ignored_not_a_gigabyte_gap() -> None:
    segs = handshake() + [seg(4, "S", SISN + 1, CISN + 1 + (1 << 31) - 10)]
    events = run(segs)
    assert not of(events, Gap)


def test_rst_ack_field_reveals_nothing() -> None:
    segs = handshake() + [seg(4, "S", SISN + 1, CISN + 500, RST | ACK)]
    events = run(segs)
    assert not of(events, Gap) and of(events, Flag)[-1].kind == "RST"


def test_provenance_memory_bounded_for_tiny_segments() -> None:
    from pcapsmtp.reassembly import PROVENANCE_KEEP

    c = CISN + 1
    n = 3 * PROVENANCE_KEEP
    segs = handshake() + [seg(4 + i, "C", c + i, SISN + 1, ACK, b"x") for i in range(n)]
    conn = Connection(CLIENT, SERVER)
    events = run(segs, conn)
    assert len(of(events, Data)) == n
    assert len(conn._c.prov_offs) <= 2 * PROVENANCE_KEEP
    last = n - 1
    assert conn.add(seg(9, "C", c + last - 1, SISN + 1, ACK, b"xx")) == [
        Retransmission("C", 9, 0.9, last - 1, 2, 4 + last - 1),
    ]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=300),
    isn=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 300, 2**32 - 1)),
    seed=st.integers(0, 2**32 - 1),
)
def test_loss_acks_and_snaplen_never_misplace_a_byte(data: bytes, isn: int, seed: int) -> None:
    """Whatever is lost, cut or ACKed early: every delivered byte sits at its true offset,
    and a final ACK of everything leaves no byte unaccounted for."""
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 15))))
    bounds = list(zip([0, *cuts], [*cuts, len(data)], strict=True))
    starts = rnd.sample(range(len(data)), min(2, len(data)))
    bounds += [(lo, rnd.randint(lo + 1, len(data))) for lo in starts]  # overlapping resends
    rnd.shuffle(bounds)
    segs = [seg(1, "C", isn, 0, SYN)]
    for lo, hi in bounds:
        frame = len(segs) + 1
        roll = rnd.random()
        if roll < 0.2:
            continue  # the capture lost it
        if roll < 0.3:  # snaplen cut
            kept = rnd.randint(0, hi - lo - 1)
            segs.append(seg(frame, "C", isn + 1 + lo, SISN + 1, ACK, data[lo : lo + kept],
                            missing=hi - lo - kept))
        else:
            segs.append(seg(frame, "C", isn + 1 + lo, SISN + 1, ACK, data[lo:hi]))
        if rnd.random() < 0.2:  # the server ACKs up to somewhere it may have received
            segs.append(seg(frame + 1, "S", SISN + 1, isn + 1 + rnd.randint(0, hi)))
    segs.append(seg(len(segs) + 1, "S", SISN + 1, isn + 1 + len(data)))
    events = run(segs)
    covered = 0
    for ev in events:
        if isinstance(ev, Data):
            assert ev.data == data[ev.offset : ev.offset + len(ev.data)]
            covered += len(ev.data)
        elif isinstance(ev, Gap):
            covered += ev.length
    assert covered == len(data)


def _with_ids(segments: list[Segment], delay: float, same_id: bool,
              first_id: int = 1000) -> list[Segment]:
    """Each segment with an IPv4 identification, then a copy ``delay`` later carrying the
    same identification (the packet captured again) or the next one (the stack sent it
    again)."""
    out: list[Segment] = []
    for i, s in enumerate(segments):
        ident = first_id + 2 * i
        for t, n in ((s.time, ident), (s.time + delay, ident if same_id else ident + 1)):
            out.append(dataclasses.replace(s, frame=len(out) + 1, time=t, ip_id=n))
    return out


def test_pure_acks_captured_twice_are_duplicates_by_their_ip_id() -> None:
    """A copy of a pure ACK or RST with the same (non-zero) IPv4 identification is the same
    packet captured twice; with another identification it is the stack's own repeat (a
    duplicate ACK, a second RST), counted as a segment; identification 0 proves nothing."""
    c, s = CISN + 1, SISN + 1
    once = handshake() + [seg(4, "C", c, s, ACK), seg(5, "C", c, s, RST, window=0)]
    conn = Connection(CLIENT, SERVER)
    events = run(_with_ids(once, 0.00002, same_id=True), conn)
    assert conn.stats.C.duplicates == 4  # SYN, the handshake's ACK, the ACK, the RST
    assert conn.stats.C.segments == 4
    assert [e.repeat for e in of(events, Flag, "C") if e.kind == "RST"] == [False]
    conn = Connection(CLIENT, SERVER)
    events = run(_with_ids(once, 0.00002, same_id=False), conn)
    assert conn.stats.C.duplicates == 0 and conn.stats.C.segments == 8
    assert [e.repeat for e in of(events, Flag, "C") if e.kind == "RST"] == [False, True]
    zero = [dataclasses.replace(x, ip_id=0) for x in _with_ids(once, 0.00002, True)]
    conn = Connection(CLIENT, SERVER)
    run(zero, conn)
    assert conn.stats.C.duplicates == 1  # only the SYN: a pure ACK or RST with id 0 is not


def test_data_resent_within_a_millisecond_with_a_new_ip_id_is_a_retransmission() -> None:
    segs = handshake() + [seg(4, "C", CISN + 1, SISN + 1, ACK | PSH, b"QUIT\r\n")]
    conn = Connection(CLIENT, SERVER)
    events = run(_with_ids(segs, 0.0002, same_id=False), conn)
    assert len(of(events, Retransmission, "C")) == 1 and conn.stats.C.duplicates == 0
