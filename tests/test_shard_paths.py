"""The worker shard of a connection does not depend on how its frames were decoded.

Decoder.decode has an inline fast path (untagged Ethernet, IPv4 without options or
fragments, TCP) beside the general path, each asking the shard rule with the raw
addresses it decoded; a connection whose frames take both paths (tagged and untagged
on a trunk, IP options, fragments, a malformed-looking header the general path
accepts) must land in one worker only.
"""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, fragment
from scapy.layers.l2 import Dot1Q, Ether

from pcapsmtp.capture import Frame
from pcapsmtp.packets import Decoder


def frame(pkt: object, number: int = 1) -> Frame:
    raw = bytes(pkt)
    return Frame(number, 1.0, 1, len(raw), len(raw), raw)


def kept_by(pkts: list[object], count: int) -> list[set[int]]:
    """For each packet, the shards whose decoder returned a Segment for it."""
    out = []
    for pkt in pkts:
        kept = set()
        for index in range(count):
            d = Decoder()
            d.shard = (index, count)
            got = [d.decode(frame(p, n)) for n, p in enumerate(
                pkt if isinstance(pkt, list) else [pkt], 1)]
            if any(s is not None for s in got):
                kept.add(index)
            assert d.stats.tcp >= 1  # counted whichever shard builds it
        out.append(kept)
    return out


def test_fast_and_general_paths_agree_on_the_shard() -> None:
    for sport in range(40000, 40040):
        ip = IP(src="192.0.2.1", dst="198.51.100.2")
        seg = TCP(sport=sport, dport=25, flags="PA") / b"EHLO x\r\n"
        back = IP(src="198.51.100.2", dst="192.0.2.1") / TCP(sport=25, dport=sport,
                                                             flags="PA") / b"250 ok\r\n"
        pkts = [
            Ether() / ip / seg,  # fast path
            Ether() / back,  # fast path, other direction
            Ether() / Dot1Q(vlan=5) / ip / seg,  # general path: VLAN tag
            Ether() / IP(src="192.0.2.1", dst="198.51.100.2",
                         options=b"\x01\x01\x01\x00") / seg,  # general path: IP options
            [Ether() / f for f in fragment(ip / TCP(sport=sport, dport=25, flags="PA")
                                           / (b"x" * 600), fragsize=256)],  # fragments
        ]
        for count in (2, 3):
            shards = kept_by(pkts, count)
            assert all(len(s) == 1 for s in shards), (sport, count, shards)
            assert len(set.union(*shards)) == 1, (sport, count, shards)


def test_without_shard_every_segment_is_built() -> None:
    d = Decoder()
    pkt = Ether() / IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=1, dport=25)
    assert d.decode(frame(pkt)) is not None
