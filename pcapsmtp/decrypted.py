"""Captures of decrypted traffic: plaintext SMTP both ways where TLS should have begun.

A TLS-inspecting device (or a decrypting export) writes the dialogue inside TLS as if
it had been plaintext: after STARTTLS's 220 the client says EHLO again and the server
answers, in the clear.  Real TLS ends cannot do that, so when both directions do it
the session builder (dissect.py) reads the rest as the decrypted dialogue, as the
key-log engine reads what tshark decrypts.  This module only watches and decides.
"""

from __future__ import annotations

import re


class PlainAfterTls:
    """Watches both directions from where TLS should start after STARTTLS's 220, for
    plaintext SMTP both ways instead (a capture of decrypted traffic).  Keeps each
    direction's first bytes (at most RAW_KEEP, contiguous) until both have turned out
    not to be TLS; gives up on a gap or when they run long."""

    RAW_KEEP = 8192

    def __init__(self) -> None:
        self.start: dict[str, int] = {}
        self.raw: dict[str, bytearray] = {}
        self.failed: set[str] = set()
        self.plain: set[str] = set()

    def begin(self, d: str, at: int, pending: bytes | None) -> None:
        self.start[d] = at
        self.raw[d] = bytearray()
        if pending is None:  # bytes after a hole: nothing contiguous to keep
            self._fail(d)
        elif pending:
            self.data(d, at, pending)

    def data(self, d: str, offset: int, data: bytes) -> None:
        raw = self.raw.get(d)
        if raw is None or d in self.failed:
            return
        if offset != self.start[d] + len(raw) or len(raw) + len(data) > self.RAW_KEEP \
                or (not raw and data[:1] in _TLS_FIRST):
            self._fail(d)  # a hole, too long, or a TLS record: no plaintext to find here
            return
        raw += data

    @property
    def done(self) -> bool:
        """Both directions decided against plaintext: nothing left to watch."""
        return len(self.failed) == 2

    def _fail(self, d: str) -> None:
        self.failed.add(d)
        self.raw[d] = bytearray()  # not kept for the rest of the session

    def not_tls(self, d: str, at: int) -> bool:
        """The TLS parser found no TLS at ``at``: True once both sides are plaintext SMTP
        from their TLS start (a command from the client, a reply from the server)."""
        if d in self.failed or at != self.start.get(d):
            return False
        line = bytes(self.raw[d][:64])
        looks = (_COMMAND_LINE.match(line) if d == "C" else _REPLY_LINE.match(line))
        if looks is None:
            self._fail(d)
            return False
        self.plain.add(d)
        return self.plain == {"C", "S"}


# First bytes of a TLS record (change_cipher_spec .. heartbeat) or an SSLv2 hello.
_TLS_FIRST = frozenset(bytes([b]) for b in (0x14, 0x15, 0x16, 0x17, 0x18, 0x80))
_COMMAND_LINE = re.compile(rb"(?i)(EHLO|HELO|MAIL FROM:|RCPT TO:|RSET|NOOP|QUIT|AUTH)[ \r\n]")
_REPLY_LINE = re.compile(rb"[2-5]\d\d[ -]")
