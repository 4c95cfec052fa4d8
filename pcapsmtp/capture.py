"""Capture sources: pcap, pcapng, gzip, stdin.  Raw frames out, nothing decoded.

INTERFACE (implemented by the capture-sources work):

    reader = open_capture("x.pcap")      # or "-" for stdin, or a .gz file
    for frame in reader: ...             # Frame objects, in file order
    reader.info                          # CaptureInfo, complete after iteration
    reader.close()

Errors that stop reading before any frame (missing file, not a capture) raise
CaptureError with a one-line message.  A file cut or corrupted in the middle
does NOT raise: iteration stops and ``info.problem`` says what was cut, where.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    first: float | None = None
    last: float | None = None
    problem: str | None = None  # e.g. "file truncated in frame 1234 (record cut after 40 bytes)"
