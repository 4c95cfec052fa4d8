"""One connection captured twice, before and after a NAT (`tcpdump -i any` on a DNAT host).

A Docker host publishing port 25, or a NAT gateway, forwards each packet from the
interface where it arrived, addressed to the host, to the one toward the server, now
addressed to the server; `-i any` records both.  The two copies share the client's
address, port and ISN.  The report names the pairs once, and the cross-session
patterns (ban, retry storm) count each connection once.
"""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP
from scapy.packet import Packet

from pcapsmtp.analyze import analyze
from tests.craft_session import Conversation

VIP, SERVER = "203.0.113.25", "198.51.100.25"


def deferred(port: int, isn: int, start: float) -> Conversation:
    """Banner, EHLO, MAIL answered 451, QUIT: a failure the client will retry."""
    c = Conversation(server=VIP, cport=port, cseq=isn, time=start)
    c.handshake()
    c.server_sends(b"220 mx.lab.example ESMTP\r\n")
    c.client_sends(b"EHLO client.example\r\n")
    c.server_sends(b"250 mx.lab.example\r\n")
    c.client_sends(b"MAIL FROM:<a@client.example>\r\n")
    c.server_sends(b"451 4.3.0 try again later\r\n")
    c.client_sends(b"QUIT\r\n")
    c.server_sends(b"221 2.0.0 Bye\r\n")
    c.close()
    return c


def after_nat(p: Packet, delay: float = 0.00002) -> Packet:
    """The packet as the host forwards it: the VIP rewritten to the server (DNAT on the
    way in, un-NAT on the way back is the same packet seen first), a little later."""
    q = p.copy()
    ip = q[IP]
    if ip.dst == VIP:
        ip.dst = SERVER
    elif ip.src == VIP:
        ip.src = SERVER
    del ip.chksum
    q.time = p.time + delay
    return q


def both_sides(convs: list[Conversation]) -> list[Packet]:
    packets = []
    for c in convs:
        for p in c.packets:
            packets += [p, after_nat(p)]
    return sorted(packets, key=lambda p: float(p.time))


def test_copies_are_named_once_and_patterns_count_them_once(tmp_path: Path) -> None:
    # Three deferred connections within a minute: each appears twice, six sessions,
    # which would pass the retry-storm threshold (five) if each copy counted.
    convs = [deferred(40000 + i, 1_000_000 * (i + 1), 1_700_000_000.0 + 20 * i)
             for i in range(3)]
    path = convs[0].write(tmp_path / "dnat.pcap", both_sides(convs))
    result = analyze(str(path))
    sessions = list(result.sessions)
    assert len(sessions) == 6
    assert {s.server[0] for s in sessions} == {VIP, SERVER}
    codes = [f.code for f in result.findings]
    assert "retry-storm" not in codes
    copies = [f for f in result.findings if f.code == "nat-copy"]
    assert len(copies) == 1
    by_id = {s.id: s for s in sessions}
    assert sorted(copies[0].sessions) == sorted(by_id)
    assert "3 connection(s) appear twice" in copies[0].summary
    for a, b in zip(sessions[::2], sessions[1::2], strict=True):  # in order of first packet
        assert (a.server[0], b.server[0]) == (VIP, SERVER)
        assert f"{a.id} and {b.id}" in copies[0].summary


def test_real_storm_still_found_when_copies_are_removed(tmp_path: Path) -> None:
    convs = [deferred(40000 + i, 1_000_000 * (i + 1), 1_700_000_000.0 + 20 * i)
             for i in range(5)]
    path = convs[0].write(tmp_path / "storm.pcap", both_sides(convs))
    storms = [f for f in analyze(str(path)).findings if f.code == "retry-storm"]
    assert len(storms) == 1 and len(storms[0].sessions) == 5  # the first copies only


def test_different_connections_are_not_copies(tmp_path: Path) -> None:
    """Same client port to two servers, but a different ISN (two connects); and the
    same ISN without a SYN in the capture: never paired."""
    a = deferred(40000, 1_000_000, 1_700_000_000.0)
    b = deferred(40000, 2_000_000, 1_700_000_000.0)
    packets = sorted(a.packets + [after_nat(p) for p in b.packets], key=lambda p: float(p.time))
    path = a.write(tmp_path / "two.pcap", packets)
    assert "nat-copy" not in [f.code for f in analyze(str(path)).findings]
    no_syn = both_sides([a])
    no_syn = [p for p in no_syn if not p["TCP"].flags.S]
    path = a.write(tmp_path / "nosyn.pcap", no_syn)
    assert "nat-copy" not in [f.code for f in analyze(str(path)).findings]


def test_copies_with_two_workers(tmp_path: Path) -> None:
    """The pair may be built by different workers: the stubs carry the ISN."""
    convs = [deferred(40000 + i, 1_000_000 * (i + 1), 1_700_000_000.0 + 20 * i)
             for i in range(4)]
    path = convs[0].write(tmp_path / "dnat.pcap", both_sides(convs))
    one = [f.summary for f in analyze(str(path), jobs=1).findings if f.code == "nat-copy"]
    two = [f.summary for f in analyze(str(path), jobs=2).findings if f.code == "nat-copy"]
    assert one == two and len(one) == 1


def test_copies_whose_verdicts_differ_say_so(tmp_path: Path) -> None:
    """The server's 451 never left the host toward the client (only its copy on the
    server's side is in the capture): the two copies end differently, and the finding
    points at the host."""
    c = deferred(40000, 1_000_000, 1_700_000_000.0)
    packets = []
    for p in c.packets:
        packets.append(after_nat(p))
        if b"451" not in bytes(p.payload):
            packets.append(p)
    path = c.write(tmp_path / "drop.pcap", sorted(packets, key=lambda p: float(p.time)))
    found = [f for f in analyze(str(path)).findings if f.code == "nat-copy"]
    assert len(found) == 1 and "verdicts differ" in found[0].summary
