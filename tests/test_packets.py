"""Decoder: link types, VLANs, IPv4/IPv6 headers, fragments, snaplen cuts, bad input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from pcapsmtp.capture import Frame
from pcapsmtp.packets import ACK, FIN, PSH, SYN, Decoder, DecodeStats, Segment, TooBig

TCP_SYN = TCP(sport=40000, dport=25, seq=1000, ack=0, flags="S", window=64240)
DATA = b"EHLO client.example\r\n"


def ip4(payload: bytes = DATA, **kw: object) -> IP:
    return IP(src="192.0.2.1", dst="198.51.100.2", **kw) / TCP(
        sport=40000, dport=25, seq=1001, ack=5001, flags="PA", window=502) / payload


def ip6(payload: bytes = DATA) -> IPv6:
    return IPv6(src="2001:db8::1", dst="2001:db8:0:0:1::25") / TCP(
        sport=40000, dport=25, seq=7, ack=9, flags="A") / payload


def frame(data: bytes | object, linktype: int = 1, number: int = 1, time: float = 1.0) -> Frame:
    raw = bytes(data)
    return Frame(number, time, linktype, len(raw), len(raw), raw)


def decode_one(data: bytes | object, linktype: int = 1) -> tuple[Segment | None, DecodeStats]:
    d = Decoder()
    return d.decode(frame(data, linktype)), d.stats


def assert_ehlo4(seg: Segment | None) -> None:
    assert seg is not None
    assert (seg.src, seg.sport, seg.dst, seg.dport) == ("192.0.2.1", 40000, "198.51.100.2", 25)
    assert (seg.seq, seg.ack, seg.window, seg.flags) == (1001, 5001, 502, PSH | ACK)
    assert seg.payload == DATA and seg.missing == 0 and seg.ip_version == 4


def sll(ip_pkt: object, proto: int = 0x0800) -> bytes:
    """Linux cooked v1: packet type, ARPHRD, address length, 8 address bytes, protocol."""
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", proto) + bytes(ip_pkt)


def sll2(ip_pkt: object, proto: int = 0x0800) -> bytes:
    """Linux cooked v2 (tcpdump -i any): protocol first, then ifindex, ARPHRD, ..."""
    return struct.pack("!HHIHBB8s", proto, 0, 3, 1, 0, 6, b"\x02" * 6 + b"\0\0") + bytes(ip_pkt)


# ---- link layers -------------------------------------------------------------------


def test_ethernet_ipv4_fields() -> None:
    seg, stats = decode_one(Ether() / ip4())
    assert_ehlo4(seg)
    assert (stats.frames, stats.tcp) == (1, 1)


def test_segment_keeps_frame_number_and_time() -> None:
    seg = Decoder().decode(frame(Ether() / ip4(), number=42, time=12.5))
    assert seg is not None and (seg.frame, seg.time) == (42, 12.5)


def test_syn_flags() -> None:
    seg, _ = decode_one(Ether() / IP() / TCP_SYN)
    assert seg is not None and seg.flags == SYN and seg.payload == b"" and seg.window == 64240
    seg, _ = decode_one(Ether() / IP() / TCP(flags="FA"))
    assert seg is not None and seg.flags == FIN | ACK


def test_ethernet_padding_is_stripped() -> None:
    """A short segment is padded to 60 bytes on the wire; the padding is not payload."""
    raw = bytes(Ether() / ip4(b"QUIT"))
    assert len(raw) == 14 + 20 + 20 + 4
    padded = raw + b"\x00\xff" * 10
    seg, _ = decode_one(padded)
    assert seg is not None and seg.payload == b"QUIT" and seg.missing == 0


@pytest.mark.parametrize("tags", [
    [Dot1Q(vlan=10)],
    [Dot1AD(vlan=100), Dot1Q(vlan=10)],
    [Dot1Q(vlan=1), Dot1Q(vlan=2), Dot1Q(vlan=3)],
])
def test_vlan_tags_any_depth(tags: list) -> None:
    pkt = Ether()
    for tag in tags:
        pkt = pkt / tag
    seg, _ = decode_one(pkt / ip4())
    assert_ehlo4(seg)


def test_qinq_9100_tpid() -> None:
    raw = bytes(Ether(type=0x9100) / Dot1Q(vlan=5) / ip4())
    assert raw[12:14] == b"\x91\x00"
    seg, _ = decode_one(raw)
    assert_ehlo4(seg)


def test_pppoe_session() -> None:
    pppoe = struct.pack("!BBHHH", 0x11, 0, 0x1234, len(bytes(ip4())) + 2, 0x0021)
    raw = bytes(Ether(type=0x8864)) + pppoe + bytes(ip4())
    seg, _ = decode_one(raw)
    assert_ehlo4(seg)


def test_linux_sll_and_sll2() -> None:
    assert_ehlo4(decode_one(sll(ip4()), 113)[0])
    assert_ehlo4(decode_one(sll2(ip4()), 276)[0])
    seg, _ = decode_one(sll2(ip6(), 0x86DD), 276)
    assert seg is not None and seg.ip_version == 6 and seg.payload == DATA


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_version_from_first_nibble(linktype: int) -> None:
    assert_ehlo4(decode_one(ip4(), linktype)[0])
    seg, _ = decode_one(ip6(), linktype)
    assert seg is not None and seg.src == "2001:db8::1" and seg.dst == "2001:db8::1:0:0:25"


def test_raw_ipv4_and_ipv6_linktypes() -> None:
    assert_ehlo4(decode_one(ip4(), 228)[0])
    seg, _ = decode_one(ip6(), 229)
    assert seg is not None and (seg.seq, seg.ack, seg.flags) == (7, 9, ACK)
    # an IPv6 packet under the IPv4-only link type is malformed, not misread
    seg, stats = decode_one(ip6(), 228)
    assert seg is None and stats.malformed == 1


@pytest.mark.parametrize("linktype", [0, 108])
@pytest.mark.parametrize("order", ["<", ">"])
def test_bsd_null_and_loop_families(linktype: int, order: str) -> None:
    assert_ehlo4(decode_one(struct.pack(order + "I", 2) + bytes(ip4()), linktype)[0])
    for family in (24, 28, 30):
        seg, _ = decode_one(struct.pack(order + "I", family) + bytes(ip6()), linktype)
        assert seg is not None and seg.ip_version == 6
    seg, stats = decode_one(struct.pack(order + "I", 7) + bytes(ip4()), linktype)
    assert seg is None and stats.non_tcp == 1


def test_unknown_linktype_is_counted_not_an_error() -> None:
    d = Decoder()
    assert d.decode(frame(ip4(), 147)) is None
    assert d.decode(frame(ip4(), 147)) is None
    assert d.decode(frame(ip4(), 9999)) is None
    assert d.stats.unknown_linktypes == {147: 2, 9999: 1}
    assert d.stats.malformed == 0


def test_non_tcp_is_counted() -> None:
    d = Decoder()
    assert d.decode(frame(Ether() / ARP())) is None
    assert d.decode(frame(Ether() / IP() / UDP(dport=53))) is None
    assert d.decode(frame(Ether() / IPv6() / UDP(dport=53))) is None
    assert (d.stats.non_tcp, d.stats.tcp, d.stats.malformed) == (3, 0, 0)


# ---- IP and TCP details ------------------------------------------------------------


def test_ipv4_options_honour_ihl() -> None:
    pkt = IP(src="192.0.2.1", dst="198.51.100.2", options=[b"\x01" * 8]) / TCP(
        sport=40000, dport=25, seq=1001, ack=5001, flags="PA", window=502) / DATA
    assert bytes(pkt)[0] == 0x47  # IHL 7: 8 option bytes
    assert_ehlo4(decode_one(pkt, 101)[0])


def test_tcp_options_honour_data_offset() -> None:
    pkt = IP() / TCP(flags="S", options=[("MSS", 1460), ("WScale", 7), ("SAckOK", b"")]) / b"x"
    seg, _ = decode_one(pkt, 101)
    assert seg is not None and seg.payload == b"x"


def test_bad_checksums_still_decode() -> None:
    """Checksum offload: the capturing host's own packets carry wrong checksums."""
    raw = bytes(Ether() / ip4(chksum=0x1234))
    pkt = Ether(raw)
    pkt[TCP].chksum = 0xBEEF
    raw = bytes(pkt)
    assert Ether(raw)[IP].chksum == 0x1234 and Ether(raw)[TCP].chksum == 0xBEEF
    good = Ether(bytes(Ether() / ip4()))
    assert good[IP].chksum != 0x1234 and good[TCP].chksum != 0xBEEF  # really wrong
    assert_ehlo4(decode_one(raw)[0])


def test_snaplen_cut_payload_counts_missing() -> None:
    raw = bytes(Ether() / ip4(b"A" * 1000))
    cut = raw[:96]
    seg, _ = decode_one(cut)
    assert seg is not None
    assert seg.payload == b"A" * (96 - 54)
    assert seg.missing == 1000 - 42


def test_snaplen_cut_ipv6() -> None:
    raw = bytes(ip6(b"B" * 500))
    seg, _ = decode_one(raw[:100], 101)
    assert seg is not None and seg.payload == b"B" * 40 and seg.missing == 460


def test_tso_zero_total_length_trusts_capture() -> None:
    raw = bytearray(bytes(ip4(b"C" * 3000)))
    raw[2:4] = b"\0\0"  # what a host with TSO captures before the NIC splits it
    seg, _ = decode_one(bytes(raw), 101)
    assert seg is not None and seg.payload == b"C" * 3000 and seg.missing == 0


def test_ipv6_extension_headers_are_walked() -> None:
    # AH by hand: next header TCP, length (24 / 4) - 2, reserved, SPI, sequence, 12-byte ICV
    ah = struct.pack("!BBHII", 6, 4, 0, 0x100, 1) + b"\0" * 12
    tcp = bytes(TCP(sport=25, dport=40000, seq=3, flags="SA") / b"220 hi\r\n")
    pkt = (IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop(nh=43)
           / IPv6ExtHdrRouting(nh=60, addresses=["2001:db8::99"]) / IPv6ExtHdrDestOpt(nh=51)
           / Raw(ah + tcp))
    raw = bytes(Ether() / pkt)
    seg, _ = decode_one(raw)
    assert seg is not None
    assert (seg.src, seg.dst, seg.sport, seg.flags) == ("2001:db8::1", "2001:db8::2", 25,
                                                         SYN | ACK)
    assert seg.payload == b"220 hi\r\n" and seg.ip_version == 6


# ---- fragments ------------------------------------------------------------------


def test_ipv4_fragments_reassembled_out_of_order() -> None:
    body = bytes(range(256)) * 8
    frags = fragment(ip4(body, id=4242), fragsize=512)
    assert len(frags) == 5
    d = Decoder()
    order = [2, 0, 4, 3, 1]
    results = [d.decode(frame(Ether() / frags[i], number=n + 1, time=1.0 + n))
               for n, i in enumerate(order)]
    assert results[:4] == [None] * 4
    seg = results[4]
    assert seg is not None and seg.payload == body and seg.frame == 5 and seg.time == 5.0
    assert (seg.sport, seg.seq, seg.missing) == (40000, 1001, 0)
    assert (d.stats.fragments, d.stats.reassembled, d.stats.tcp) == (5, 1, 1)
    assert d.stats.fragments_incomplete == 0


def test_dont_fragment_bit_is_not_a_fragment() -> None:
    """Linux sets DF on every TCP packet; only MF or an offset makes a fragment."""
    seg, stats = decode_one(Ether() / ip4(flags="DF", id=0))
    assert_ehlo4(seg)
    assert stats.fragments == 0


def test_fragments_with_same_id_from_other_hosts_do_not_mix() -> None:
    a = fragment(ip4(b"a" * 600, id=7), fragsize=256)
    b = fragment(IP(src="203.0.113.9", dst="198.51.100.2", id=7) / TCP() / (b"b" * 600),
                 fragsize=256)
    d = Decoder()
    out = [d.decode(frame(p, 101)) for p in (a[0], b[0], a[1], b[1], a[2], b[2])]
    segs = [s for s in out if s is not None]
    assert [s.payload for s in segs] == [b"a" * 600, b"b" * 600]


def test_fragments_expire_after_timeout_and_finish() -> None:
    frags = fragment(ip4(b"x" * 600, id=1), fragsize=256)
    d = Decoder()
    assert d.decode(frame(frags[0], 101, time=0.0)) is None
    other = fragment(ip4(b"y" * 600, id=2), fragsize=256)
    assert d.decode(frame(other[0], 101, time=61.0)) is None  # first one is now stale
    assert d.stats.fragments_incomplete == 1
    assert d.decode(frame(frags[1], 101, time=61.5)) is None  # its datagram is gone
    d.finish()
    assert d.stats.fragments_incomplete == 3  # id 2, and id 1 started again


def test_fragment_table_is_bounded() -> None:
    d = Decoder(frag_max_pending=2)
    for ident in range(5):
        d.decode(frame(fragment(ip4(b"z" * 600, id=ident), fragsize=256)[0], 101))
    assert d.stats.fragments_incomplete == 3
    assert len(d._pending) == 2


def test_ipv6_fragments_reassembled() -> None:
    body = b"D" * 3000
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=99) / TCP(
        sport=1, dport=25, seq=55, flags="PA") / body
    frags = fragment6(pkt, 1280)
    assert len(frags) == 3
    d = Decoder()
    out = [d.decode(frame(Ether() / f)) for f in reversed(frags)]
    assert out[:2] == [None, None]
    seg = out[2]
    assert seg is not None and seg.payload == body and seg.seq == 55 and seg.ip_version == 6
    assert (d.stats.fragments, d.stats.reassembled) == (3, 1)


# ---- hostile input ----------------------------------------------------------------


def test_malformed_headers_are_counted() -> None:
    d = Decoder()
    bad_ihl = bytearray(bytes(ip4()))
    bad_ihl[0] = 0x44  # IHL 4 words < 20 bytes
    bad_doff = bytearray(bytes(ip4()))
    bad_doff[20 + 12] = 0x40  # TCP data offset 4 words
    for data, lt in [(b"\x00" * 10, 1), (bytes(bad_ihl), 101), (bytes(bad_doff), 101),
                     (bytes(ip4())[:30], 101), (b"", 0), (b"\x02\0\0\0", 0)]:
        assert d.decode(frame(data, lt)) is None
    assert d.stats.malformed == 6 and d.stats.tcp == 0


LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]


def _invariant(s: DecodeStats) -> bool:
    return s.frames == (s.tcp + s.non_tcp + s.malformed + sum(s.unknown_linktypes.values())
                        + s.fragments - s.reassembled)


@settings(max_examples=400, deadline=None)
@given(frames=st.lists(st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=120)),
                       max_size=20))
def test_random_bytes_never_raise(frames: list[tuple[int, bytes]]) -> None:
    d = Decoder()
    for n, (lt, data) in enumerate(frames):
        seg = d.decode(frame(data, lt, number=n + 1))
        assert seg is None or isinstance(seg, Segment | TooBig)
    assert d.stats.frames == len(frames)
    assert _invariant(d.stats)


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 120), flips=st.lists(st.tuples(st.integers(0, 119),
                                                         st.integers(0, 255)), max_size=6),
       lt=st.sampled_from([1, 101, 276, 228]))
def test_mutated_real_packets_never_raise(cut: int, flips: list[tuple[int, int]],
                                          lt: int) -> None:
    """Random bytes rarely get past the first check; mutate real packets to go deeper
    (228, raw IPv4, carries an ICMP fragmentation-needed quoting a TCP segment)."""
    base = {1: bytes(Ether() / ip4()), 101: bytes(ip6()), 276: sll2(ip4()),
            228: bytes(IP() / ICMP(type=3, code=4, nexthopmtu=1280) / bytes(ip4())[:28])}[lt]
    raw = bytearray(base[:cut])
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    d = Decoder()
    d.decode(frame(bytes(raw), lt))
    assert _invariant(d.stats)
