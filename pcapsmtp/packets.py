"""Link, IP and TCP headers decoded by hand into Segment objects.

INTERFACE:

    decoder = Decoder()
    seg = decoder.decode(frame)   # Segment; TooBig (an ICMP too-big quoting TCP); or None
                                  # when neither (or a fragment still waiting)
    decoder.finish()              # end of capture: fragments still waiting count as incomplete
    decoder.stats                 # DecodeStats: counters for what was skipped and why

Hand-written with struct on purpose: scapy's full dissection runs at ~4k
packets/s, far too slow for the hot path (measured; the design notes say so).

Checksums are deliberately NOT verified: a host with checksum offload captures its
own outgoing packets before the NIC fills the checksum in, and those packets are
exactly the ones a diagnosis needs.

Every frame lands in exactly one bucket, so that

    frames == tcp + non_tcp + malformed + sum(unknown_linktypes.values())
              + fragments - reassembled

(a fragment that completes a datagram is counted once as a fragment and once in the
bucket of the rebuilt datagram; ``reassembled`` removes the double count).

ICMP "fragmentation needed" (IPv4 type 3 code 4) and ICMPv6 "Packet Too Big" (type 2)
that quote a TCP segment (an IP header and at least its first 8 bytes: ports and
sequence number) come out as :class:`TooBig`, the evidence of a path MTU problem.  They
stay in the ``non_tcp`` bucket, where every ICMP message was counted before they were
decoded (so the invariant and earlier reports' counts hold); ``too_big`` counts those of
them that were handed on, a part of ``non_tcp`` and not a bucket of its own.  One whose
quote is cut short (a small snaplen) or quotes no TCP is just ``non_tcp``.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

try:
    from pcapsmtp import _fastpcap
except ImportError:  # built at install time only where a C compiler was found
    _fastpcap = None

# (the _fastpcap module, its context tuple): see Decoder.fast_path and
# capture.CaptureReader.batches
FastPath = tuple[Any, tuple]

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
    # IPv4 identification; -1 for IPv6 or not known.  A packet captured twice keeps it,
    # a stack's own repeated ACK does not: how reassembly tells the two apart.
    ip_id: int = -1


@dataclass(slots=True)
class TooBig:
    """A router's ICMP "fragmentation needed" / ICMPv6 "Packet Too Big" about a TCP segment.

    ``src``, ``sport``, ``dst``, ``dport`` and ``seq`` are those of the QUOTED segment:
    ``src`` is the host that sent the too-big segment (and to which the ICMP is
    addressed), so the 4-tuple names the connection as its own segments do.  ``mtu`` is
    the next-hop MTU the router reported (0: an old router that gives none).
    """

    frame: int
    time: float
    router: str  # the ICMP message's source address
    mtu: int
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ip_version: int = 4


@dataclass
class DecodeStats:
    frames: int = 0
    tcp: int = 0
    non_tcp: int = 0
    unknown_linktypes: dict[int, int] = field(default_factory=dict)  # linktype -> frames
    fragments: int = 0  # IP fragments seen (IPv4 and IPv6)
    reassembled: int = 0  # datagrams rebuilt from fragments
    fragments_incomplete: int = 0  # datagrams whose fragments never all arrived
    malformed: int = 0  # headers too short or inconsistent
    too_big: int = 0  # of non_tcp: ICMP too-big messages quoting TCP, handed on as TooBig


class _FrameLike(Protocol):
    number: int
    time: float
    linktype: int
    data: bytes


_ETH_VLAN = frozenset((0x8100, 0x88A8, 0x9100))
_ETH_IPV4, _ETH_IPV6, _ETH_PPPOE = 0x0800, 0x86DD, 0x8864
_PPP_IPV4, _PPP_IPV6 = 0x0021, 0x0057
_AF_INET = 2
_AF_INET6 = frozenset((24, 28, 30))
_IPV6_EXT = frozenset((0, 43, 60, 51, 44))
_TCP = 6
_ICMP, _ICMPV6 = 1, 58

_U16 = struct.Struct("!H").unpack_from
_U32_BE = struct.Struct(">I").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_IPV4 = struct.Struct("!BxHHHxB").unpack_from  # ver/ihl, total, id, flags/frag, proto
_TCPH = struct.Struct("!HHIIHH").unpack_from  # ports, seq, ack, offset/flags, window
_TCP8 = struct.Struct("!HHI").unpack_from  # the first 8 bytes of TCP: ports, seq
# From the IPv4 total length of an Ethernet frame (IHL 5) to the TCP window: total, flags/frag,
# proto, src, dst, ports, seq, ack, offset/flags, window
_ETH_IP4_TCP = struct.Struct("!16xHHHxB2x4s4sHHIIHH").unpack_from

FRAG_TIMEOUT = 60.0  # seconds of capture time a datagram may wait for its fragments
FRAG_MAX_PENDING = 4096  # datagrams waiting at once; the oldest is dropped beyond this
_FRAG_MAX_PIECES = 256  # per datagram; more is an attack or garbage, not mail traffic


class _Pending:
    """Fragments of one datagram: pieces keyed by offset, with captured and promised sizes."""

    __slots__ = ("first_time", "pieces", "total", "proto")

    def __init__(self, time: float) -> None:
        self.first_time = time
        self.pieces: dict[int, tuple[bytes, int]] = {}  # offset -> (captured, promised len)
        self.total: int | None = None  # known once the last fragment (MF=0) arrives
        self.proto: int | None = None  # known once the first fragment (offset 0) arrives

    def complete(self) -> bool:
        """All promised bytes from 0 to total covered (captured or cut by snaplen)."""
        if self.total is None or self.proto is None:
            return False
        covered = 0
        for off in sorted(self.pieces):
            if off > covered:
                return False
            covered = max(covered, off + self.pieces[off][1])
        return covered >= self.total

    def assemble(self) -> bytes:
        """The captured bytes in order, up to the first byte the snaplen cut off."""
        out = bytearray()
        for off in sorted(self.pieces):
            data, promised = self.pieces[off]
            if off < len(out):  # overlap: keep what we have, take only the new tail
                data = data[len(out) - off:]
                off = len(out)
            if off > len(out):  # a hole left by an earlier snaplen-cut piece
                break
            out += data
            if len(data) < promised and off + promised > len(out):
                break
        return bytes(out[: self.total])


def _addr4(raw: bytes, cache: dict[bytes, str]) -> str:
    s = cache.get(raw)
    if s is None:
        if len(cache) > 65536:
            cache.clear()
        s = cache[raw] = socket.inet_ntoa(raw)
    return s


def _addr6(raw: bytes, cache: dict[bytes, str]) -> str:
    s = cache.get(raw)
    if s is None:
        if len(cache) > 65536:
            cache.clear()
        s = cache[raw] = socket.inet_ntop(socket.AF_INET6, raw)
    return s


_MINE_CACHE = 1 << 14
"""4-tuples (one per direction) whose shard Decoder._mine remembers: about 3 MB when full."""


class Decoder:
    """Turns frames into TCP segments; keeps fragment state, so one per capture."""

    def __init__(self, frag_timeout: float = FRAG_TIMEOUT,
                 frag_max_pending: int = FRAG_MAX_PENDING) -> None:
        self.stats = DecodeStats()
        self._frag_timeout = frag_timeout
        self._frag_max = frag_max_pending
        self._pending: dict[tuple, _Pending] = {}  # insertion order = age order
        self._names: dict[bytes, str] = {}
        self._names4: dict[int, str] = {}  # the C reader's cache: IPv4 address as int -> text
        # (index, count): return only the segments of connections that hash to ``index``
        # (a worker process of analyze); the statistics still count every frame.
        self.shard: tuple[int, int] | None = None
        self._mine_of: dict[tuple[bytes, bytes, int, int], bool] = {}  # see _mine

    # ---- entry point -------------------------------------------------------------

    def decode(self, frame: _FrameLike) -> Segment | TooBig | None:
        """One frame in; a Segment if it carried TCP, a TooBig if it was an ICMP too-big
        about a TCP segment, else None with the reason counted.

        Untagged Ethernet + IPv4 without options or fragmentation + TCP (nearly every
        frame of a mail server's capture) is decoded here in one struct call and no
        further Python call but the Segment's; anything else, or anything odd about such
        a frame, goes through the general path from scratch (nothing is counted before
        that decision).  Measured on the 100k-frame benchmark's frames (read beforehand),
        CPU, best of 7: decode of every frame 0.22 -> 0.18 s; a worker's decode, half the
        connections in the other shard, 0.23 -> 0.17 s.
        """
        stats = self.stats
        stats.frames += 1
        data = frame.data
        if frame.linktype == 1 and len(data) >= 54 and data[12:15] == b"\x08\x00\x45":
            (total, ident, frag, proto, src, dst, sport, dport, seq, ack, offflags,
             window) = _ETH_IP4_TCP(data)
            if proto == _TCP and not frag & 0x3FFF:
                avail = len(data) - 14
                if total == 0:  # TSO: the NIC fills the length in later; trust the capture
                    total = avail
                doff = (offflags >> 12) * 4
                promised = total - 20
                # doff >= 20 also rules out total < 40 (a header longer than the datagram)
                if 20 <= doff <= promised:
                    stats.tcp += 1
                    if self.shard is not None and not self._mine(src, dst, sport, dport):
                        return None  # another worker's connection: counted, not built
                    end = 14 + (total if total < avail else avail)  # strips Ethernet padding
                    start = 34 + doff
                    payload = data[start:end] if start < end else b""
                    names = self._names
                    return Segment(frame.number, frame.time,
                                   names.get(src) or _addr4(src, names), sport,
                                   names.get(dst) or _addr4(dst, names), dport,
                                   seq, ack, offflags & 0xFF, window, payload,
                                   promised - doff - len(payload), 4, ident)
        try:
            return self._decode(frame)
        except (struct.error, IndexError, ValueError, OSError):
            # Defence in depth: the explicit length checks should make this unreachable.
            stats.malformed += 1
            return None

    def finish(self) -> None:
        """End of capture: datagrams still waiting for fragments never completed."""
        self.stats.fragments_incomplete += len(self._pending)
        self._pending.clear()

    def _decode(self, frame: _FrameLike) -> Segment | TooBig | None:
        data = frame.data
        lt = frame.linktype
        if lt == 1:
            if data[12:14] == b"\x08\x00":  # fast path: untagged Ethernet IPv4
                return self._ipv4(frame, data, 14)
            version, off = _ethernet(data)
        elif lt == 276:
            version, off = _ethertype(data, 20, _U16(data, 0)[0]) if len(data) >= 20 else (-1, 0)
        elif lt == 113:
            version, off = _ethertype(data, 16, _U16(data, 14)[0]) if len(data) >= 16 else (-1, 0)
        elif lt in (101, 12, 14):
            version, off = (data[0] >> 4 if data and data[0] >> 4 in (4, 6) else -1), 0
        elif lt == 228:
            version, off = 4, 0
        elif lt == 229:
            version, off = 6, 0
        elif lt == 0 or lt == 108:
            version, off = _null_family(data)
        else:
            unknown = self.stats.unknown_linktypes
            unknown[lt] = unknown.get(lt, 0) + 1
            return None
        if version == 4:
            return self._ipv4(frame, data, off)
        if version == 6:
            return self._ipv6(frame, data, off)
        if version == -1:
            self.stats.malformed += 1
        else:
            self.stats.non_tcp += 1
        return None

    # ---- IP ------------------------------------------------------------------------

    def _ipv4(self, frame: _FrameLike, data: bytes, off: int) -> Segment | TooBig | None:
        stats = self.stats
        avail = len(data) - off
        if avail < 20:
            stats.malformed += 1
            return None
        vihl, total, ident, frag, proto = _IPV4(data, off)
        ihl = (vihl & 15) * 4
        if vihl >> 4 != 4 or ihl < 20 or ihl > avail:
            stats.malformed += 1
            return None
        if total == 0:  # TSO: the NIC fills the length in later; trust the capture
            total = avail
        elif total < ihl:
            stats.malformed += 1
            return None
        end = off + (total if total < avail else avail)  # strips Ethernet padding
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        if frag & 0x3FFF:  # MF set or offset non-zero
            key = (src, dst, ident, proto)
            got = self._fragment(frame, key, (frag & 0x1FFF) * 8, not frag & 0x2000,
                                 data[off + ihl:end], total - ihl, proto)
            if got is None:
                return None
            payload, promised, proto = got
            return self._l4(frame, proto, payload, 0, len(payload), promised, src, dst, 4,
                            ident)
        if proto != _TCP:
            return self._not_tcp(frame, proto, data, off + ihl, end, src, 4)
        return self._tcp(frame, data, off + ihl, end, total - ihl, src, dst, 4, ident)

    def _ipv6(self, frame: _FrameLike, data: bytes, off: int) -> Segment | TooBig | None:
        stats = self.stats
        avail = len(data) - off
        if avail < 40 or data[off] >> 4 != 6:
            stats.malformed += 1
            return None
        plen = _U16(data, off + 4)[0] or avail - 40  # 0: jumbogram or TSO
        nxt = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        h = off + 40
        end = off + 40 + min(plen, avail - 40)
        remaining = plen  # promised bytes from h on
        while nxt in _IPV6_EXT:
            if h + 8 > end:
                stats.malformed += 1
                return None
            if nxt == 44:
                fo = _U16(data, h + 2)[0]
                key = (src, dst, _U32_BE(data, h + 4)[0], 6)
                got = self._fragment(frame, key, fo & 0xFFF8, not fo & 1,
                                     data[h + 8:end], remaining - 8,
                                     None if fo & 0xFFF8 else data[h])
                if got is None:
                    return None
                payload, promised, nxt = got
                return self._ipv6_tail(frame, payload, 0, len(payload), promised, nxt,
                                       src, dst)
            hlen = _ext_len(data, h, nxt)
            nxt = data[h]
            h += hlen
            remaining -= hlen
            if h > end or remaining < 0:
                stats.malformed += 1
                return None
        return self._ipv6_tail(frame, data, h, end, remaining, nxt, src, dst)

    def _ipv6_tail(self, frame: _FrameLike, data: bytes, h: int, end: int, promised: int,
                   nxt: int, src: bytes, dst: bytes) -> Segment | TooBig | None:
        """After the fixed header (or reassembly): skip what extensions remain, then TCP."""
        while nxt in _IPV6_EXT and nxt != 44:
            if h + 8 > end:
                self.stats.malformed += 1
                return None
            hlen = _ext_len(data, h, nxt)
            nxt = data[h]
            h += hlen
            promised -= hlen
            if h > end or promised < 0:
                self.stats.malformed += 1
                return None
        return self._l4(frame, nxt, data, h, end, promised, src, dst, 6)

    def _l4(self, frame: _FrameLike, proto: int, data: bytes, start: int, end: int,
            promised: int, src: bytes, dst: bytes, version: int,
            ip_id: int = -1) -> Segment | TooBig | None:
        if proto != _TCP:
            return self._not_tcp(frame, proto, data, start, end, src, version)
        return self._tcp(frame, data, start, end, promised, src, dst, version, ip_id)

    def _not_tcp(self, frame: _FrameLike, proto: int, data: bytes, i: int, end: int,
                 router: bytes, version: int) -> TooBig | None:
        """Counted as non_tcp; an ICMP too-big quoting TCP is also handed on, as a TooBig,
        to the shard that owns the quoted connection (the rules want it on that
        connection's timeline, and only that worker builds it)."""
        self.stats.non_tcp += 1
        if end - i < 8:
            return None
        if version == 4:
            if proto != _ICMP or data[i] != 3 or data[i + 1] != 4:
                return None
            mtu = _U16(data, i + 6)[0]
            quoted = _quoted_tcp4(data, i + 8, end)
        else:
            if proto != _ICMPV6 or data[i] != 2:
                return None
            mtu = _U32_BE(data, i + 4)[0]
            quoted = _quoted_tcp6(data, i + 8, end)
        if quoted is None:
            return None
        src, dst, sport, dport, seq = quoted
        self.stats.too_big += 1
        if self.shard is not None and not self._mine(src, dst, sport, dport):
            return None  # another worker's connection: counted, not handed on
        names = self._names
        addr = _addr4 if version == 4 else _addr6
        return TooBig(frame.number, frame.time, addr(router, names), mtu, addr(src, names),
                      sport, addr(dst, names), dport, seq, version)

    # ---- fragments ---------------------------------------------------------------

    def _fragment(self, frame: _FrameLike, key: tuple, offset: int, last: bool,
                  piece: bytes, promised: int,
                  proto: int | None) -> tuple[bytes, int, int] | None:
        """Store one fragment; when its datagram is whole, return (payload, total, proto)."""
        pending = self._pending
        stats = self.stats
        self._expire(frame.time)
        entry = pending.get(key)
        if promised < 0 or (entry is not None and len(entry.pieces) >= _FRAG_MAX_PIECES):
            stats.malformed += 1
            return None
        stats.fragments += 1
        if entry is None:
            if len(pending) >= self._frag_max:
                del pending[next(iter(pending))]
                stats.fragments_incomplete += 1
            entry = pending[key] = _Pending(frame.time)
        entry.pieces[offset] = (piece, promised)
        if last:
            entry.total = offset + promised
        if offset == 0 and proto is not None:
            entry.proto = proto
        if not entry.complete():
            return None
        del pending[key]
        stats.reassembled += 1
        assert entry.total is not None and entry.proto is not None
        return entry.assemble(), entry.total, entry.proto

    def _expire(self, now: float) -> None:
        """Drop datagrams older than the timeout; the dict is ordered by age."""
        pending = self._pending
        limit = now - self._frag_timeout
        while pending:
            key = next(iter(pending))
            if pending[key].first_time >= limit:
                break
            del pending[key]
            self.stats.fragments_incomplete += 1

    # ---- TCP -----------------------------------------------------------------------

    def _tcp(self, frame: _FrameLike, data: bytes, t: int, end: int, promised: int,
             src: bytes, dst: bytes, version: int, ip_id: int = -1) -> Segment | None:
        """TCP header at data[t:], captured up to ``end``, ``promised`` bytes per IP;
        ``src`` and ``dst`` are the raw addresses (4 or 16 bytes)."""
        if end - t < 20 or promised < 20:
            self.stats.malformed += 1
            return None
        sport, dport, seq, ack, offflags, window = _TCPH(data, t)
        doff = (offflags >> 12) * 4
        if doff < 20 or doff > promised:
            self.stats.malformed += 1
            return None
        self.stats.tcp += 1
        if self.shard is not None and not self._mine(src, dst, sport, dport):
            return None  # another worker's connection: counted, not built
        payload = data[t + doff:end] if t + doff < end else b""
        names = self._names
        addr = _addr4 if version == 4 else _addr6
        return Segment(frame.number, frame.time, addr(src, names), sport, addr(dst, names),
                       dport, seq, ack, offflags & 0xFF, window, payload,
                       promised - doff - len(payload), version, ip_id)

    def _mine(self, src: bytes, dst: bytes, sport: int, dport: int) -> bool:
        """Whether the connection belongs to this decoder's shard.  Both directions give
        the same answer.  Computed on the raw addresses, before the (cached) text forms
        are looked up."""
        key = (src, dst, sport, dport)
        mine = self._mine_of.get(key)
        if mine is None:
            # Cached per direction's 4-tuple: shard_hash costs 1.9 us in Python, the
            # lookup 0.15 (each worker asks it of every frame of the file without the C
            # reader).  Bounded: emptied when full.
            assert self.shard is not None
            index, count = self.shard
            mine = shard_hash(src, dst, sport, dport) % count == index
            if len(self._mine_of) >= _MINE_CACHE:
                self._mine_of.clear()
            self._mine_of[key] = mine
        return mine

    def fast_path(self, boundary: int) -> FastPath | None:
        """The C reader (``_fastpcap``: pcap_batch, pcapng_batch) and what it needs to do this
        decoder's fast path itself: the shard, the frame numbers to stop after (a
        multiple of ``boundary``), the type to build and its own address-text cache.
        None without the C module, or with $PCAPSMTP_PURE_PYTHON set: the caller then
        reads frames and calls :meth:`decode` on each."""
        if _fastpcap is None or os.environ.get("PCAPSMTP_PURE_PYTHON"):
            return None
        index, count = self.shard or (0, 1)
        return _fastpcap, (index, count, boundary, Segment, self._names4)

    def count_fast(self, decoded: int) -> None:
        """Frames the C reader decoded as TCP (built or another shard's), in the stats."""
        self.stats.frames += decoded
        self.stats.tcp += decoded


def shard_hash(src: bytes, dst: bytes, sport: int, dport: int) -> int:
    """The same number for both directions of a connection, in every process (not
    Python's ``hash``, whose seed varies, so that the C reader can compute it too): each
    endpoint (address folded to 32 bits, port) mixed on its own, the two summed, mixed
    again.  The earlier address ^ port ^ address ^ port cancelled out when addresses and
    ports rise together: the 300k benchmark's 7,204 connections went 3,464 / 3,740 to two
    workers and 2,090 / 1,913 / 3,201 to three; now 3,652 / 3,552 and 2,434 / 2,382 / 2,388."""
    return _mix32((_endpoint(src, sport) + _endpoint(dst, dport)) & 0xFFFFFFFF)


def _endpoint(raw: bytes, port: int) -> int:
    return _mix32(_fold32(raw) ^ (port * 0x9E3779B1 & 0xFFFFFFFF))


def _mix32(h: int) -> int:
    """MurmurHash3's 32-bit finaliser: every input bit moves every output bit."""
    h ^= h >> 16
    h = h * 0x85EBCA6B & 0xFFFFFFFF
    h ^= h >> 13
    h = h * 0xC2B2AE35 & 0xFFFFFFFF
    return h ^ (h >> 16)


def _fold32(raw: bytes) -> int:
    v = int.from_bytes(raw, "big")
    return v if len(raw) == 4 else (v ^ (v >> 32) ^ (v >> 64) ^ (v >> 96)) & 0xFFFFFFFF


def _ext_len(data: bytes, h: int, nxt: int) -> int:
    """Length of the IPv6 extension header at ``h`` (of type ``nxt``): AH (51) counts in
    4-byte units less 2, the others in 8-byte units less 1 (RFC 4302, RFC 8200)."""
    return (data[h + 1] + 2) * 4 if nxt == 51 else (data[h + 1] + 1) * 8


# ---- what an ICMP message quotes (module functions: no state) ------------------------

_Quoted = tuple[bytes, bytes, int, int, int]  # raw src, raw dst, sport, dport, seq


def _quoted_tcp4(data: bytes, q: int, end: int) -> _Quoted | None:
    """The IPv4 datagram quoted at data[q:end]: its addresses, ports and sequence number,
    when it is TCP and the first 8 bytes of its TCP header are there (RFC 792 quotes
    them; a small snaplen may not have kept them)."""
    if end - q < 20 or data[q] >> 4 != 4 or data[q + 9] != _TCP:
        return None
    t = q + (data[q] & 15) * 4
    if t < q + 20 or end - t < 8 or _U16(data, q + 6)[0] & 0x1FFF:
        return None  # bad header length, quote cut short, or a later fragment (no ports)
    sport, dport, seq = _TCP8(data, t)
    return data[q + 12:q + 16], data[q + 16:q + 20], sport, dport, seq


def _quoted_tcp6(data: bytes, q: int, end: int) -> _Quoted | None:
    """The same for an IPv6 packet quoted by ICMPv6, past its extension headers."""
    if end - q < 40 or data[q] >> 4 != 6:
        return None
    nxt = data[q + 6]
    h = q + 40
    while nxt in _IPV6_EXT:
        if h + 8 > end:
            return None
        if nxt == 44:
            if _U16(data, h + 2)[0] & 0xFFF8:
                return None  # a later fragment: no TCP header in it
            hlen = 8
        else:
            hlen = _ext_len(data, h, nxt)
        nxt = data[h]
        h += hlen
    if nxt != _TCP or end - h < 8:
        return None
    sport, dport, seq = _TCP8(data, h)
    return data[q + 8:q + 24], data[q + 24:q + 40], sport, dport, seq


# ---- link layers (module functions: no state) ----------------------------------------


def _ethernet(data: bytes) -> tuple[int, int]:
    """(IP version or 0 for other protocols or -1 for malformed, offset of the IP header)."""
    if len(data) < 14:
        return -1, 0
    return _ethertype(data, 14, _U16(data, 12)[0])


def _ethertype(data: bytes, off: int, etype: int) -> tuple[int, int]:
    """Follow VLAN tags (any number, any of the three TPIDs) and PPPoE to the IP header."""
    while etype in _ETH_VLAN:
        if len(data) < off + 4:
            return -1, 0
        etype = _U16(data, off + 2)[0]
        off += 4
    if etype == _ETH_IPV4:
        return 4, off
    if etype == _ETH_IPV6:
        return 6, off
    if etype == _ETH_PPPOE:
        if len(data) < off + 8:
            return -1, 0
        ppp = _U16(data, off + 6)[0]
        return (4 if ppp == _PPP_IPV4 else 6 if ppp == _PPP_IPV6 else 0), off + 8
    return 0, off


def _null_family(data: bytes) -> tuple[int, int]:
    """BSD NULL / OpenBSD LOOP: a 4-byte address family, in host or network order."""
    if len(data) < 4:
        return -1, 0
    for fam in (_U32_LE(data, 0)[0], _U32_BE(data, 0)[0]):
        if fam == _AF_INET:
            return 4, 4
        if fam in _AF_INET6:
            return 6, 4
    return 0, 4
