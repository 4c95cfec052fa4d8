"""Which side is the client, and which connections are followed."""

from __future__ import annotations

from pcapsmtp.flows import DEFAULT_PORTS, FlowTable, Selection, choose_client
from pcapsmtp.packets import ACK, FIN, PSH, SYN, Segment


def seg(src: str, sport: int, dst: str, dport: int, flags: int = ACK, payload: bytes = b"",
        seq: int = 1000, frame: int = 1) -> Segment:
    return Segment(frame, float(frame), src, sport, dst, dport, seq, 0, flags, 65535, payload)


def test_syn_sender_is_client_even_on_odd_ports() -> None:
    s = seg("192.0.2.1", 25, "192.0.2.2", 40000, flags=SYN)
    assert choose_client(s, DEFAULT_PORTS) == (("192.0.2.1", 25), ("192.0.2.2", 40000))


def test_syn_ack_receiver_is_client() -> None:
    s = seg("192.0.2.2", 25, "192.0.2.1", 40000, flags=SYN | ACK)
    assert choose_client(s, DEFAULT_PORTS) == (("192.0.2.1", 40000), ("192.0.2.2", 25))


def test_without_syn_the_smtp_port_is_the_server() -> None:
    s = seg("192.0.2.2", 587, "192.0.2.1", 40000, flags=ACK | PSH, payload=b"250 ok\r\n")
    assert choose_client(s, DEFAULT_PORTS) == (("192.0.2.1", 40000), ("192.0.2.2", 587))


def test_without_syn_or_known_port_the_banner_sender_is_the_server() -> None:
    s = seg("192.0.2.1", 3000, "192.0.2.2", 2525, flags=ACK | PSH, payload=b"220 mx ESMTP\r\n")
    assert choose_client(s, DEFAULT_PORTS) == (("192.0.2.2", 2525), ("192.0.2.1", 3000))


class Recorder:
    def __init__(self, client, server, first) -> None:  # noqa: ANN001
        self.client, self.server, self.segments = client, server, []
        self.closed_at = None
        self.has_data = False
        self.client_isn = first.seq if first.flags & SYN else None

    def add(self, s: Segment) -> None:
        self.segments.append(s)
        if s.flags & FIN:
            self.closed_at = s.time


def test_only_smtp_ports_are_followed_by_default() -> None:
    table = FlowTable(Selection(), Recorder)
    list(table.add(seg("192.0.2.1", 40000, "192.0.2.2", 80, flags=SYN)))
    list(table.add(seg("192.0.2.1", 40001, "192.0.2.2", 25, flags=SYN)))
    assert [c.server for c in table.active.values()] == [("192.0.2.2", 25)]


def test_any_port_finds_smtp_by_banner_and_replays_the_handshake() -> None:
    table = FlowTable(Selection(any_port=True), Recorder)
    c, s = ("192.0.2.1", 40000), ("192.0.2.2", 2525)
    list(table.add(seg(*c, *s, flags=SYN, frame=1)))
    list(table.add(seg(*s, *c, flags=SYN | ACK, frame=2)))
    list(table.add(seg(*c, *s, frame=3)))
    assert not table.active
    list(table.add(seg(*s, *c, flags=ACK | PSH, payload=b"220 hi\r\n", frame=4)))
    (conn,) = table.active.values()
    assert conn.client == c and conn.server == s
    assert [x.frame for x in conn.segments] == [1, 2, 3, 4]


def test_any_port_ignores_a_flow_that_never_greets() -> None:
    table = FlowTable(Selection(any_port=True), Recorder)
    for i in range(10):
        list(table.add(seg("192.0.2.1", 40000, "192.0.2.2", 80, payload=b"GET / HTTP/1.1\r\n",
                           frame=i + 1)))
    assert not table.active


def test_a_new_syn_on_a_closed_four_tuple_starts_a_new_connection() -> None:
    table = FlowTable(Selection(), Recorder)
    c, s = ("192.0.2.1", 40000), ("192.0.2.2", 25)
    list(table.add(seg(*c, *s, flags=SYN, seq=100, frame=1)))
    list(table.add(seg(*c, *s, flags=FIN | ACK, seq=101, frame=2)))
    displaced = list(table.add(seg(*c, *s, flags=SYN, seq=90000, frame=3)))
    assert len(displaced) == 1 and [x.frame for x in displaced[0].segments] == [1, 2]
    (new,) = table.active.values()
    assert [x.frame for x in new.segments] == [3]


def test_a_syn_retry_stays_in_the_same_connection() -> None:
    table = FlowTable(Selection(), Recorder)
    c, s = ("192.0.2.1", 40000), ("192.0.2.2", 25)
    list(table.add(seg(*c, *s, flags=SYN, seq=100, frame=1)))
    assert not list(table.add(seg(*c, *s, flags=SYN, seq=100, frame=2)))
    (conn,) = table.active.values()
    assert len(conn.segments) == 2


def test_pop_closed_returns_closed_connections_in_the_order_they_opened() -> None:
    table = FlowTable(Selection(), Recorder)
    for port in (40000, 40001, 40002):
        list(table.add(seg("192.0.2.1", port, "192.0.2.2", 25, flags=SYN, frame=1)))
    list(table.add(seg("192.0.2.1", 40002, "192.0.2.2", 25, flags=FIN | ACK, frame=2)))
    list(table.add(seg("192.0.2.1", 40000, "192.0.2.2", 25, flags=FIN | ACK, frame=3)))
    assert table.pop_closed(4.0, 5.0) == []
    closed = table.pop_closed(9.0, 5.0)
    assert [c.client[1] for c in closed] == [40000, 40002]
    assert [c.client[1] for c in table.active.values()] == [40001]
    assert table.pop_closed(100.0, 5.0) == []


def test_pop_closed_skips_a_connection_displaced_by_port_reuse() -> None:
    table = FlowTable(Selection(), Recorder)
    c, s = ("192.0.2.1", 40000), ("192.0.2.2", 25)
    list(table.add(seg(*c, *s, flags=SYN, seq=1000, frame=1)))
    list(table.add(seg(*c, *s, flags=FIN | ACK, frame=2)))
    (old,) = table.active.values()
    assert table.add(seg(*c, *s, flags=SYN, seq=5000, frame=3)) == (old,)
    (new,) = table.active.values()
    assert table.pop_closed(100.0, 5.0) == [] and list(table.active.values()) == [new]
