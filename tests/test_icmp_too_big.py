"""ICMP "fragmentation needed" / ICMPv6 "Packet Too Big": decoded, routed to the connection
the quoted segment belongs to, and put on its timeline toward the host that sent it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet

from pcapsmtp.analyze import Pipeline, analyze, run_frames
from pcapsmtp.capture import open_capture
from pcapsmtp.flows import Selection
from pcapsmtp.packets import Decoder, DecodeStats, Segment, TooBig
from pcapsmtp.render import text as text_report
from pcapsmtp.timeline import Session
from tests.craft_session import Conversation, up_to_data
from tests.test_packets import frame, sll2

CLIENT4, SERVER4, ROUTER4 = "192.0.2.10", "198.51.100.25", "192.0.2.1"
CLIENT6, SERVER6, ROUTER6 = "2001:db8:1::10", "2001:db8:2::25", "2001:db8:1::1"
SEQ = 0x89ABCDEF  # above 2**31: the sequence number is read unsigned


def eth() -> Ether:
    """Explicit MACs: without them scapy looks up a route and ARP for each packet (~2 s)."""
    return Ether(src="02:00:00:00:00:03", dst="02:00:00:00:00:01")


def big4(seq: int = SEQ) -> Packet:
    """The too-big segment the router could not forward: client to server, 1448 bytes."""
    return IP(src=CLIENT4, dst=SERVER4) / TCP(sport=40000, dport=25, seq=seq, flags="PA") \
        / (b"x" * 1448)


def big6(seq: int = SEQ) -> Packet:
    return IPv6(src=CLIENT6, dst=SERVER6) / TCP(sport=40000, dport=25, seq=seq, flags="PA") \
        / (b"x" * 1428)


def frag_needed(quoted: Packet, mtu: int = 1280, keep: int = 548) -> Packet:
    """What Linux routers send: the IPv4 header and the first bytes of the datagram."""
    return IP(src=ROUTER4, dst=quoted[IP].src) / ICMP(type=3, code=4, nexthopmtu=mtu) \
        / bytes(quoted)[:keep]


def too_big6(quoted: Packet, mtu: int = 1280, keep: int = 1232) -> Packet:
    return IPv6(src=ROUTER6, dst=quoted[IPv6].src) / ICMPv6PacketTooBig(mtu=mtu) \
        / bytes(quoted)[:keep]


def decode(data: bytes | Packet, linktype: int = 1,
           shard: tuple[int, int] | None = None) -> tuple[object, DecodeStats]:
    d = Decoder()
    d.shard = shard
    return d.decode(frame(data, linktype, number=7, time=3.5)), d.stats


def invariant(s: DecodeStats) -> bool:
    return s.frames == (s.tcp + s.non_tcp + s.malformed + sum(s.unknown_linktypes.values())
                        + s.fragments - s.reassembled)


# ---- the decoder -------------------------------------------------------------------


@pytest.mark.parametrize("wrap,linktype", [
    (lambda p: eth() / p, 1),
    (lambda p: eth() / Dot1Q(vlan=7) / p, 1),
    (lambda p: sll2(p), 276),
    (lambda p: p, 101),
])
def test_ipv4_frag_needed_names_the_quoted_segment(wrap, linktype: int) -> None:  # noqa: ANN001
    msg, stats = decode(wrap(frag_needed(big4(), mtu=1280)), linktype)
    assert msg == TooBig(7, 3.5, ROUTER4, 1280, CLIENT4, 40000, SERVER4, 25, SEQ, 4)
    # counted where every ICMP was counted before, and once more as handed on
    assert (stats.non_tcp, stats.too_big, stats.tcp, stats.malformed) == (1, 1, 0, 0)
    assert invariant(stats)


def test_ipv4_frag_needed_with_ip_options_in_both_headers() -> None:
    quoted = IP(src=CLIENT4, dst=SERVER4, options=[b"\x01" * 4]) \
        / TCP(sport=40001, dport=587, seq=5) / (b"y" * 1400)
    outer = IP(src=ROUTER4, dst=CLIENT4, options=[b"\x01" * 8]) \
        / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(quoted)[:24 + 8]
    msg, _ = decode(eth() / outer)
    assert isinstance(msg, TooBig)
    assert (msg.src, msg.sport, msg.dst, msg.dport, msg.seq, msg.mtu) == \
        (CLIENT4, 40001, SERVER4, 587, 5, 1400)


def test_ipv6_packet_too_big_past_extension_headers() -> None:
    """Extension headers before the ICMPv6 (the decoder walks them already) and inside
    the quoted packet (a destination option, a first fragment)."""
    quoted = IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrDestOpt() \
        / IPv6ExtHdrFragment(offset=0, m=1, id=3) / TCP(sport=40000, dport=25, seq=SEQ) \
        / (b"z" * 1400)
    outer = IPv6(src=ROUTER6, dst=CLIENT6) / IPv6ExtHdrHopByHop() \
        / ICMPv6PacketTooBig(mtu=1280) / bytes(quoted)[:1200]
    for data, lt in [(eth() / outer, 1), (sll2(outer, 0x86DD), 276), (outer, 229)]:
        msg, stats = decode(data, lt)
        assert msg == TooBig(7, 3.5, ROUTER6, 1280, CLIENT6, 40000, SERVER6, 25, SEQ, 6)
        assert (stats.non_tcp, stats.too_big) == (1, 1) and invariant(stats)


@pytest.mark.parametrize("keep", [0, 8, 19, 20, 27])
def test_ipv4_quote_too_short_for_ports_and_seq_is_just_non_tcp(keep: int) -> None:
    """RFC 792 quotes the IP header + 8 bytes; with less (or a snaplen that cut the
    frame) the connection cannot be named: counted as non_tcp, nothing handed on."""
    msg, stats = decode(eth() / frag_needed(big4(), keep=keep))
    assert msg is None
    assert (stats.non_tcp, stats.too_big, stats.malformed) == (1, 0, 0)
    assert invariant(stats)


def test_quote_of_exactly_ip_header_and_8_bytes_is_enough() -> None:
    msg, _ = decode(eth() / frag_needed(big4(), keep=28))
    assert isinstance(msg, TooBig) and msg.seq == SEQ


def test_every_cut_of_a_too_big_frame_is_safe() -> None:
    """A frame cut anywhere (snaplen) never raises and keeps the accounting whole."""
    for raw in (bytes(eth() / frag_needed(big4())), bytes(eth() / too_big6(big6()))):
        for cut in range(len(raw) + 1):
            msg, stats = decode(raw[:cut])
            assert msg is None or isinstance(msg, TooBig)
            assert invariant(stats) and stats.frames == 1


@pytest.mark.parametrize("pkt", [
    IP(src=ROUTER4, dst=CLIENT4) / ICMP(type=8),  # echo request
    IP(src=ROUTER4, dst=CLIENT4) / ICMP(type=3, code=3) / bytes(big4())[:28],  # port unr.
    IP(src=ROUTER4, dst=CLIENT4) / ICMP(type=3, code=4, nexthopmtu=1280)
    / bytes(IP(src=CLIENT4, dst=SERVER4) / UDP(sport=5, dport=53) / (b"q" * 1400))[:28],
    IP(src=ROUTER4, dst=CLIENT4) / ICMP(type=3, code=4, nexthopmtu=1280)  # a later fragment
    / bytes(IP(src=CLIENT4, dst=SERVER4, frag=185, proto=6) / (b"f" * 100))[:28],
    IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6EchoRequest(),
    IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6PacketTooBig(mtu=1280)  # quotes UDP
    / bytes(IPv6(src=CLIENT6, dst=SERVER6) / UDP(sport=5, dport=53) / (b"q" * 1400))[:1232],
    IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6PacketTooBig(mtu=1280)  # a later fragment
    / bytes(IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment(offset=100, nh=6)
            / (b"f" * 100))[:60],
], ids=["echo", "port-unreachable", "quotes-udp", "quotes-later-fragment", "echo6",
        "too-big6-quotes-udp", "too-big6-later-fragment"])
def test_other_icmp_stays_non_tcp(pkt: Packet) -> None:
    msg, stats = decode(eth() / pkt)
    assert msg is None
    assert (stats.non_tcp, stats.too_big, stats.malformed) == (1, 0, 0)


def test_icmp_goes_to_the_shard_of_the_quoted_connection() -> None:
    """Each worker builds only its shard's connections: the ICMP must reach the one
    worker that gets the connection's segments, and every worker counts it alike."""
    segment = bytes(eth() / big4())
    reply = bytes(eth() / IP(src=SERVER4, dst=CLIENT4) / TCP(sport=25, dport=40000, seq=9,
                                                               flags="A"))
    icmp = bytes(eth() / frag_needed(big4()))
    for count in (2, 3, 5):
        owners, icmp_owners = set(), set()
        for index in range(count):
            got = [decode(raw, shard=(index, count)) for raw in (segment, reply, icmp)]
            if isinstance(got[0][0], Segment):
                owners.add(index)
                assert isinstance(got[1][0], Segment)
            if isinstance(got[2][0], TooBig):
                icmp_owners.add(index)
            assert (got[2][1].non_tcp, got[2][1].too_big) == (1, 1)
        assert len(owners) == 1 and icmp_owners == owners, count


# ---- the pipeline: the event on the right session, in the right direction ------------


def pmtu_conversation(version: int, ignored: bool = True) -> tuple[list[Packet], int, int]:
    """A client's full-size DATA segment too big for the path; the router answers with
    an ICMP too-big.  ``ignored``: the client retransmits the full-size segment and the
    server gives up with 421; else it resends the bytes in smaller segments (PMTU
    discovery worked) and the message is queued.  (packets, ICMP frame, stream offset
    of the too-big segment)."""
    c = up_to_data(Conversation(client=CLIENT6, server=SERVER6) if version == 6 else None)
    c.server_ack()
    offset = c.cseq - 1001  # the stream's first byte is ISN + 1 (Conversation's ISN: 1000)
    body = b"Subject: t\r\n\r\n" + b"m" * 1420 + b"\r\n.\r\n"
    (sent,) = c.client_sends(body[:1428])
    ip_layer = sent[IPv6] if version == 6 else sent[IP]
    icmp = too_big6(ip_layer) if version == 6 else frag_needed(ip_layer)
    c.time += 0.001
    icmp_pkt = eth() / icmp
    icmp_pkt.time = c.time
    c.packets.append(icmp_pkt)
    icmp_frame = len(c.packets)
    if ignored:
        for pause in (0.2, 0.4, 0.8):
            c._pkt(True, "PA", body[:1428], seq=1001 + offset, step=pause)
        c.server_sends(b"421 4.4.2 mx.lab.example Error: timeout exceeded\r\n", step=5)
        c._pkt(False, "FA")
    else:
        c._pkt(True, "PA", body[:1200], seq=1001 + offset, step=0.01)
        c._pkt(True, "PA", body[1200:1428], seq=1001 + offset + 1200, step=0.001)
        c.client_sends(body[1428:])
        c.server_sends(b"250 2.0.0 Ok: queued as 1234\r\n")
        c.client_sends(b"QUIT\r\n")
        c.server_sends(b"221 2.0.0 Bye\r\n")
        c.close()
    return c.packets, icmp_frame, offset


def one_session(path: Path, jobs: int = 1) -> Session:
    result = analyze(str(path), jobs=jobs)
    assert len(result.sessions) == 1
    return result.sessions[0]


@pytest.mark.parametrize("version", [4, 6])
def test_ignored_too_big_lands_on_its_session_toward_the_client(tmp_path: Path,
                                                                version: int) -> None:
    packets, icmp_frame, offset = pmtu_conversation(version)
    path = Conversation().write(tmp_path / "pmtu.pcap", packets)
    s = one_session(path)
    (e,) = [e for e in s.events if e.kind == "icmp-too-big"]
    router = ROUTER6 if version == 6 else ROUTER4
    assert e.frame == icmp_frame
    assert e.direction == "S"  # the client sent the big segment: the ICMP goes to it
    assert e.fields == {"router": router, "mtu": 1280, "offset": offset,
                        "ip_version": version}
    assert router in e.text and "1280" in e.text and f"offset {offset}" in e.text
    assert s.packets == len(packets) - 1  # TCP segments only
    verdict = s.verdict
    assert verdict.code == "pmtu-blackhole"
    assert f"reached the capture point (frame {icmp_frame}," in verdict.summary
    assert "the client dropped or ignored it" in verdict.summary
    assert icmp_frame in [x.frame for x in verdict.evidence]
    client = CLIENT6 if version == 6 else CLIENT4
    assert "ICMP type 3 code 4" in verdict.next_step and f"({client})" in verdict.next_step
    rows = [line for line in text_report.lines(analyze(str(path)))
            if re.match(rf"\s+\d+\.\d+\s+\S+\s+{icmp_frame}\s", line)]
    assert len(rows) == 1
    assert rows[0].split()[1] == "<-" and f"from {router}: " in rows[0]
    assert rows[0].endswith(f"(offset {offset})")  # whole, not cut at 100 columns


def test_too_big_then_smaller_segments_is_no_black_hole(tmp_path: Path) -> None:
    """PMTU discovery worked: the event is shown, the verdict is the dialogue's."""
    packets, icmp_frame, _ = pmtu_conversation(4, ignored=False)
    s = one_session(Conversation().write(tmp_path / "ok.pcap", packets))
    assert [e.frame for e in s.events if e.kind == "icmp-too-big"] == [icmp_frame]
    assert s.verdict.code == "ok"
    assert not any(n.code == "pmtu-blackhole" for n in s.notes)


def test_too_big_about_no_followed_connection_opens_no_session(tmp_path: Path) -> None:
    packets, _, _ = pmtu_conversation(4, ignored=False)
    other = eth() / frag_needed(IP(src=CLIENT4, dst=SERVER4) / TCP(sport=40999, dport=25)
                                  / (b"x" * 1448))
    other.time = packets[5].time
    path = Conversation().write(tmp_path / "stray.pcap", [*packets[:5], other, *packets[5:]])
    pipeline = Pipeline(Selection())
    with open_capture(str(path)) as reader:
        run_frames(pipeline, reader)
    sessions = pipeline.close()
    assert [s.client for s in sessions] == [(CLIENT4, 40000)]
    assert pipeline.table.too_big_unmatched == 1
    assert pipeline.decoder.stats.too_big == 2
