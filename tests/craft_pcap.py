"""Write capture files byte by byte, for the formats and corners scapy cannot write.

Each function returns bytes; tests write them to tmp_path.  Kept independent of
pcapsmtp so that the reader is checked against the file format, not against itself.
"""

from __future__ import annotations

import struct

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D


def pcap_header(endian: str = "<", magic: int = MAGIC_US, snaplen: int = 65535,
                linktype: int = 1) -> bytes:
    """The 24-byte classic pcap global header."""
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(sec: int, frac: int, data: bytes, endian: str = "<",
                origlen: int | None = None) -> bytes:
    """One classic pcap record: 16-byte header then the captured bytes."""
    orig = len(data) if origlen is None else origlen
    return struct.pack(endian + "IIII", sec, frac, len(data), orig) + data


def pcap_file(records: list[tuple[int, int, bytes]], endian: str = "<", magic: int = MAGIC_US,
              snaplen: int = 65535, linktype: int = 1) -> bytes:
    """A whole classic pcap file from (seconds, fraction, data) records."""
    out = [pcap_header(endian, magic, snaplen, linktype)]
    out += [pcap_record(s, f, d, endian) for s, f, d in records]
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def ng_block(btype: int, body: bytes, endian: str = "<") -> bytes:
    """A generic pcapng block: type, total length, padded body, total length again."""
    body = _pad4(body)
    length = len(body) + 12
    return struct.pack(endian + "II", btype, length) + body + struct.pack(endian + "I", length)


def ng_option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + _pad4(value)


def ng_shb(endian: str = "<") -> bytes:
    """Section header block, version 1.0, unknown section length, no options."""
    return ng_block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def ng_idb(linktype: int, snaplen: int = 0, tsresol: int | None = None,
           tsoffset: int | None = None, endian: str = "<") -> bytes:
    """Interface description block with optional if_tsresol (9) and if_tsoffset (14)."""
    body = struct.pack(endian + "HHI", linktype, 0, snaplen)
    opts = b""
    if tsresol is not None:
        opts += ng_option(9, bytes([tsresol]), endian)
    if tsoffset is not None:
        opts += ng_option(14, struct.pack(endian + "q", tsoffset), endian)
    if opts:
        opts += ng_option(0, b"", endian)
    return ng_block(1, body + opts, endian)


def ng_epb(iface: int, ticks: int, data: bytes, origlen: int | None = None,
           endian: str = "<") -> bytes:
    """Enhanced packet block; ``ticks`` in the interface's timestamp resolution."""
    orig = len(data) if origlen is None else origlen
    head = struct.pack(endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), orig)
    return ng_block(6, head + data, endian)


def ng_spb(data: bytes, origlen: int | None = None, endian: str = "<") -> bytes:
    """Simple packet block: original length then data, always interface 0, no time."""
    orig = len(data) if origlen is None else origlen
    return ng_block(3, struct.pack(endian + "I", orig) + data, endian)


def ng_pb(iface: int, ticks: int, data: bytes, endian: str = "<") -> bytes:
    """Obsolete packet block (pcapng 'Packet Block', type 2)."""
    head = struct.pack(endian + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                       len(data), len(data))
    return ng_block(2, head + data, endian)


def ng_from_pcap(data: bytes, endian: str = "<", nano: bool = False) -> bytes:
    """A classic pcap file (microsecond, either byte order) rewritten as pcapng: one
    section, one interface, an enhanced packet block per record; ``nano`` gives the
    interface if_tsresol 9 and nanosecond timestamps (ticks above 2**53)."""
    order = "<" if struct.unpack_from("<I", data)[0] == MAGIC_US else ">"
    snaplen, linktype = struct.unpack_from(order + "II", data, 16)
    out = [ng_shb(endian), ng_idb(linktype & 0xFFFF, snaplen, 9 if nano else None,
                                  endian=endian)]
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, caplen, origlen = struct.unpack_from(order + "IIII", data, pos)
        ticks = sec * 10**9 + usec * 1000 if nano else sec * 10**6 + usec
        out.append(ng_epb(0, ticks, data[pos + 16:pos + 16 + caplen], origlen, endian))
        pos += 16 + caplen
    return b"".join(out)
