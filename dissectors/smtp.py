"""SMTP dialogue as a sans-IO state machine (RFC 5321, 3030 BDAT, 3207 STARTTLS, 4954 AUTH).

INTERFACE (implemented by the SMTP dissector work):

    p = SmtpParser()
    events = p.receive("C", data, offset)   # client bytes; offset of data[0] in that stream
    events = p.receive("S", data, offset)   # server bytes
    events = p.gap("C", offset, length)     # bytes missing from the capture: resynchronise
    events = p.close("C")                   # that direction ended (FIN/RST/end of capture)

The caller feeds both directions in capture order.  The parser pairs replies
with commands (pipelining-aware) because meaning depends on the answer: bytes
after DATA are a body only once 354 came, bytes after STARTTLS are TLS only
once 220 came.  It never keeps a message body (it counts it) and never lets
an AUTH secret out: credentials are masked in every event it emits.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Command:
    direction: str  # always "C"
    start: int  # stream offset of the first byte of the line
    end: int  # offset just past the line terminator
    verb: str  # upper-cased: "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "AUTH", "STARTTLS", ...
    argument: str  # rest of the line, secrets masked ("AUTH PLAIN ****")
    text: str  # the line for display (masked, decoded with backslash escapes, no CRLF)
    known: bool = True  # False for a verb SMTP does not define (shown, not dropped)
    bare_lf: bool = False  # line ended in LF without CR
    eight_bit: bool = False  # line held bytes >= 0x80
    truncated: int = 0  # bytes of an over-long line not kept


@dataclass(slots=True)
class Reply:
    direction: str  # always "S"
    start: int
    end: int
    code: int | None  # None when the line has no 3-digit code
    enhanced: str | None  # "4.7.0" when the text starts with an enhanced status code
    lines: list[str]  # text of each line, without the code and separator
    text: str  # display form: "250-first / 250 last" style, first line + count for long ones
    answers: str | None  # verb of the command this reply answers; "CONNECT" for the greeting
    capabilities: list[str] = field(default_factory=list)  # EHLO keywords (upper-cased)
    malformed: bool = False  # a line that is not "NNN[ -]text"


@dataclass(slots=True)
class MessageBody:
    direction: str  # "C"
    start: int
    end: int  # just past the "." line (or where the body stopped being seen)
    size: int  # body bytes, terminator excluded
    complete: bool  # the end-of-data line was seen
    chunk: bool = False  # a BDAT chunk rather than a DATA body
    last: bool = False  # BDAT ... LAST


@dataclass(slots=True)
class Credentials:
    """A line of an AUTH exchange sent by the client; never carries its content."""

    direction: str
    start: int
    end: int
    length: int


@dataclass(slots=True)
class Unparsed:
    """Bytes that are not SMTP where SMTP was expected (shown, not dropped)."""

    direction: str
    start: int
    end: int
    reason: str  # "tls-record", "binary", "gap-resync", ...
    preview: str  # escaped, masked, at most 80 characters


@dataclass(slots=True)
class TlsStart:
    """From ``offset`` on, this direction carries TLS, not SMTP."""

    direction: str
    start: int  # == offset of the first TLS byte
    end: int  # == start
    pending: bytes  # bytes already received past ``start`` (to hand to the TLS parser)


SmtpEvent = Command | Reply | MessageBody | Credentials | Unparsed | TlsStart
