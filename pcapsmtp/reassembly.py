"""TCP reassembly per direction, keeping where every byte came from.

INTERFACE (implemented by the reassembly work):

    conn = Connection(client=("192.0.2.1", 40000), server=("198.51.100.2", 25))
    for ev in conn.add(segment): ...     # segment: packets.Segment of either direction
    for ev in conn.finish(): ...         # end of capture: flush, report what is missing
    conn.stats                           # per-direction counters

Direction is "C" (client to server) or "S" (server to client).  Stream offsets
count payload bytes from the first byte after the SYN (ISN + 1); when the SYN
was not captured, from the first byte seen in that direction.

Events come out in capture order.  A ``Data`` event is the next contiguous
bytes of one direction: its offset is always exactly where the previous Data
or Gap of that direction ended.  Every Data carries the frame and time of the
segment the bytes came from; a segment delivered late (out of order) keeps its
own frame number.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Data:
    direction: str
    offset: int
    data: bytes
    frame: int
    time: float


@dataclass(slots=True)
class Gap:
    """Bytes that the stream must contain but the capture never saw."""

    direction: str
    offset: int
    length: int
    frame: int  # the frame that revealed the gap (ACK beyond, later data, FIN, or end)
    time: float
    reason: str  # "acked-unseen", "out-of-order-flush", "end-of-capture", "snaplen"


@dataclass(slots=True)
class Flag:
    """Every SYN, SYN-ACK, FIN or RST segment as seen on the wire."""

    direction: str
    kind: str  # "SYN", "SYN-ACK", "FIN", "RST"
    frame: int
    time: float
    offset: int  # stream offset at which it sits (FIN: after the last byte)
    repeat: bool = False  # the same flag sent again by that direction (a retry)


@dataclass(slots=True)
class Retransmission:
    direction: str
    frame: int
    time: float
    offset: int
    length: int
    original_frame: int | None  # frame that first carried these bytes, when still known


@dataclass(slots=True)
class Overlap:
    """A retransmitted or overlapping segment whose bytes DIFFER from the first copy.

    First data wins for the stream; this event keeps the evidence.
    """

    direction: str
    frame: int
    time: float
    offset: int
    first: bytes  # what the stream holds
    second: bytes  # what the later segment carried for the same offsets
    first_frame: int | None


@dataclass
class DirectionStats:
    segments: int = 0
    bytes: int = 0
    retransmissions: int = 0
    out_of_order: int = 0
    overlaps_differing: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    keepalives: int = 0
    zero_windows: int = 0
    window_probes: int = 0
    syn_retries: int = 0  # SYNs (or SYN-ACKs) sent again


@dataclass
class ConnectionStats:
    C: DirectionStats = field(default_factory=DirectionStats)
    S: DirectionStats = field(default_factory=DirectionStats)


StreamEvent = Data | Gap | Flag | Retransmission | Overlap
