"""Capture sources: pcap, pcapng, gzip, stdin.  Raw frames out, nothing decoded.

INTERFACE:

    reader = open_capture("x.pcap")      # or "-" for stdin, or a gzip-compressed file
    for frame in reader: ...             # Frame objects, in file order
    reader.info                          # CaptureInfo, filled as frames are read
    reader.close()                       # or: with open_capture(...) as reader: ...

Errors that stop reading before any frame (missing file, not a capture) raise
CaptureError with a one-line message.  A file cut or corrupted in the middle
does NOT raise: iteration stops and ``info.problem`` says what was cut, where.

Why hand-written rather than scapy's RawPcapReader/RawPcapNgReader:

- streaming: ``tcpdump -U -w - | pcapsmtp analyze -`` must yield each frame as soon
  as its bytes arrive.  We keep our own buffer and refill it with ``read1`` (what the
  pipe has now), never read to EOF and never seek; gzip is inflated incrementally with
  zlib, detected by its magic bytes.
- precise damage reports: a cut or absurd record stops iteration with a note naming
  the frame ("capture cut short in frame 19: record header says 3,925,868,544 bytes")
  instead of an exception that loses the frames already read.
- speed, measured here with ``python tests/craft_bench.py`` (Python 3.11, 300,000
  records of 69 bytes, file in the page cache, CPU time, best of 5, two runs on a shared
  2-CPU machine under load; each frame's data touched):
      pcap:   open_capture 0.31-0.36 s (840k-970k frames/s),
              scapy RawPcapReader 0.70-0.73 s (410k-425k frames/s)
      pcapng: open_capture 0.53-0.74 s (405k-560k frames/s),
              scapy RawPcapNgReader 1.40-1.67 s (180k-215k frames/s)
      pcap + packets.Decoder to Segment objects: 1.10-1.14 s (265k-275k frames/s)
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from pcapsmtp.packets import FastPath


class CaptureError(Exception):
    """The input cannot be read as a capture; the message is one line for the user."""


@dataclass(slots=True)
class Frame:
    number: int  # 1-based, as Wireshark counts
    time: float  # seconds since the epoch
    linktype: int  # LINKTYPE_* value (1 Ethernet, 113 SLL, 276 SLL2, 101 raw, 0 NULL, ...)
    caplen: int
    origlen: int
    data: bytes


@dataclass
class CaptureInfo:
    file: str  # path as given, "-" for stdin
    format: str = "pcap"  # "pcap" or "pcapng"
    compressed: bool = False
    linktypes: list[int] = field(default_factory=list)  # in order of first appearance
    snaplen: int | None = None  # smallest snaplen declared (pcap header / pcapng IDBs)
    packets: int = 0
    first: float | None = None  # earliest frame time seen
    last: float | None = None  # latest frame time seen
    problem: str | None = None  # e.g. "capture cut short in frame 1234: record cut after ..."
    # TLS key-log lines the capture carries itself (pcapng Decryption Secrets Blocks,
    # as `editcap --inject-secrets tls,KEYS` writes them): counted, never kept or shown.
    tls_keys: int = 0


# One batch of the C reader: (items, number of the last frame, its time, frames it decoded)
Batch = tuple[list[Any], int, float, int]
# why _fastpcap.pcap_batch / pcapng_batch returned (_STOP_HAND: the block at pos is Python's)
_STOP_BOUNDARY, _STOP_NEED, _STOP_OVERSIZE, _STOP_HAND = 0, 1, 2, 3

_CHUNK = 1 << 18  # bytes asked of the input per read; a pipe may return fewer
_MAX_RECORD = 256 << 20  # no sane packet record is bigger; beyond this the file is corrupt
_GZIP_MAGIC = b"\x1f\x8b"
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_SHB_BYTES = b"\x0a\x0d\x0d\x0a"  # the same in either byte order
_PCAPNG_BOM = 0x1A2B3C4D

# pcap magic (as read big-endian) -> (byte order, nanosecond, extra record bytes)
_PCAP_MAGICS: dict[bytes, tuple[str, bool, int]] = {
    b"\xa1\xb2\xc3\xd4": (">", False, 0),
    b"\xd4\xc3\xb2\xa1": ("<", False, 0),
    b"\xa1\xb2\x3c\x4d": (">", True, 0),
    b"\x4d\x3c\xb2\xa1": ("<", True, 0),
    # Alexey Kuznetzov's patched libpcap: 8 more bytes (ifindex, protocol, type) per record
    b"\xa1\xb2\xcd\x34": (">", False, 8),
    b"\x34\xcd\xb2\xa1": ("<", False, 8),
}


def _record_limit(snaplen: int) -> int:
    """Largest believable caplen: writers sometimes exceed their snaplen a little
    (TSO/GRO super-packets), but not by orders of magnitude."""
    return min(_MAX_RECORD, max(snaplen, 262144) * 4)


class _Source:
    """Our own read buffer over a byte stream, optionally gzip-inflated on the fly.

    ``read1`` returns what a pipe has right now, so a frame is delivered as soon as
    its last byte arrives instead of when a fixed-size read can be satisfied."""

    def __init__(self, stream: BinaryIO) -> None:
        self._read: Callable[[int], bytes] = getattr(stream, "read1", None) or stream.read
        self.buf = b""
        self.base = 0  # stream offset (after decompression) of buf[0]
        self.inflater: zlib._Decompress | None = None
        self._pending = b""  # compressed bytes read but not yet given to the inflater
        self.problem: str | None = None  # damage found in the gzip layer

    def start_gzip(self) -> None:
        """Reinterpret everything read so far as the start of a gzip stream."""
        self._pending, self.buf, self.base = self.buf, b"", 0
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _raw(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self._read(_CHUNK)

    def _chunk(self) -> bytes:
        """Next piece of (decompressed) input; b"" at the end or on damage."""
        if self.inflater is None:
            return self._read(_CHUNK)
        if self.problem:
            return b""
        return self._inflate()

    def _feed(self, z: zlib._Decompress, data: bytes) -> bytes:
        """Inflate ``data``; on damage (bad CRC, bad code) keep the output that came
        before it: zlib drops a failing call's output, so replay that call byte by byte."""
        backup = z.copy()
        try:
            return z.decompress(data, _CHUNK)
        except zlib.error as exc:
            self.problem = f"corrupt gzip data ({exc})"
        out = bytearray()
        try:
            for i in range(len(data)):
                out += backup.decompress(data[i:i + 1])
        except zlib.error:
            pass
        return bytes(out)

    def _inflate(self) -> bytes:
        """Inflate until some output appears; handles concatenated gzip members."""
        while True:
            z = self.inflater
            assert z is not None
            if z.unconsumed_tail:
                data = self._feed(z, z.unconsumed_tail)
            elif z.eof:
                rest = z.unused_data or self._raw()
                if not rest:
                    return b""
                if not rest.startswith(_GZIP_MAGIC[: len(rest)]):
                    if rest.strip(b"\0"):
                        self.problem = "garbage after the end of the gzip data"
                    return b""
                self.inflater = z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = self._feed(z, rest)
            else:
                raw = self._raw()
                if not raw:
                    self.problem = "gzip data cut short (no end-of-stream marker)"
                    return b""
                data = self._feed(z, raw)
            if data or self.problem:
                return data

    def ensure(self, pos: int, need: int) -> bytes | None:
        """Make ``need`` bytes available from ``pos``; afterwards they start at 0 of the
        returned buffer.  None at EOF before ``need`` bytes (``self.buf`` has the rest)."""
        parts = [self.buf[pos:]]
        self.base += pos
        have = len(parts[0])
        while have < need:
            chunk = self._chunk()
            if not chunk:
                self.buf = b"".join(parts)
                return None
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)
        return self.buf


def _describe_start(data: bytes) -> str:
    """Show the first bytes of a non-capture so the user recognises what it is."""
    head = data[:16]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return repr(head.decode("ascii").split("\n")[0].strip() or head.decode("ascii"))
    return "0x" + head[:8].hex()


def _open_stream(path: str) -> BinaryIO:
    """Open the path (or stdin for "-"), turning OS errors into one-line CaptureErrors."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115 - closed by CaptureReader
    except FileNotFoundError:
        raise CaptureError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise CaptureError(f"is a directory, not a capture file: {path}") from None
    except PermissionError:
        raise CaptureError(f"permission denied: {path}") from None
    except OSError as exc:
        raise CaptureError(f"cannot open {path}: {exc.strerror or exc}") from None


def _cut_problem(number: int, what: str) -> str:
    return f"capture cut short in frame {number}: {what}"


# The notes of a classic pcap file cut short, after ``read`` frames (the Python and the C
# record loops both give them).
def _cut_record_header(read: int, have: int, hlen: int) -> str:
    return _cut_problem(read + 1, f"record header cut after {have} of {hlen} bytes")


def _cut_record(read: int, have: int, caplen: int) -> str:
    return _cut_problem(read + 1, f"record cut after {have} of {caplen} bytes")


def _oversized_record(read: int, caplen: int) -> str:
    return _cut_problem(read + 1, f"record header says {caplen:,} bytes")


class CaptureReader:
    """Iterator of Frame over one capture; ``info`` grows as frames are read."""

    def __init__(self, path: str, stream: BinaryIO) -> None:
        self.info = CaptureInfo(file=path)
        self._stream = stream
        self._src = _Source(stream)
        self._frames: Iterator[Frame] = iter(())
        self._pcap: tuple[str, bool, int, int, int] | None = None  # a classic pcap's header
        self._ng: _PcapngBlocks | None = None  # a pcapng file's reading state
        self._batched = False
        try:
            self._frames = self._start()
        except BaseException:
            self.close()
            raise

    def _name(self) -> str:
        return "standard input" if self.info.file == "-" else self.info.file

    def _head(self, need: int, what: str) -> bytes:
        """Bytes of the file header; a header cut short is a CaptureError (no frames)."""
        src = self._src
        buf = src.ensure(0, need)
        if buf is None:
            if src.problem:
                raise CaptureError(f"{src.problem}: {self._name()}")
            if not src.buf:
                raise CaptureError(f"empty {'input' if self.info.file == '-' else 'file'}: "
                                   f"{self._name()}")
            raise CaptureError(f"{what} cut short after {len(src.buf)} bytes: {self._name()}")
        return buf

    def _start(self) -> Iterator[Frame]:
        """Read the magic (through gzip if needed) and pick the format's frame loop."""
        src = self._src
        head = self._head(4, "file header")
        if head.startswith(_GZIP_MAGIC):
            src.start_gzip()
            self.info.compressed = True
            head = self._head(4, "file header")
        magic = head[:4]
        if magic in _PCAP_MAGICS:
            return self._start_pcap(magic)
        if struct.unpack_from(">I", magic)[0] == _PCAPNG_SHB:
            self.info.format = "pcapng"
            if _shb_byte_order(self._head(12, "pcapng section header"), 0) is None:
                raise CaptureError(f"pcapng section header with a bad byte-order magic: "
                                   f"{self._name()}")
            self._ng = _PcapngBlocks(self)
            return self._pcapng_frames()
        raise CaptureError(f"not a pcap or pcapng file: {self._name()} "
                           f"(starts with {_describe_start(head)})")

    def _start_pcap(self, magic: bytes) -> Iterator[Frame]:
        endian, nano, extra = _PCAP_MAGICS[magic]
        head = self._head(24, "pcap file header")
        snaplen, network = struct.unpack_from(endian + "II", head, 16)
        linktype = network & 0x03FFFFFF  # upper bits may carry the FCS length
        self.info.linktypes.append(linktype)
        self.info.snaplen = snaplen or None
        self._pcap = (endian, nano, extra, linktype, snaplen)
        return self._pcap_frames(endian, nano, extra, linktype, snaplen)

    def batches(self, fast: FastPath | None) -> Iterator[Batch] | None:
        """The frames as batches read by the C reader, which also decodes the common
        Ethernet/IPv4/TCP frames (see ``packets.Decoder.fast_path``): each batch is
        (items, number of its last frame, that frame's time, frames decoded in C), an
        item a Segment or a Frame left to decode.  None when that reader cannot be
        used (no C module, or batches already taken): iterate the reader instead."""
        if fast is None or self._batched:
            return None
        if self._pcap is not None:
            self._batched = True
            return self._pcap_batches(fast, *self._pcap)
        if self._ng is not None:
            self._batched = True
            return self._pcapng_batches(fast)
        return None

    def _pcap_batches(self, fast: FastPath, endian: str, nano: bool, extra: int,
                      linktype: int, snaplen: int) -> Iterator[Batch]:
        """``_pcap_frames`` with the record loop in C: the same frames, cuts and notes."""
        src, info = self._src, self.info
        batch, ctx = fast[0].pcap_batch, fast[1]
        fmt = (endian == ">", nano, extra, linktype, _record_limit(snaplen), Frame)
        hlen = 16 + extra
        pos, n = 24, 0
        while True:
            before = n
            items, pos, n, first, last, t, decoded, stop, need = batch(
                src.buf, pos, n, info.first, info.last, fmt, ctx)
            if n != before:
                info.packets, info.first, info.last = n, first, last
                yield items, n, t, decoded
            if stop == _STOP_BOUNDARY:
                continue
            if stop == _STOP_OVERSIZE:
                self._stop(_oversized_record(n, need))
                break
            got = src.ensure(pos, need)
            pos, end = 0, len(src.buf)
            if got is None:
                if need > hlen:
                    self._stop(_cut_record(n, end - hlen, need - hlen))
                elif end:
                    self._stop(_cut_record_header(n, end, hlen))
                break
        self._finish()

    def _pcap_frames(self, endian: str, nano: bool, extra: int, linktype: int,
                     snaplen: int) -> Iterator[Frame]:
        """The classic pcap record loop; kept flat and local-variable heavy for speed."""
        src, info = self._src, self.info
        unpack = struct.Struct(endian + "IIII").unpack_from
        hlen = 16 + extra
        div = 1e9 if nano else 1e6
        limit = _record_limit(snaplen)
        buf, pos, end = src.buf, 24, len(src.buf)
        n, first, last = 0, None, None
        while True:
            if end - pos < hlen:
                got = src.ensure(pos, hlen)
                buf, pos, end = src.buf, 0, len(src.buf)
                if got is None:
                    if end:
                        self._stop(_cut_record_header(n, end, hlen))
                    break
            sec, frac, caplen, origlen = unpack(buf, pos)
            if caplen > limit:
                self._stop(_oversized_record(n, caplen))
                break
            start = pos + hlen
            stop = start + caplen
            if stop > end:
                got = src.ensure(pos, hlen + caplen)
                buf, pos, end = src.buf, 0, len(src.buf)
                start, stop = hlen, hlen + caplen
                if got is None:
                    self._stop(_cut_record(n, end - hlen, caplen))
                    break
            n += 1
            t = sec + frac / div
            if first is None:
                first = last = info.first = info.last = t
            elif t > last:
                last = info.last = t
            elif t < first:
                first = info.first = t
            info.packets = n
            yield Frame(n, t, linktype, caplen, origlen, buf[start:stop])
            pos = stop
        self._finish()

    def _pcapng_frames(self) -> Iterator[Frame]:
        """The pcapng block loop in Python: ``_PcapngBlocks.block`` reads each block."""
        assert self._ng is not None
        block = self._ng.block
        while (frame := block()) is not _DONE:
            if frame is not None:
                yield frame
        self._finish()

    def _pcapng_batches(self, fast: FastPath) -> Iterator[Batch]:
        """``_pcapng_frames`` with the enhanced packet blocks read in C, which hands every
        other block (and any it doubts) to ``_PcapngBlocks.block``: one implementation of
        the format's rules and notes.  A batch ends where C stopped -- at the latest after
        a frame numbered a multiple of the boundary -- and before Python reads a block,
        which may wait for input; a frame Python read at the boundary is a batch."""
        assert self._ng is not None
        ng, src, info = self._ng, self._src, self.info
        batch, ctx = fast[0].pcapng_batch, fast[1]
        boundary = ctx[2]
        items: list[Any] = []
        sent = 0
        while True:
            items, ng.pos, ng.n, info.first, info.last, ng.t, decoded, stop, need = (
                batch(src.buf, items, ng.pos, ng.n, info.first, info.last, ng.t,
                              ng.c_format, ctx))
            info.packets = ng.n
            if ng.n != sent:
                yield items, ng.n, ng.t, decoded
                items, sent = [], ng.n
            if stop == _STOP_BOUNDARY:
                continue
            if stop == _STOP_NEED:
                more = src.ensure(ng.pos, need)
                ng.pos = 0
                if more is not None:
                    continue
            frame = ng.block()
            if frame is _DONE:
                break
            if frame is not None:
                items.append(frame)
                if boundary and ng.n % boundary == 0:
                    yield items, ng.n, ng.t, 0
                    items, sent = [], ng.n
        self._finish()

    def _note_interface(self, linktype: int, snaplen: int) -> None:
        info = self.info
        if linktype not in info.linktypes:
            info.linktypes.append(linktype)
        if snaplen and (info.snaplen is None or snaplen < info.snaplen):
            info.snaplen = snaplen

    def _stop(self, problem: str) -> None:
        if self.info.problem is None:
            self.info.problem = problem

    def _finish(self) -> None:
        """At the end of the frames: surface damage the gzip layer found."""
        if self._src.problem:
            note = self._src.problem
            self.info.problem = f"{self.info.problem} ({note})" if self.info.problem else note

    def __iter__(self) -> Iterator[Frame]:
        # the generator itself: saves a Python-level __next__ call per frame
        return self._frames

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Close the file; stdin is left open because it belongs to the process."""
        if self._stream is not sys.stdin.buffer:
            self._stream.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DSB_TLS_KEY_LOG = 0x544C534B  # "TLSK": an NSS key log in a decryption secrets block
_DONE: Any = object()  # _PcapngBlocks.block: no more frames (the end, or damage noted)


class _PcapngBlocks:
    """A pcapng file's reading state between blocks -- the section's byte order and
    interfaces, the frame count, the last frame's time -- and the reading of one block.

    Why a class: the Python block loop (``CaptureReader._pcapng_frames``) and the C one
    (``_pcapng_batches``, which hands every block but a sound enhanced packet block back
    here, one at a time) must share every pcapng rule and every damage note; keeping
    them in one place is how they stay the same."""

    __slots__ = ("_reader", "_src", "_info", "pos", "n", "t", "ifaces", "c_format",
                 "_c_ifaces", "_head8", "_epb", "_pb", "_u32", "_order")

    def __init__(self, reader: CaptureReader) -> None:
        self._reader, self._src, self._info = reader, reader._src, reader.info
        self.pos = 0  # of the next block in ``_src.buf``
        self.n = 0  # frames read
        self.t = 0.0  # the last frame's time (a simple packet block has none of its own)
        self.ifaces: list[tuple[int, int, int, int]] = []  # (linktype, div, offset, snaplen)
        self._c_ifaces = bytearray()  # the same, packed for the C reader by _c_interface
        # the section as _fastpcap.pcapng_batch takes it (no interfaces: C reads nothing)
        self.c_format: tuple = (False, self._c_ifaces, _MAX_RECORD, Frame)
        self._head8: Callable[[bytes, int], tuple[int, ...]] | None = None
        self._epb = self._pb = self._u32 = self._head8
        self._order = "<"

    def block(self) -> Frame | None:
        """Read the block at ``pos`` and move past it: a Frame for a packet block, None
        for any other block, _DONE at the end of the data or at damage (noted)."""
        src, pos = self._src, self.pos
        buf = src.buf
        if len(buf) - pos < 12:
            buf, pos = src.ensure(pos, 12), 0
            if buf is None:
                return self._cut(f"block header cut after {len(src.buf)} bytes") \
                    if src.buf else _DONE
        if buf[pos:pos + 4] == _PCAPNG_SHB_BYTES:
            if not self._section(buf, pos):
                return self._cut("section header with a bad byte-order magic")
        elif self._head8 is None:
            self._reader._stop("pcapng data before the first section header")
            return _DONE
        btype, blen = self._head8(buf, pos)
        if blen < 12 or blen % 4 or blen > _MAX_RECORD:
            return self._cut(f"block at byte {src.base + pos:,} says {blen:,} bytes")
        if len(buf) - pos < blen:
            buf, pos = src.ensure(pos, blen), 0
            if buf is None:
                return self._cut(f"block cut after {len(src.buf)} of {blen} bytes")
        if self._u32(buf, pos + blen - 4)[0] != blen:
            return self._cut(f"block at byte {src.base + pos:,} has mismatched lengths")
        self.pos = pos + blen
        if btype == 6 or btype == 2:  # enhanced packet / obsolete packet
            return self._packet(buf, pos, btype, blen)
        if btype == 3:
            return self._simple_packet(buf, pos, blen)
        if btype == 1:
            return self._interface(buf, pos, blen)
        if btype == 10:
            self._secrets(buf, pos, blen)
        return None

    def _cut(self, what: str) -> Any:
        self._reader._stop(_cut_problem(self.n + 1, what))
        return _DONE

    def _section(self, buf: bytes, pos: int) -> bool:
        """A section header: its byte order, and no interfaces yet.  False: a bad magic."""
        order = _shb_byte_order(buf, pos)
        if order is None:
            return False
        self._order = order
        self._head8 = struct.Struct(order + "II").unpack_from
        self._epb = struct.Struct(order + "IIIII").unpack_from
        self._pb = struct.Struct(order + "HHIIII").unpack_from
        self._u32 = struct.Struct(order + "I").unpack_from
        self.ifaces = []
        self._c_ifaces = bytearray()  # grows in place: c_format holds it
        self.c_format = (order == ">", self._c_ifaces, _MAX_RECORD, Frame)
        return True

    def _interface(self, buf: bytes, pos: int, blen: int) -> Any:
        """An interface description: one more interface of this section."""
        iface = _parse_idb(buf, pos, blen, self._order)
        if iface is None:
            return self._cut("interface description block too short")
        self.ifaces.append(iface)
        self._c_ifaces += _c_interface(*iface[:3])
        self._reader._note_interface(iface[0], iface[3])
        return None

    def _secrets(self, buf: bytes, pos: int, blen: int) -> None:
        """A decryption secrets block: TLS key-log lines are counted (tshark decrypts with
        them; the report says so), other kinds of secret (SSH, WireGuard) are not ours."""
        if blen < 20:
            return
        kind, length = self._head8(buf, pos + 8)  # type: ignore[misc]
        if kind == _DSB_TLS_KEY_LOG:
            data = buf[pos + 16:pos + 16 + min(length, blen - 20)]
            self._info.tls_keys += sum(1 for line in data.splitlines()
                                       if line.strip() and not line.startswith(b"#"))

    def _packet(self, buf: bytes, pos: int, btype: int, blen: int) -> Frame | None:
        """An enhanced (6) or obsolete (2) packet block: a frame with its own time."""
        if blen < 32:
            return self._cut(("enhanced packet block" if btype == 6 else "packet block")
                             + " too short")
        if btype == 6:
            iface, tsh, tsl, caplen, origlen = self._epb(buf, pos + 8)
        else:
            iface, _drops, tsh, tsl, caplen, origlen = self._pb(buf, pos + 8)
        data = pos + 28
        if iface >= len(self.ifaces):
            return self._cut(f"packet block names interface {iface}, "
                             f"but only {len(self.ifaces)} are described")
        if data + caplen > pos + blen - 4:
            return self._cut(f"packet block says {caplen:,} bytes, "
                             f"holds {pos + blen - 4 - data:,}")
        linktype, div, offset, _snap = self.ifaces[iface]
        # an int / int rounds once; _fastpcap.ticks_time computes the same float
        return self._frame(((tsh << 32) | tsl) / div + offset, linktype, caplen, origlen,
                           buf, data)

    def _simple_packet(self, buf: bytes, pos: int, blen: int) -> Frame | None:
        """A simple packet block: interface 0, no time of its own (the previous frame's)."""
        if not self.ifaces or blen < 16:
            return self._cut("simple packet block before any interface or too short")
        origlen = self._u32(buf, pos + 8)[0]
        linktype, _div, _offset, snap = self.ifaces[0]
        data = pos + 12
        caplen = min(origlen, pos + blen - 4 - data, snap or origlen)
        return self._frame(self.t, linktype, caplen, origlen, buf, data)

    def _frame(self, t: float, linktype: int, caplen: int, origlen: int, buf: bytes,
               data: int) -> Frame:
        """One more frame: counted, and the capture's earliest and latest times kept."""
        self.n = n = self.n + 1
        self.t = t
        info = self._info
        if info.first is None or info.last is None:
            info.first = info.last = t
        elif t > info.last:
            info.last = t
        elif t < info.first:
            info.first = t
        info.packets = n
        return Frame(n, t, linktype, caplen, origlen, buf[data:data + caplen])


def _c_interface(linktype: int, div: int, offset: int) -> bytes:
    """An interface as _fastpcap.pcapng_batch takes it (its struct Iface): the time
    divisor as a shift when it is a power of two, as an integer when below 2**63 (C
    divides those exactly as Python does), else -2: frames whose times Python computes."""
    if div & (div - 1) == 0:
        shift, div = div.bit_length() - 1, 0
    elif div < 1 << 63:
        shift = -1
    else:
        shift, div = -2, 0
    return struct.pack("=iiQq", linktype, shift, div, offset)


def _shb_byte_order(buf: bytes, pos: int) -> str | None:
    """The byte order of a section, from its byte-order magic at offset 8."""
    if struct.unpack_from("<I", buf, pos + 8)[0] == _PCAPNG_BOM:
        return "<"
    if struct.unpack_from(">I", buf, pos + 8)[0] == _PCAPNG_BOM:
        return ">"
    return None


def _parse_idb(buf: bytes, pos: int, blen: int,
               order: str) -> tuple[int, int, int, int] | None:
    """(linktype, timestamp divisor, timestamp offset s, snaplen) of an interface block.

    The divisor stays an int (10**n or 2**n) so that ticks / divisor rounds once."""
    if blen < 20:
        return None
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
    div, offset = 1_000_000, 0
    opt, stop = pos + 16, pos + blen - 4
    while opt + 4 <= stop:
        code, length = struct.unpack_from(order + "HH", buf, opt)
        value = opt + 4
        if code == 0 or value + length > stop:
            break
        if code == 9 and length >= 1:  # if_tsresol
            res = buf[value]
            div = 2 ** (res & 0x7F) if res & 0x80 else 10**res
        elif code == 14 and length >= 8:  # if_tsoffset, seconds
            offset = struct.unpack_from(order + "q", buf, value)[0]
        opt = value + (length + 3) // 4 * 4
    return linktype, div, offset, snaplen


def open_capture(path: str) -> CaptureReader:
    """Open a pcap/pcapng capture, gzip-compressed or not; "-" reads standard input.

    The header is read now so that a file that is not a capture fails here, with a
    CaptureError, before the caller starts a report."""
    return CaptureReader(path, _open_stream(path))
