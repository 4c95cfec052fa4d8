"""Link, IP and TCP headers decoded by hand into Segment objects.

INTERFACE (implemented by the capture-sources work):

    decoder = Decoder()
    seg = decoder.decode(frame)   # Segment, or None when not TCP (or a fragment still waiting)
    decoder.stats                 # DecodeStats: counters for what was skipped and why

Hand-written with struct on purpose: scapy's full dissection runs at ~4k
packets/s, far too slow for the hot path (see ../DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


@dataclass(slots=True)
class Segment:
    frame: int
    time: float
    src: str  # "192.0.2.1" or "2001:db8::1" (compressed form)
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int  # TCP flag bits, see constants above
    window: int  # raw window field (not scaled)
    payload: bytes  # captured TCP payload
    missing: int = 0  # payload bytes the IP length promises but the snaplen cut off
    ip_version: int = 4


@dataclass
class DecodeStats:
    frames: int = 0
    tcp: int = 0
    non_tcp: int = 0
    unknown_linktypes: dict[int, int] = field(default_factory=dict)  # linktype -> frames
    fragments: int = 0  # IPv4 fragments seen
    reassembled: int = 0  # datagrams rebuilt from fragments
    fragments_incomplete: int = 0  # datagrams whose fragments never all arrived
    malformed: int = 0  # headers too short or inconsistent
